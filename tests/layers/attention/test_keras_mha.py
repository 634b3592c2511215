"""What the catalogue relies on in Keras' MultiHeadAttention beyond its public API
(nlpkit/layers/attention/keras_mha.py), pinned here, and the fused attention path of
`MultiHeadAttention`, checked against its explicit softmax path.
"""

import keras
import numpy as np
import pytest
from keras import ops

from nlpkit.layers.attention import MultiHeadAttention, keras_mha

rng = np.random.default_rng(3)
B, T, S, D, N, H = 2, 5, 7, 12, 3, 4


def _query_value():
    return rng.normal(size=(B, T, D)).astype("float32"), rng.normal(size=(B, S, D)).astype("float32")


class _Recording(MultiHeadAttention):
    def _build_attention(self, rank):
        self.built_rank = rank
        super()._build_attention(rank)

    def _compute_attention(self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs):
        self.seen = dict(query=query.shape, key=key.shape, value=value.shape, kwargs=kwargs,
                         mask=None if attention_mask is None else np.asarray(ops.convert_to_numpy(attention_mask)))
        return super()._compute_attention(query, key, value, attention_mask, training, return_attention_scores)


def test_call_hands_projected_heads_and_the_causal_mask_folded_in_to_compute_attention():
    layer = _Recording(num_heads=N, key_dim=H, value_dim=H + 1)
    query = rng.normal(size=(B, T, D)).astype("float32")
    padding = np.ones((B, 1, T), bool)
    padding[1, 0, 3:] = False
    layer(query, query, attention_mask=padding, use_causal_mask=True)
    assert layer.built_rank == 4
    assert tuple(layer.seen["query"]) == (B, T, N, H) and tuple(layer.seen["value"]) == (B, T, N, H + 1)
    # Keras gives a subclass no use_causal_mask: the lower triangle is already in the mask.
    assert layer.seen["kwargs"] == {}
    np.testing.assert_array_equal(layer.seen["mask"], np.tril(np.ones((T, T), bool))[None] & padding)


def test_equations_and_logit_scale_are_numpy_attention():
    layer = keras.layers.MultiHeadAttention(num_heads=N, key_dim=H)
    query, value = _query_value()
    output = np.asarray(layer(query, value))
    q = np.einsum("btd,dnh->btnh", query, np.asarray(layer.query_dense.kernel)) + np.asarray(layer.query_dense.bias)
    k = np.einsum("bsd,dnh->bsnh", value, np.asarray(layer.key_dense.kernel)) + np.asarray(layer.key_dense.bias)
    v = np.einsum("bsd,dnh->bsnh", value, np.asarray(layer.value_dense.kernel)) + np.asarray(layer.value_dense.bias)
    scores = np.asarray(ops.einsum(keras_mha.score_equation(layer), k, q * keras_mha.logit_scale(layer)))
    np.testing.assert_allclose(scores, np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H), rtol=1e-5, atol=1e-5)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    heads = np.asarray(ops.einsum(keras_mha.combine_equation(layer), probs, v))
    np.testing.assert_allclose(heads, np.einsum("bnts,bsnh->btnh", probs, v), rtol=1e-5, atol=1e-5)
    want = np.einsum("btnh,nhd->btd", heads, np.asarray(layer.output_dense.kernel)) + np.asarray(layer.output_dense.bias)
    np.testing.assert_allclose(output, want, rtol=1e-4, atol=1e-5)


def test_settings_read_from_the_layer():
    layer = keras.layers.MultiHeadAttention(
        num_heads=N, key_dim=H, dropout=0.25, output_shape=(6,), kernel_initializer="he_normal",
        bias_initializer="ones", kernel_regularizer="l2", use_gate=True,
    )
    query, value = _query_value()
    layer(query, value)
    assert isinstance(keras_mha.probability_dropout(layer), keras.layers.Dropout)
    assert keras_mha.probability_dropout(layer).rate == 0.25
    assert keras_mha.output_shape(layer) == (6,)
    assert isinstance(keras_mha.bias_initializer(layer), keras.initializers.Ones)
    initializer, regularizer, constraint = keras_mha.kernel_settings(layer)
    assert isinstance(initializer, keras.initializers.HeNormal) and isinstance(regularizer, keras.regularizers.L2)
    assert constraint is None
    assert isinstance(keras_mha.sublayer_kwargs(layer)["kernel_initializer"], keras.initializers.HeNormal)
    gate = keras_mha.gate_projection(layer)
    assert gate is not None and tuple(gate(query).shape) == (B, T, N, H)
    assert keras_mha.sliding_window(layer) is None
    plain = keras.layers.MultiHeadAttention(num_heads=N, key_dim=H, sliding_window=3)
    assert keras_mha.gate_projection(plain) is None and keras_mha.sliding_window(plain) == 3


class _OnesOutput(keras.layers.MultiHeadAttention):
    """Replaces the output projection in build, as ReuseMultiHeadAttention replaces its projections."""

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        self.made = keras_mha.make_output_dense(self, query_shape, "made")
        ones = keras.layers.EinsumDense(
            "btnh,nhd->btd", output_shape=(None, D), kernel_initializer="zeros", bias_axes="d", bias_initializer="ones"
        )
        ones.build((None, None, N, H))
        keras_mha.replace_projections(self, self.query_dense, self.key_dense, self.value_dense, ones)
        self.ones = ones


def test_replaced_projections_are_the_ones_call_uses():
    layer = _OnesOutput(num_heads=N, key_dim=H)
    query, value = _query_value()
    np.testing.assert_allclose(np.asarray(layer(query, value)), np.ones((B, T, D)))
    assert layer.output_dense is layer.ones
    assert isinstance(layer.made, keras.layers.EinsumDense)


# -- the fused path of MultiHeadAttention --------------------------------------------------


def _padding_with_an_empty_row():
    mask = rng.random(size=(B, T, S)) > 0.3
    mask[0, 2] = False  # a query with no allowed key: its output is 0 on both paths
    return mask


@pytest.mark.parametrize("mask_kind", ["dense", "key_padding"])
def test_fused_path_equals_the_explicit_softmax_path(mask_kind):
    layer = MultiHeadAttention(num_heads=N, key_dim=H, bias_initializer="zeros")
    query, value = _query_value()
    mask = _padding_with_an_empty_row() if mask_kind == "dense" else (rng.random(size=(B, S)) > 0.3)[:, None, :]
    fused = np.asarray(layer(query, value, attention_mask=mask))
    explicit, _ = layer(query, value, attention_mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(fused, np.asarray(explicit), rtol=1e-5, atol=1e-5)
    if mask_kind == "dense":
        np.testing.assert_allclose(fused[0, 2], 0.0, atol=1e-6)  # zero heads, zero bias


def test_fused_path_is_taken_only_without_scores_and_dropout(monkeypatch):
    calls = []
    real = keras.ops.dot_product_attention
    monkeypatch.setattr(keras.ops, "dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    query, value = _query_value()
    MultiHeadAttention(num_heads=N, key_dim=H)(query, value)
    assert len(calls) == 1
    MultiHeadAttention(num_heads=N, key_dim=H)(query, value, return_attention_scores=True)
    MultiHeadAttention(num_heads=N, key_dim=H, dropout=0.5)(query, value, training=True)
    assert len(calls) == 1
    MultiHeadAttention(num_heads=N, key_dim=H, dropout=0.5)(query, value, training=False)  # no dropout drawn
    assert len(calls) == 2
