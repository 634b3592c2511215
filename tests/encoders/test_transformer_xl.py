"""TransformerXLEncoder: output dict, padding invariance, memory across segments, saving, one training step."""

import keras
import numpy as np
import pytest

from nlpkit.encoders.transformer_xl import TransformerXLEncoder

SMALL = dict(vocab_size=50, num_layers=2, hidden_size=8, num_attention_heads=2, head_size=4, inner_size=16)
B, T = 2, 5


def _inputs(seed=0, length=T):
    ids = np.random.default_rng(seed).integers(1, SMALL["vocab_size"], (B, length)).astype("int32")
    types = np.zeros_like(ids)
    types[:, length // 2 :] = 1
    return dict(input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=types)


def _numpy(outputs):
    return keras.tree.map_structure(np.asarray, outputs)


def test_outputs_and_padding_invariance():
    encoder = TransformerXLEncoder(**SMALL, dropout_rate=0.0, attention_dropout_rate=0.0)
    inputs = _inputs()
    out = _numpy(encoder(inputs))
    assert out["sequence_output"].shape == (B, T, 8) and out["pooled_output"].shape == (B, 8)
    assert len(out["encoder_outputs"]) == 2 and "new_memories" not in out
    np.testing.assert_allclose(out["encoder_outputs"][-1], out["sequence_output"])
    padding_values = dict(input_word_ids=7, input_mask=0, input_type_ids=0)  # any word id: it is masked
    padded = {k: np.concatenate([v, np.full((B, 2), padding_values[k], "int32")], 1) for k, v in inputs.items()}
    padded_out = _numpy(encoder(padded))
    np.testing.assert_allclose(padded_out["pooled_output"], out["pooled_output"], atol=1e-5)
    np.testing.assert_allclose(padded_out["sequence_output"][:, :T], out["sequence_output"], atol=1e-5)


def test_memory_carries_context_between_segments():
    no_dropout = dict(dropout_rate=0.0, attention_dropout_rate=0.0)
    encoder = TransformerXLEncoder(**SMALL, mem_len=4, attention_type="uni", **no_dropout)
    whole = _inputs(length=6)
    whole["input_type_ids"][:] = 0  # memory counts as segment 0
    first = {k: v[:, :4] for k, v in whole.items()}
    second = {k: v[:, 4:] for k, v in whole.items()}
    memories = encoder(first)["new_memories"]
    assert tuple(memories.shape) == (B, 2, 4, 8)
    got = _numpy(encoder(second, memories=memories))["sequence_output"]
    want = _numpy(encoder(whole))["sequence_output"][:, 4:]  # causal: the same context
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_memory_mask_reaches_the_stack_and_comes_back():
    encoder = TransformerXLEncoder(**SMALL, mem_len=4, dropout_rate=0.0, attention_dropout_rate=0.0)
    first, second = _inputs(seed=1), _inputs(seed=2)
    memories = encoder(first)["new_memories"]
    hidden = np.zeros((B, 4), "float32")
    out = _numpy(encoder(second, memories=memories, memory_mask=hidden))
    np.testing.assert_allclose(out["sequence_output"], _numpy(encoder(second))["sequence_output"], atol=1e-5)
    np.testing.assert_array_equal(out["new_memory_mask"], np.concatenate([hidden, np.ones((B, T))], 1)[:, -4:] > 0)


def test_config_and_keras_round_trip(tmp_path):
    encoder = TransformerXLEncoder(**SMALL, mem_len=3, tie_attention_biases=False)
    assert TransformerXLEncoder.from_config(encoder.get_config()).get_config() == encoder.get_config()
    inputs = _inputs()
    want = _numpy(encoder(inputs, training=False))
    path = str(tmp_path / "xl.keras")
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    got = _numpy(loaded(inputs, training=False))
    for key in ("sequence_output", "pooled_output", "new_memories"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-6)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_one_training_step(policy):
    encoder = TransformerXLEncoder(**SMALL, dtype=policy)
    inputs = _inputs()
    ids = keras.Input((T,), dtype="int32")
    mask, types = keras.Input((T,), dtype="int32"), keras.Input((T,), dtype="int32")
    pooled = encoder(dict(input_word_ids=ids, input_mask=mask, input_type_ids=types))["pooled_output"]
    model = keras.Model([ids, mask, types], keras.layers.Dense(1)(keras.ops.cast(pooled, "float32")))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in encoder.trainable_weights]
    feed = [inputs["input_word_ids"], inputs["input_mask"], inputs["input_type_ids"]]
    history = model.fit(feed, np.ones((B, 1), "float32"), epochs=1, batch_size=B, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, np.array(w)) for b, w in zip(before, encoder.trainable_weights))
