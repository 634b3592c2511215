"""SelfAttentionMask and MaskedSoftmax against NumPy, through the shared layer harness."""

import keras
import numpy as np
import pytest

from nlpkit.layers.masks import MaskedSoftmax, SelfAttentionMask
from tests.layers.harness import check_layer

rng = np.random.default_rng(21)


def _masked_softmax(scores, mask, axes):
    """NumPy: softmax over `axes` of the allowed entries; masked entries and empty rows give 0."""
    allowed = np.broadcast_to(mask, scores.shape)
    exp = np.where(allowed, np.exp(scores - scores.max(axis=axes, keepdims=True)), 0.0)
    total = exp.sum(axis=axes, keepdims=True)
    return np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)


def test_self_attention_mask_broadcasts_the_padding_over_queries(tmp_path):
    # As in Model Garden: [B, T, ...] inputs and a [B, S] padding mask -> [B, T, S], T != S allowed.
    inputs = rng.normal(size=(2, 4, 8)).astype("float32")
    to_mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], "int32")
    out = check_layer(
        SelfAttentionMask, {}, args=[inputs, to_mask], tmp_path=tmp_path, expected_shapes=[(2, 4, 6)],
        expected_trainable=0,
        expected_non_trainable=0,
    )
    want = np.broadcast_to(to_mask[:, None, :], (2, 4, 6)).astype("float32")
    np.testing.assert_array_equal(np.asarray(out), want)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_self_attention_mask_has_the_compute_dtype_under_mixed_precision():
    inputs = rng.normal(size=(2, 3, 8)).astype("float32")
    out = SelfAttentionMask(dtype="mixed_bfloat16")(inputs, np.ones((2, 5), "int32"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert tuple(out.shape) == (2, 3, 5)


def test_masked_softmax_zero_on_masked_keys_and_on_fully_masked_rows(tmp_path):
    scores = rng.normal(size=(2, 3, 4, 5)).astype("float32") * 3.0  # [B, N, T, S]
    mask = (rng.random((2, 4, 5)) > 0.4).astype("float32")  # [B, T, S]
    mask[0, 1] = 0.0  # a query that may attend to nothing
    mask[1, 2] = 1.0
    out = check_layer(
        MaskedSoftmax, dict(mask_expansion_axes=[1]), args=[scores], kwargs=dict(mask=mask), tmp_path=tmp_path,
        expected_shapes=[scores.shape],
        expected_trainable=0,
        expected_non_trainable=0,
        float32_outputs=(0,),  # documented: float32 probabilities
    )
    out = np.asarray(out)
    np.testing.assert_allclose(out, _masked_softmax(scores, mask[:, None], axes=-1), atol=1e-6)
    assert np.all(out[np.broadcast_to(mask[:, None] == 0, out.shape)] == 0.0)  # exactly zero, not small
    assert np.all(out[0, :, 1] == 0.0)  # the fully masked row: zeros, no NaN, no uniform average
    np.testing.assert_allclose(out[1].sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("axes", [(2, 3), (3,), (-1,)])
def test_masked_softmax_normalization_axes(axes):
    scores = rng.normal(size=(2, 2, 3, 4)).astype("float32")
    mask = (rng.random((2, 3, 4)) > 0.3).astype("float32")
    out = np.asarray(MaskedSoftmax(mask_expansion_axes=[1], normalization_axes=axes)(scores, mask))
    np.testing.assert_allclose(out, _masked_softmax(scores, mask[:, None], axes=axes), atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=axes)[out.sum(axis=axes) > 0], 1.0, atol=1e-6)


def test_masked_softmax_without_mask_is_the_plain_softmax_in_float32():
    scores = rng.normal(size=(2, 4, 6)).astype("float32")
    out = MaskedSoftmax(dtype="mixed_float16")(scores.astype("float16"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    want = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(out), want / want.sum(-1, keepdims=True), atol=2e-3)
