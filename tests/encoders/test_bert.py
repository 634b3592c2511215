"""BertEncoder on tiny configs: equivalences between code paths, the NumPy reference, training."""

import keras
import numpy as np
import pytest

from nlpkit.encoders.bert import BertEncoder
from nlpkit.models.convert import bert_links
from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.registry import available_attentions
from tests.encoders import bert_reference as ref
from tests.encoders.training import train_one_step

TINY = dict(vocab_size=40, hidden_size=16, num_layers=2, num_attention_heads=2, inner_dim=24, max_sequence_length=16)
rng = np.random.default_rng(0)


def _inputs(batch=2, length=7, vocab=40):
    ids = rng.integers(1, vocab, size=(batch, length)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    ids[mask == 0] = 0
    type_ids = np.zeros_like(ids)
    type_ids[:, 3:] = 1
    return dict(input_word_ids=ids, input_mask=mask, input_type_ids=type_ids)


def _copy_weights(source, target, inputs):
    target(inputs)
    target.set_weights(source.get_weights())


def _np(outputs, key):
    return np.asarray(keras.ops.convert_to_numpy(outputs[key]))


def test_matches_numpy_reference_with_random_weights():
    encoder = BertEncoder(**TINY, output_dropout=0.0, attention_dropout=0.0)
    inputs = _inputs()
    outputs = encoder(inputs)
    tensors = {link.source: link.to_source(np.asarray(link.variable)) for link in bert_links(encoder)}
    want, want_pooled = ref.bert_forward(tensors, 2, inputs["input_word_ids"], inputs["input_mask"], inputs["input_type_ids"])
    real = inputs["input_mask"].astype(bool)
    np.testing.assert_allclose(_np(outputs, "sequence_output")[real], want[real], atol=1e-5)
    np.testing.assert_allclose(_np(outputs, "pooled_output"), want_pooled, atol=1e-5)


def test_output_shapes_and_symbolic_call():
    encoder = BertEncoder(**TINY)
    symbolic = {name: keras.Input((None,), dtype="int32", name=name) for name in _inputs()}
    outputs = encoder(symbolic)
    assert tuple(outputs["sequence_output"].shape) == (None, None, 16)
    assert tuple(outputs["pooled_output"].shape) == (None, 16)
    assert len(outputs["encoder_outputs"]) == 2
    eager = encoder(_inputs(length=5))
    assert _np(eager, "sequence_output").shape == (2, 5, 16)
    assert [np.asarray(x).shape for x in eager["encoder_outputs"]] == [(2, 5, 16)] * 2


def test_padding_invariance_of_pooled_output():
    encoder = BertEncoder(**TINY)
    inputs = _inputs(length=6)
    padded = {key: np.pad(value, ((0, 0), (0, 5))) for key, value in inputs.items()}
    padded["input_word_ids"][:, 6:] = 9  # junk behind a zero mask
    np.testing.assert_allclose(_np(encoder(padded), "pooled_output"), _np(encoder(inputs), "pooled_output"), atol=1e-5)


def test_output_range_equals_slicing():
    inputs = _inputs()
    full = BertEncoder(**TINY)
    ranged = BertEncoder(**TINY, output_range=1)
    full_out = full(inputs)
    _copy_weights(full, ranged, inputs)
    ranged_out = ranged(inputs)
    assert _np(ranged_out, "sequence_output").shape == (2, 1, 16)
    np.testing.assert_allclose(_np(ranged_out, "sequence_output"), _np(full_out, "sequence_output")[:, :1], atol=1e-5)
    np.testing.assert_allclose(_np(ranged_out, "pooled_output"), _np(full_out, "pooled_output"), atol=1e-5)


def test_too_long_inputs_raise_a_clear_error():
    encoder = BertEncoder(**TINY)
    with pytest.raises(NlpkitError, match="input length 17 exceeds max_sequence_length=16.*sliding_window"):
        encoder(_inputs(length=17))


def test_sliding_window_equals_the_windows_encoded_alone():
    config = {**TINY, "max_sequence_length": 8}
    inputs = _inputs(batch=2, length=12)
    inputs["input_mask"][:] = 1
    windowed = BertEncoder(**config, long_inputs="sliding_window")
    outputs = windowed(inputs)
    plain = BertEncoder(**config)
    _copy_weights(windowed, plain, {k: v[:, :8] for k, v in inputs.items()})
    sequence = _np(outputs, "sequence_output")
    assert sequence.shape == (2, 12, 16)
    # Windows start at 0 and 4; tokens 0-5 are closest to the first window's centre, 6-11 to the second's.
    first = plain({k: v[:, 0:8] for k, v in inputs.items()})
    second = plain({k: v[:, 4:12] for k, v in inputs.items()})
    np.testing.assert_allclose(sequence[:, :6], _np(first, "sequence_output")[:, :6], atol=1e-5)
    np.testing.assert_allclose(sequence[:, 6:], _np(second, "sequence_output")[:, 2:], atol=1e-5)
    np.testing.assert_allclose(_np(outputs, "pooled_output"), _np(first, "pooled_output"), atol=1e-5)


def test_factorised_embedding_width():
    encoder = BertEncoder(**TINY, embedding_width=8)
    outputs = encoder(_inputs())
    assert tuple(encoder.get_embedding_table().shape) == (40, 8)
    assert tuple(encoder.embedding_projection.kernel.shape) == (8, 16)
    assert _np(outputs, "sequence_output").shape == (2, 7, 16)


@pytest.mark.parametrize("attention_type", available_attentions())
def test_every_attention_of_the_catalogue_runs_inside(attention_type):
    encoder = BertEncoder(**{**TINY, "num_layers": 1}, attention_type=attention_type)
    outputs = encoder(_inputs(length=8))
    assert _np(outputs, "sequence_output").shape == (2, 8, 16)
    assert np.all(np.isfinite(_np(outputs, "sequence_output")))
    assert encoder.transformer_layers[0].attention_type == attention_type


def test_unknown_attention_is_a_clear_error():
    with pytest.raises(NlpkitError, match="unknown attention 'nope'"):
        BertEncoder(**TINY, attention_type="nope")(_inputs())


@pytest.mark.parametrize("norm_first", [False, True])
def test_mixed_bfloat16_close_to_float32(norm_first):
    inputs = _inputs()
    reference = BertEncoder(**TINY, norm_first=norm_first)
    want = _np(reference(inputs), "sequence_output")
    mixed = BertEncoder(**TINY, norm_first=norm_first, dtype="mixed_bfloat16")
    _copy_weights(reference, mixed, inputs)
    outputs = mixed(inputs)
    assert keras.backend.standardize_dtype(outputs["sequence_output"].dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(mixed.word_embeddings.embeddings.dtype) == "float32"  # variables stay float32
    got = _np(outputs, "sequence_output").astype("float32")
    np.testing.assert_allclose(got, want, atol=0.1)


@pytest.mark.parametrize("options", [{}, {"norm_first": True, "embedding_width": 8, "attention_type": "talking_heads"}])
def test_trains_one_step(options):
    train_one_step(BertEncoder(**TINY, **options), _inputs())


def test_config_round_trip():
    encoder = BertEncoder(**TINY, output_range=1, embedding_width=8, attention_type="talking_heads")
    rebuilt = BertEncoder.from_config(encoder.get_config())
    assert rebuilt.get_config() == encoder.get_config()
    with pytest.raises(NlpkitError, match="hidden_size=16 is not divisible by num_attention_heads=3"):
        BertEncoder(**{**TINY, "num_attention_heads": 3})
