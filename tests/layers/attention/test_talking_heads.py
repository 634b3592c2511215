import keras
import numpy as np

from nlpkit.layers.attention.registry import make_attention
from nlpkit.layers.attention.talking_heads import TalkingHeadsAttention
from tests.layers import reference
from tests.layers.harness import check_layer
from tests.layers.properties import assert_causal, attention_inputs

rng = np.random.default_rng(0)
B, T, S, D, N, H = 2, 5, 7, 16, 3, 4


def _inputs():
    return attention_inputs(rng, B, T, S, D)


def _talking_heads_reference(layer, query, value, mask):
    """NumPy: scores -> mix heads with P -> masked softmax -> mix heads with Q -> weighted values."""
    wq, bq, wk, bk, wv, bv, wo, bo = reference.mha_weights(layer)
    pre, post = np.asarray(layer.pre_softmax_weight), np.asarray(layer.post_softmax_weight)
    q, k, v = reference.dense(query, wq, bq), reference.dense(value, wk, bk), reference.dense(value, wv, bv)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)
    logits = np.einsum("bnts,nm->bmts", logits, pre)
    probs = reference.softmax(logits, mask[:, None])
    probs = np.einsum("bnts,nm->bmts", probs, post)
    out = np.einsum("btnh,nhd->btd", np.einsum("bnts,bsnh->btnh", probs, v), wo) + bo
    return out, probs


def test_contract(tmp_path):
    query, value, mask = _inputs()
    check_layer(
        TalkingHeadsAttention,
        dict(num_heads=N, key_dim=H, value_dim=3, dropout=0.1, use_bias=True, kernel_initializer="he_normal"),
        args=[query, value],
        kwargs=dict(attention_mask=mask.astype("float32")),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        expected_trainable=10,  # q/k/v/out kernels and biases, pre/post-softmax mixing
        expected_non_trainable=0,
    )


def test_matches_numpy_reference_with_explicit_head_mixing():
    query, value, mask = _inputs()
    layer = TalkingHeadsAttention(num_heads=N, key_dim=H)
    out, probs = layer(query, value, attention_mask=mask, return_attention_scores=True)
    want_out, want_probs = _talking_heads_reference(layer, query, value, mask)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)
    # The fully masked row gives zero attention and finite output.
    assert np.all(np.asarray(probs)[0, :, 1] == 0.0) and np.all(np.isfinite(np.asarray(out)))


def test_identity_mixing_is_plain_multi_head_attention():
    query, value, mask = _inputs()
    layer = TalkingHeadsAttention(num_heads=N, key_dim=H)
    layer(query, value)
    layer.pre_softmax_weight.assign(np.eye(N, dtype="float32"))
    layer.post_softmax_weight.assign(np.eye(N, dtype="float32"))
    want_out, _ = reference.multi_head_attention(query, value, *reference.mha_weights(layer), mask=mask)
    np.testing.assert_allclose(np.asarray(layer(query, value, attention_mask=mask)), want_out, atol=1e-5)


def test_padding_invariance_and_masked_keys_get_zero_probability():
    query, value, _ = _inputs()
    mask = np.broadcast_to((np.arange(S) < 5)[None, None, :], (B, T, S))
    layer = TalkingHeadsAttention(num_heads=N, key_dim=H)
    out, probs = layer(query, value, attention_mask=mask, return_attention_scores=True)
    changed = value.copy()
    changed[:, 5:] = rng.normal(size=changed[:, 5:].shape) * 100
    np.testing.assert_allclose(np.asarray(layer(query, changed, attention_mask=mask)), np.asarray(out), atol=1e-5)
    assert np.max(np.abs(np.asarray(probs)[..., 5:])) == 0.0


def test_causal_perturbing_later_tokens_leaves_earlier_outputs_unchanged():
    layer = TalkingHeadsAttention(num_heads=2, key_dim=4)
    x = rng.normal(size=(1, 6, 8)).astype("float32")
    assert_causal(lambda x: layer(x, x, use_causal_mask=True), x, first_changed=4)


def test_two_dimensional_attention_equals_attention_over_the_flattened_axes():
    # Attention over axes (2, 3) of [B, 5, 3, 4, D] is 1-D attention over the 12 flattened positions.
    x = rng.normal(size=(B, 5, 3, 4, 8)).astype("float32")
    layer_2d = TalkingHeadsAttention(num_heads=2, key_dim=4, attention_axes=(2, 3))
    out_2d = np.asarray(layer_2d(x, x))
    assert out_2d.shape == x.shape
    flat = x.reshape(B * 5, 12, 8)
    layer_1d = TalkingHeadsAttention(num_heads=2, key_dim=4)
    layer_1d(flat, flat)
    layer_1d.set_weights(layer_2d.get_weights())
    np.testing.assert_allclose(np.asarray(layer_1d(flat, flat)).reshape(x.shape), out_2d, atol=1e-5)


def test_registered_as_talking_heads():
    assert isinstance(make_attention("talking_heads", num_heads=2, key_dim=2), TalkingHeadsAttention)


def test_seed_document_constructor_and_example():
    layer = TalkingHeadsAttention(num_heads=2, key_dim=2, kernel_regularizer="l2", bias_constraint="non_neg")
    target, source = keras.Input(shape=[8, 16]), keras.Input(shape=[4, 16])
    output, scores = layer(target, source, return_attention_scores=True)
    assert tuple(output.shape) == (None, 8, 16) and tuple(scores.shape) == (None, 2, 8, 4)
