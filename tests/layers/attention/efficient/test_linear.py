"""LinearAttention and CausalLinearAttention against quadratic NumPy computations."""

import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient import CausalLinearAttention, LinearAttention, TriangularMask
from tests.layers.attention.efficient.heads_reference import elu_plus_one, heads, linear_attention_quadratic
from tests.layers.harness import check_layer

rng = np.random.default_rng(1)


def test_linear_contract_and_reference(tmp_path):
    q, k, v = heads(rng, s=6)
    lengths = np.array([6, 3], "int32")
    out = check_layer(
        LinearAttention, dict(query_dimensions=4), args=[q, k, v], kwargs=dict(key_lengths=lengths), tmp_path=tmp_path,
        expected_trainable=0,
        expected_non_trainable=0,
    )
    keys = (np.arange(6)[None] < lengths[:, None])[:, None, :]
    want = linear_attention_quadratic(elu_plus_one(q), elu_plus_one(k), v, np.broadcast_to(keys, (2, 7, 6)))
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


@pytest.mark.parametrize("length, chunk", [(9, 4), (9, 3), (3, 8), (1, 4)])
def test_causal_linear_equals_linear_with_triangular_mask(length, chunk):
    q, k, v = heads(rng, t=length, s=length)
    out = CausalLinearAttention(chunk_size=chunk)(q, k, v, attn_mask=TriangularMask(length))
    want = linear_attention_quadratic(elu_plus_one(q), elu_plus_one(k), v, np.tril(np.ones((length, length)))[None])
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_causal_linear_contract_and_key_padding(tmp_path):
    q, k, v = heads(rng, t=6, s=6)
    lengths = np.array([6, 2], "int32")
    out = check_layer(
        CausalLinearAttention,
        dict(chunk_size=4, feature_map="relu"),
        args=[q, k, v],
        kwargs=dict(key_lengths=lengths),
        static_kwargs=dict(attn_mask=TriangularMask(6)),
        tmp_path=tmp_path,
        expected_trainable=0,
        expected_non_trainable=0,
    )
    mask = np.tril(np.ones((6, 6)))[None] * (np.arange(6)[None] < lengths[:, None])[:, None, :]
    want = linear_attention_quadratic(np.maximum(q, 0), np.maximum(k, 0), v, mask)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_pluggable_feature_map_layer():
    q, k, v = heads(rng)
    out = LinearAttention(feature_map=keras.layers.Activation("softplus"))(q, k, v)
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    np.testing.assert_allclose(np.asarray(out), linear_attention_quadratic(softplus(q), softplus(k), v), atol=1e-5)
    rebuilt = LinearAttention.from_config(LinearAttention(feature_map=keras.layers.Activation("softplus")).get_config())
    np.testing.assert_allclose(np.asarray(rebuilt(q, k, v)), np.asarray(out), atol=1e-6)


def test_masks_they_cannot_honour_are_refused():
    q, k, v = heads(rng)
    with pytest.raises(NlpkitError, match="cannot honour an arbitrary attention mask"):
        LinearAttention()(q, k, v, attn_mask=np.tril(np.ones((7, 7))))
    with pytest.raises(NlpkitError, match="lower-triangular"):
        CausalLinearAttention()(q, k, v)
    with pytest.raises(NlpkitError, match="lower-triangular"):  # zero above the diagonal is not enough
        CausalLinearAttention()(q, k, v, attn_mask=np.eye(7, dtype=bool))
    with pytest.raises(NlpkitError, match="unknown feature map"):
        LinearAttention(feature_map="nope")


def test_all_keys_padded_gives_zeros_not_nan():
    q, k, v = heads(rng)
    out = np.asarray(CausalLinearAttention(chunk_size=3)(q, k, v, attn_mask=TriangularMask(7), key_lengths=np.array([0, 7])))
    assert np.all(np.isfinite(out)) and np.all(out[0] == 0.0)


@pytest.mark.parametrize("feature_map", ["elu", "relu"])
def test_recurrent_causal_linear_decoding_equals_the_batch_call_step_by_step(feature_map):
    q, k, v = heads(rng, t=6, s=6)
    layer = CausalLinearAttention(feature_map=feature_map, chunk_size=4)
    want = np.asarray(layer(q, k, v, attn_mask=TriangularMask(6)))
    state, steps = None, []
    for t in range(6):  # decoding is one token at a time by nature
        out, state = layer.recurrent(q[:, t], k[:, t], v[:, t], state=state)
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.stack(steps, axis=1), want, atol=1e-5)
    phi = elu_plus_one if feature_map == "elu" else (lambda x: np.maximum(x, 0))
    np.testing.assert_allclose(np.asarray(state[1]), phi(k).sum(axis=1), atol=1e-5)
