"""AttentionLayer (projections) and FullAttention against NumPy."""

import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient import AttentionLayer, FullAttention, LengthMask, TriangularMask
from tests.layers.attention.efficient.heads_reference import full_attention, heads
from tests.layers.harness import check_layer
from tests.layers.reference import dense

rng = np.random.default_rng(0)


def test_full_attention_contract_and_reference(tmp_path):
    q, k, v = heads(rng)
    mask = rng.random((2, 7, 7)) > 0.3
    mask[0, 2] = False  # a fully masked query row
    out = check_layer(
        FullAttention,
        dict(softmax_temp=0.4, attention_dropout=0.1),
        args=[q, k, v],
        kwargs=dict(attn_mask=mask.astype("float32")),
        tmp_path=tmp_path,
        expected_shapes=[(2, 7, 2, 3)],
        expected_trainable=0,
        expected_non_trainable=0,
    )
    np.testing.assert_allclose(np.asarray(out), full_attention(q, k, v, mask, temp=0.4), atol=1e-5)
    assert np.all(np.asarray(out)[0, 2] == 0.0)


def test_full_attention_lengths_zero_padded_queries_and_drop_padded_keys():
    q, k, v = heads(rng)
    out = np.asarray(FullAttention()(q, k, v, query_lengths=LengthMask(np.array([7, 4])), key_lengths=np.array([5, 7])))
    keys = np.arange(7)[None, :] < np.array([[5], [7]])
    want = full_attention(q, k, v, keys[:, None, :])
    want[1, 4:] = 0.0
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_attention_layer_contract_and_projections(tmp_path):
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    y = rng.normal(size=(2, 5, 8)).astype("float32")
    lengths = np.array([5, 3], "int32")
    out = check_layer(
        AttentionLayer,
        dict(attention=FullAttention(), d_model=8, n_heads=2, d_keys=3, d_values=5),
        args=[x, y, y],
        kwargs=dict(key_lengths=lengths),
        tmp_path=tmp_path,
        expected_shapes=[(2, 6, 8)],
        expected_trainable=8,
        expected_non_trainable=0,
    )
    assert out.shape == (2, 6, 8)

    layer = AttentionLayer("full", d_model=8, n_heads=2, d_keys=3, d_values=5)
    out = np.asarray(layer(x, y, y, key_lengths=lengths))
    want = _attention_layer_reference(layer, x, y, (np.arange(5)[None] < lengths[:, None])[:, None, :])
    np.testing.assert_allclose(out, want, atol=1e-5)


def _attention_layer_reference(layer, x, y, mask):
    """NumPy: the layer's projections around full softmax attention under `mask` [B,T,S]."""
    weights = {p.name: np.asarray(p.kernel) for p in (layer.query_projection, layer.key_projection, layer.value_projection)}
    biases = {p.name: np.asarray(p.bias) for p in (layer.query_projection, layer.key_projection, layer.value_projection)}
    q = dense(x, weights["query_projection"], biases["query_projection"])
    k = dense(y, weights["key_projection"], biases["key_projection"])
    v = dense(y, weights["value_projection"], biases["value_projection"])
    context = full_attention(q, k, v, mask)
    return np.einsum("btnm,nmd->btd", context, np.asarray(layer.out_projection.kernel)) + np.asarray(layer.out_projection.bias)


def test_masks_passed_positionally_as_in_fast_transformers():
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    lengths = np.array([6, 4], "int32")
    layer = AttentionLayer("full", d_model=8, n_heads=2)
    masks = (TriangularMask(6), LengthMask(lengths, max_len=6), LengthMask(lengths, max_len=6))
    positional = np.asarray(layer(x, x, x, *masks))
    keyword = np.asarray(layer(x, x, x, attn_mask=masks[0], query_lengths=masks[1], key_lengths=masks[2]))
    np.testing.assert_array_equal(positional, keyword)
    real = np.arange(6)[None] < lengths[:, None]
    want = _attention_layer_reference(layer, x, x, np.tril(np.ones((6, 6), bool))[None] & real[:, None, :])
    want = np.where(real[:, :, None], want, np.asarray(layer.out_projection.bias))  # padded queries: zero context
    np.testing.assert_allclose(positional, want, atol=1e-5)
    # The inner attentions take them the same way.
    q, k, v = heads(rng, t=6, s=6)
    np.testing.assert_array_equal(
        np.asarray(FullAttention()(q, k, v, masks[0], None, masks[2])),
        np.asarray(FullAttention()(q, k, v, attn_mask=masks[0], key_lengths=masks[2])),
    )
    with pytest.raises(NlpkitError, match="attn_mask both"):
        layer(x, x, x, masks[0], attn_mask=masks[0])
