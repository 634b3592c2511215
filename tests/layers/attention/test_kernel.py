"""KernelAttention against NumPy: feature maps, FAVOR+ convergence, causality, fallbacks."""

import math

import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.kernel import KernelAttention
from tests.layers import reference
from tests.layers.attention.efficient.heads_reference import elu_plus_one, linear_attention_quadratic
from tests.layers.harness import check_layer

rng = np.random.default_rng(7)

NUMPY_MAPS = {
    "elu": elu_plus_one,
    "relu": lambda x: np.maximum(x, 0.0),
    "square": np.square,
    "identity": lambda x: x,
}


def _kernel_reference(layer, query, value, phi, mask=None, scale=None, eps=1e-6):
    """NumPy: projections, sqrt(scale) on q and k, phi, quadratic linear attention, output projection."""
    wq, bq, wk, bk, wv, bv, wo, bo = reference.mha_weights(layer)
    root = math.sqrt(scale if scale is not None else 1.0 / math.sqrt(wq.shape[-1]))
    q = reference.dense(query, wq, bq) * root
    k = reference.dense(value, wk, bk) * root
    v = reference.dense(value, wv, bv)
    context = linear_attention_quadratic(phi(q), phi(k), v, mask, eps=eps)
    return np.einsum("btnh,nhd->btd", context, wo) + bo


def test_contract(tmp_path):
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    padding = np.ones((2, 6), "float32")
    padding[1, 4:] = 0.0
    check_layer(
        KernelAttention,
        dict(num_heads=2, key_dim=4, feature_transform="exp", num_random_features=8, redraw=True, seed=3, begin_kernel=1),
        args=[x, x],
        kwargs=dict(attention_mask=padding),
        tmp_path=tmp_path,
        expected_shapes=[(2, 6, 16)],
        # q/k/v/out kernels and biases and the softmax head's own output projection (begin_kernel);
        # the random-feature projection is not trained
        expected_trainable=10,
        expected_non_trainable=1,
    )


@pytest.mark.parametrize("transform", sorted(NUMPY_MAPS))
def test_deterministic_feature_maps_match_numpy(transform):
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    padding = np.ones((2, 6), bool)
    padding[0, 3:] = False
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform=transform, scale=0.3)
    out = np.asarray(layer(x, x, attention_mask=padding))
    mask = np.broadcast_to(padding[:, None, :], (2, 6, 6))
    np.testing.assert_allclose(out, _kernel_reference(layer, x, x, NUMPY_MAPS[transform], mask, scale=0.3), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("transform", ["exp", "expplus"])
def test_random_features_approximate_softmax_better_as_features_grow(transform):
    # Tolerance: mean |error| / mean |softmax output| below 3% with 4,096 features (measured
    # about 1.3%), and the error falls at each 16x step in features (about 1/sqrt(m)).
    x = rng.normal(size=(2, 16, 16)).astype("float32") * 0.3
    errors = []
    for features in (16, 256, 4096):
        runs = []
        for seed in (0, 1):
            layer = KernelAttention(num_heads=2, key_dim=8, feature_transform=transform, num_random_features=features, seed=seed)
            out = np.asarray(layer(x, x))
            want, _ = reference.multi_head_attention(x, x, *reference.mha_weights(layer))
            runs.append(np.abs(out - want).mean() / np.abs(want).mean())
        errors.append(np.mean(runs))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.03, errors


@pytest.mark.parametrize("transform", ["exp", "elu"])
def test_causal_outputs_ignore_later_tokens(transform):
    x = rng.normal(size=(1, 10, 16)).astype("float32")
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform=transform, num_random_features=32, causal_chunk_length=3)
    out = np.asarray(layer(x, x, use_causal_mask=True))
    for t, k in ((3, 1), (6, 3)):
        changed = x.copy()
        changed[:, t + k] += 5.0
        again = np.asarray(layer(changed, changed, use_causal_mask=True))
        np.testing.assert_allclose(again[:, : t + 1], out[:, : t + 1], atol=1e-5)
        assert not np.allclose(again[:, t + k], out[:, t + k])


def test_causal_elu_matches_quadratic_reference():
    x = rng.normal(size=(2, 7, 16)).astype("float32")
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", causal_chunk_length=3)
    out = np.asarray(layer(x, x, use_causal_mask=True))
    np.testing.assert_allclose(out, _kernel_reference(layer, x, x, elu_plus_one, np.tril(np.ones((7, 7)))[None]), atol=1e-5)


def _exp_without_projection(x):
    """Model Garden's 'exp' with num_random_features=0: exp(x_h - |x|^2 / 2) per head coordinate."""
    return np.exp(x - 0.5 * np.sum(np.square(x), axis=-1, keepdims=True))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("transform", ["exp", *sorted(NUMPY_MAPS)])
def test_no_random_features_matches_numpy(transform, causal):
    x = rng.normal(size=(2, 7, 16)).astype("float32") * 2.0
    padding = np.ones((2, 7), bool)
    padding[1, 4:] = False
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform=transform, num_random_features=0, causal_chunk_length=3)
    out = np.asarray(layer(x, x, attention_mask=padding, use_causal_mask=causal))
    assert not layer.non_trainable_weights  # no projection matrix to draw or save
    mask = np.broadcast_to(padding[:, None, :], (2, 7, 7)) & (np.tril(np.ones((7, 7), bool)) if causal else True)
    phi, eps = (_exp_without_projection, 0.0) if transform == "exp" else (NUMPY_MAPS[transform], 1e-6)
    # rtol 1e-3: float32 prefix sums of the signed identity features against a float64 reference.
    np.testing.assert_allclose(out, _kernel_reference(layer, x, x, phi, mask, eps=eps), atol=1e-5, rtol=1e-3)


def test_expplus_refuses_causal_mode_and_zero_random_features():
    x = rng.normal(size=(1, 16, 16)).astype("float32")
    with pytest.raises(NlpkitError, match="expplus.*use_causal_mask"):
        KernelAttention(num_heads=2, key_dim=4, feature_transform="expplus", num_random_features=16)(x, x, use_causal_mask=True)
    with pytest.raises(NlpkitError, match="expplus.*num_random_features=0"):
        KernelAttention(num_heads=2, key_dim=4, feature_transform="expplus", num_random_features=0)
    with pytest.raises(NlpkitError, match="redraw"):
        KernelAttention(num_heads=2, key_dim=4, feature_transform="exp", num_random_features=0, redraw=True)
    with pytest.raises(NlpkitError, match="num_random_features=-1"):
        KernelAttention(num_heads=2, key_dim=4, num_random_features=-1)
    # Non-causal FAVOR++ stays available, and the exact softmax fallback may still be causal.
    KernelAttention(num_heads=2, key_dim=4, feature_transform="expplus", num_random_features=16)(x, x)
    short = KernelAttention(num_heads=2, key_dim=4, feature_transform="expplus", is_short_seq=True)
    short(x, x, use_causal_mask=True)


def test_short_sequence_fallback_and_softmax_prefix_are_exact_softmax():
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    short = KernelAttention(num_heads=2, key_dim=4, is_short_seq=True)
    out = np.asarray(short(x, x))
    want, _ = reference.multi_head_attention(x, x, *reference.mha_weights(short))
    np.testing.assert_allclose(out, want, atol=1e-5)

    prefix = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", begin_kernel=2)
    kernel_only = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu")
    out = np.asarray(prefix(x, x))
    kernel_only(x, x)
    kernel_only.set_weights(prefix.get_weights()[:8])  # all but the softmax part's output projection
    softmax_out = prefix.output_dense_softmax
    weights = reference.mha_weights(prefix)[:6] + [np.asarray(softmax_out.kernel), np.asarray(softmax_out.bias)]
    want, _ = reference.multi_head_attention(x, x, *weights)
    np.testing.assert_allclose(out[:, :2], want[:, :2], atol=1e-5)
    np.testing.assert_allclose(out[:, 2:], np.asarray(kernel_only(x, x))[:, 2:], atol=1e-5)


def test_features_fixed_at_inference_and_redrawn_in_training():
    x = rng.normal(size=(1, 5, 16)).astype("float32")
    layer = KernelAttention(num_heads=2, key_dim=4, num_random_features=8, redraw=True)
    np.testing.assert_array_equal(np.asarray(layer(x, x)), np.asarray(layer(x, x)))
    assert not np.allclose(np.asarray(layer(x, x, training=True)), np.asarray(layer(x, x, training=True)))
    fixed = KernelAttention(num_heads=2, key_dim=4, num_random_features=8)
    np.testing.assert_array_equal(np.asarray(fixed(x, x, training=True)), np.asarray(fixed(x, x, training=True)))


def test_scale_by_length_and_mixed_precision_accumulation():
    x = rng.normal(size=(1, 64, 16)).astype("float32")
    by_length = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", scale_by_length=True)
    out = np.asarray(by_length(x, x))
    explicit = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", scale=0.5 * math.log(64) / math.log(512))
    explicit(x, x)
    explicit.set_weights(by_length.get_weights())
    np.testing.assert_allclose(np.asarray(explicit(x, x)), out, atol=1e-6)

    half = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", dtype="mixed_bfloat16")
    half(x, x)
    half.set_weights(by_length.get_weights())
    full = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu")
    full(x, x)
    full.set_weights(by_length.get_weights())
    np.testing.assert_allclose(np.asarray(half(x, x)).astype("float32"), np.asarray(full(x, x)), atol=0.05)


def test_clear_errors():
    x = rng.normal(size=(1, 5, 16)).astype("float32")
    with pytest.raises(NlpkitError, match="feature_transform"):
        KernelAttention(num_heads=2, key_dim=4, feature_transform="cosine")
    with pytest.raises(NlpkitError, match="attention scores"):
        KernelAttention(num_heads=2, key_dim=4)(x, x, return_attention_scores=True)
    # general [B, T, S] masks are honoured (test_kernel_model_garden.py); other ranks are refused
    with pytest.raises(NlpkitError, match="attention_mask must be"):
        KernelAttention(num_heads=2, key_dim=4)(x, x, attention_mask=np.ones((1, 1, 5, 5)))
    assert keras.saving.get_registered_object("nlpkit>KernelAttention") is KernelAttention
