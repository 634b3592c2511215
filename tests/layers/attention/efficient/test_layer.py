"""AttentionLayer (projections) and FullAttention against NumPy."""

import numpy as np

from nlpkit.layers.attention.efficient import AttentionLayer, FullAttention, LengthMask
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
    )
    assert out.shape == (2, 6, 8)

    layer = AttentionLayer("full", d_model=8, n_heads=2, d_keys=3, d_values=5)
    out = np.asarray(layer(x, y, y, key_lengths=lengths))
    weights = {p.name: np.asarray(p.kernel) for p in (layer.query_projection, layer.key_projection, layer.value_projection)}
    biases = {p.name: np.asarray(p.bias) for p in (layer.query_projection, layer.key_projection, layer.value_projection)}
    q = dense(x, weights["query_projection"], biases["query_projection"])
    k = dense(y, weights["key_projection"], biases["key_projection"])
    v = dense(y, weights["value_projection"], biases["value_projection"])
    context = full_attention(q, k, v, (np.arange(5)[None] < lengths[:, None])[:, None, :])
    want = np.einsum("btnm,nmd->btd", context, np.asarray(layer.out_projection.kernel)) + np.asarray(layer.out_projection.bias)
    np.testing.assert_allclose(out, want, atol=1e-5)
