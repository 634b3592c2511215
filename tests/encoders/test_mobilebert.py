"""MobileBERT: the layer contract of its embedding and block, NumPy references, the encoder."""

import keras
import numpy as np
import pytest

from nlpkit.encoders.mobilebert import MobileBertEncoder
from nlpkit.errors import NlpkitError
from nlpkit.layers.blocks.mobilebert import MobileBertEmbedding, MobileBertTransformer, NoNorm
from tests.encoders.training import train_one_step
from tests.layers import reference
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)
BLOCK = dict(hidden_size=16, num_attention_heads=2, inner_dim=12, intra_bottleneck_size=8, num_feedforward_networks=2)
VARIANTS = {
    "key_query_shared": dict(key_query_shared_bottleneck=True),
    "bottleneck_attention": dict(use_bottleneck_attention=True, key_query_shared_bottleneck=False),
    "wide_attention_layer_norm": dict(key_query_shared_bottleneck=False, normalization_type="layer_norm"),
}
ENCODER = dict(
    vocab_size=30,
    embedding_width=6,
    max_sequence_length=10,
    num_layers=2,
    **{k: v for k, v in BLOCK.items()},
)


def _block_inputs(batch=2, length=5):
    x = rng.normal(size=(batch, length, 16)).astype("float32")
    mask = np.ones((batch, length, length), "float32")
    mask[1, :, 3:] = 0.0
    return x, mask


def _encoder_inputs(batch=2, length=6):
    ids = rng.integers(1, 30, size=(batch, length)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    ids[mask == 0] = 0
    return dict(input_word_ids=ids, input_mask=mask, input_type_ids=(np.arange(length) >= 3).astype("int32")[None].repeat(batch, 0))


def _norm(layer, x):
    gamma, beta = np.asarray(layer.gamma), np.asarray(layer.beta)
    if isinstance(layer, NoNorm):
        return x * gamma + beta
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def _dense(layer, x):
    return reference.dense(x, np.asarray(layer.kernel), np.asarray(layer.bias))


def _block_reference(layer, x, mask):
    """The MobileBERT block written out in NumPy from the layer's weights."""
    bottleneck = _norm(layer.bottleneck_input_norm, _dense(layer.bottleneck_input, x))
    if layer.use_bottleneck_attention:
        query_key, value = bottleneck, bottleneck
    elif layer.key_query_shared_bottleneck:
        query_key, value = _norm(layer.shared_query_key_norm, _dense(layer.shared_query_key, x)), x
    else:
        query_key, value = x, x
    attended, _ = reference.multi_head_attention(
        query_key, value, *reference.mha_weights(layer.attention), mask=mask, key=query_key
    )
    hidden = _norm(layer.attention_norm, attended + bottleneck)
    for inner, output, norm in zip(layer.ffn_inner, layer.ffn_output, layer.ffn_norm):
        hidden = _norm(norm, _dense(output, np.maximum(_dense(inner, hidden), 0.0)) + hidden)
    return _norm(layer.output_norm, _dense(layer.bottleneck_output, hidden) + x)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_block_contract(variant, tmp_path):
    x, mask = _block_inputs()
    check_layer(
        MobileBertTransformer,
        {**BLOCK, **VARIANTS[variant]},
        args=[x],
        kwargs=dict(attention_mask=mask),
        tmp_path=tmp_path,
        expected_shapes=[x.shape],
        # bottleneck in + norm (4), attention q/k/v/out (8) + norm (2), 2 FFNs x (inner, output, norm) (12),
        # bottleneck out + norm (4); the shared query/key bottleneck adds a dense and a norm (4)
        expected_trainable=34 if variant == "key_query_shared" else 30,
        expected_non_trainable=0,
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_block_matches_numpy_reference(variant):
    x, mask = _block_inputs()
    layer = MobileBertTransformer(**BLOCK, **VARIANTS[variant], output_dropout=0.0, attention_dropout=0.0)
    # Non-trivial norm weights, so a swapped or skipped norm shows.
    layer(x, attention_mask=mask)
    for weight in layer.weights:
        if weight.path.endswith(("gamma", "beta")):
            weight.assign(rng.normal(size=weight.shape).astype("float32") * 0.3 + (1.0 if weight.path.endswith("gamma") else 0.0))
    got = np.asarray(layer(x, attention_mask=mask))
    np.testing.assert_allclose(got, _block_reference(layer, x, mask), atol=1e-5)


def test_block_rejects_inconsistent_options():
    with pytest.raises(NlpkitError, match="intra_bottleneck_size=10 is not divisible by num_attention_heads=4"):
        MobileBertTransformer(intra_bottleneck_size=10, num_attention_heads=4)
    with pytest.raises(NlpkitError, match="exclude each other"):
        MobileBertTransformer(use_bottleneck_attention=True, key_query_shared_bottleneck=True)
    with pytest.raises(NlpkitError, match="unknown normalization_type 'batch_norm'"):
        MobileBertTransformer(normalization_type="batch_norm")


def test_embedding_contract(tmp_path):
    inputs = _encoder_inputs()
    check_layer(
        MobileBertEmbedding,
        dict(vocab_size=30, embedding_width=6, type_vocab_size=2, output_width=16, max_sequence_length=10),
        args=[inputs["input_word_ids"], inputs["input_type_ids"]],
        tmp_path=tmp_path,
        expected_shapes=[(2, 6, 16)],
        # word, type, position tables; projection kernel, bias; norm gamma, beta
        expected_trainable=7,
        expected_non_trainable=0,
    )


def test_embedding_matches_numpy_trigram_reference():
    inputs = _encoder_inputs()
    ids, type_ids = inputs["input_word_ids"], inputs["input_type_ids"]
    layer = MobileBertEmbedding(30, 6, 2, 16, max_sequence_length=10, normalization_type="layer_norm", dropout_rate=0.0)
    got = np.asarray(layer(ids, type_ids))
    words = np.asarray(layer.word_embedding.embeddings)[ids]  # [B, T, E]
    following = np.concatenate([words[:, 1:], np.zeros_like(words[:, :1])], axis=1)
    preceding = np.concatenate([np.zeros_like(words[:, :1]), words[:, :-1]], axis=1)
    trigram = np.concatenate([following, words, preceding], axis=-1)
    want = _dense(layer.projection, trigram)
    want = want + np.asarray(layer.position_embedding.position_embeddings)[:6] + np.asarray(layer.type_embedding.embeddings)[type_ids]
    np.testing.assert_allclose(got, _norm(layer.norm, want), atol=1e-5)


def test_no_norm_contract(tmp_path):
    x, _ = _block_inputs()
    check_layer(
        NoNorm, {}, args=[x], tmp_path=tmp_path, expected_shapes=[x.shape],
        expected_trainable=2,
        expected_non_trainable=0,
    )


def _copy_weights(source, target, inputs):
    target(inputs)
    target.set_weights(source.get_weights())


def test_encoder_outputs_output_range_and_padding_invariance():
    inputs = _encoder_inputs()
    full = MobileBertEncoder(**ENCODER, classifier_activation=True)
    outputs = full(inputs)
    assert np.asarray(outputs["sequence_output"]).shape == (2, 6, 16)
    assert [np.asarray(x).shape for x in outputs["encoder_outputs"]] == [(2, 6, 16)] * 2
    ranged = MobileBertEncoder(**ENCODER, classifier_activation=True, output_range=1)
    _copy_weights(full, ranged, inputs)
    ranged_outputs = ranged(inputs)
    np.testing.assert_allclose(
        np.asarray(ranged_outputs["sequence_output"]), np.asarray(outputs["sequence_output"])[:, :1], atol=1e-5
    )
    padded = {key: np.pad(value, ((0, 0), (0, 3))) for key, value in inputs.items()}
    padded["input_word_ids"][:, 6:] = 5
    np.testing.assert_allclose(
        np.asarray(full(padded)["pooled_output"]), np.asarray(outputs["pooled_output"]), atol=1e-5
    )


def test_encoder_pooled_output_is_the_first_token_without_classifier():
    outputs = MobileBertEncoder(**ENCODER)(_encoder_inputs())
    np.testing.assert_array_equal(np.asarray(outputs["pooled_output"]), np.asarray(outputs["sequence_output"])[:, 0])


def test_encoder_trains_one_step():
    # A wide initializer: with BERT's 0.02 the query/key gradients of this tiny model underflow
    # the float32 resolution of the weights, and the test could not tell them from "no gradient".
    # (Every block variant already trains one step in test_block_contract.)
    encoder = MobileBertEncoder(**ENCODER, classifier_activation=True, initializer_range=0.5)
    train_one_step(encoder, _encoder_inputs())


def test_encoder_mixed_precision_and_config_round_trip():
    encoder = MobileBertEncoder(**ENCODER, dtype="mixed_bfloat16")
    outputs = encoder(_encoder_inputs())
    assert keras.backend.standardize_dtype(outputs["sequence_output"].dtype) == "bfloat16"
    assert np.all(np.isfinite(np.asarray(outputs["sequence_output"]).astype("float32")))
    rebuilt = MobileBertEncoder.from_config(encoder.get_config())
    assert rebuilt.get_config() == encoder.get_config()
    with pytest.raises(NlpkitError, match="input length 11 exceeds max_sequence_length=10"):
        encoder(_encoder_inputs(length=11))
