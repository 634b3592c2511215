import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import make_attention
from nlpkit.layers.attention.reuse import ReuseMultiHeadAttention
from tests.layers import reference
from tests.layers.attention import reuse_reference
from tests.layers.harness import check_layer
from tests.layers.properties import assert_causal, attention_inputs

rng = np.random.default_rng(0)
B, T, S, D, N, H = 2, 5, 6, 8, 3, 4


def _inputs():
    query, value, mask = attention_inputs(rng, B, T, S, D)
    previous = reference.softmax(rng.normal(size=(B, N, T, S)), mask[:, None]).astype("float32")
    return query, value, mask, previous


@pytest.mark.parametrize("reuse_attention, reused", [(0, 0), (2, 2), (-1, N)])
def test_matches_numpy_reference(reuse_attention, reused):
    query, value, mask, previous = _inputs()
    previous = previous + 0.01  # not masked: the layer must mask the reused heads itself
    layer = ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=reuse_attention)
    out, probs = layer(query, value, attention_mask=mask, reuse_attention_scores=previous, return_attention_scores=True)
    want_out, want_probs = reuse_reference.reuse_attention(layer, query, value, mask, previous, reused)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)
    assert (layer.query_dense is None) == (reused == N)


def test_no_reuse_equals_multi_head_attention_with_the_same_weights():
    query, value, mask, _ = _inputs()
    reuse = ReuseMultiHeadAttention(num_heads=N, key_dim=H)
    plain = MultiHeadAttention(num_heads=N, key_dim=H)
    reuse(query, value)
    plain(query, value)
    plain.set_weights(reuse.get_weights())
    want = np.asarray(plain(query, value, attention_mask=mask))
    np.testing.assert_allclose(np.asarray(reuse(query, value, attention_mask=mask)), want, atol=1e-6)


def test_padding_invariance_and_masked_keys_get_zero_probability():
    query, value, _, previous = _inputs()
    mask = np.broadcast_to((np.arange(S) < 4)[None, None, :], (B, T, S))
    layer = ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=1)
    out, probs = layer(query, value, attention_mask=mask, reuse_attention_scores=previous, return_attention_scores=True)
    changed = value.copy()
    changed[:, 4:] = rng.normal(size=changed[:, 4:].shape) * 100
    out2 = layer(query, changed, attention_mask=mask, reuse_attention_scores=previous)
    np.testing.assert_allclose(np.asarray(out2), np.asarray(out), atol=1e-5)
    assert np.max(np.abs(np.asarray(probs)[..., 4:])) == 0.0


def test_causal_perturbing_later_tokens_leaves_earlier_outputs_unchanged():
    x = rng.normal(size=(B, T, D)).astype("float32")
    causal = np.tril(np.ones((T, T), bool))[None]
    first = ReuseMultiHeadAttention(num_heads=N, key_dim=H)
    second = ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=2)

    def forward(inputs):
        hidden, scores = first(inputs, inputs, attention_mask=causal, return_attention_scores=True)
        return second(hidden, hidden, attention_mask=causal, reuse_attention_scores=scores)

    assert_causal(forward, x, first_changed=3)


def test_registered_as_reuse():
    layer = make_attention("reuse", num_heads=N, key_dim=H, reuse_attention=1)
    assert isinstance(layer, ReuseMultiHeadAttention) and layer.reuse_attention == 1


def test_rejections():
    query, value, _, _ = _inputs()
    with pytest.raises(NlpkitError):
        ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=N + 1)
    with pytest.raises(NlpkitError):
        ReuseMultiHeadAttention(num_heads=N, key_dim=H, attention_axes=(1, 2))
    with pytest.raises(NlpkitError):
        ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=1)(query, value)
