"""KernelAttention's Model Garden options against NumPy: 'expmod', causal windowed attention, the
streaming cache, the begin_kernel softmax projection, general attention masks, config porting."""

import json
import math

import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.kernel import KernelAttention
from tests.layers import reference
from tests.layers.attention.efficient.heads_reference import elu_plus_one, linear_attention_quadratic
from tests.layers.harness import check_layer

rng = np.random.default_rng(11)
B, T, D = 2, 7, 16


def _x(length=T, scale=1.0):
    return (rng.normal(size=(B, length, D)) * scale).astype("float32")


def _heads(layer, x):
    """NumPy projected, sqrt(scale)-scaled q and k, and v `[B, L, N, H]`."""
    wq, bq, wk, bk, wv, bv, _, _ = reference.mha_weights(layer)
    root = math.sqrt(layer.scale if layer.scale is not None else 1.0 / math.sqrt(wq.shape[-1]))
    x = x.astype(np.float64)
    return reference.dense(x, wq, bq) * root, reference.dense(x, wk, bk) * root, reference.dense(x, wv, bv)


def _project_out(context, dense_layer):
    return np.einsum("btnh,nhd->btd", context, np.asarray(dense_layer.kernel)) + np.asarray(dense_layer.bias)


def _numpy_phi(layer):
    """The feature map of `layer` in NumPy, up to a constant factor (which cancels: eps is 0)."""
    if layer.feature_transform == "elu":
        return elu_plus_one, 1e-6
    w = None if layer.num_random_features == 0 else np.asarray(layer.projection_matrix, np.float64)

    def project(x):
        return x if w is None else np.einsum("blnh,mh->blnm", x, w)

    if layer.feature_transform == "expmod":
        return (lambda x: np.exp(project(x))), 0.0
    return (lambda x: np.exp(project(x) - 0.5 * np.sum(x * x, -1, keepdims=True))), 0.0  # 'exp' (FAVOR+)


def _kernel_reference(layer, x, weights=None):
    """Projections, phi, sum_s w_ts phi(q_t)·phi(k_s) v_s / sum_s w_ts phi(q_t)·phi(k_s), output projection."""
    q, k, v = _heads(layer, x)
    phi, eps = _numpy_phi(layer)
    context = linear_attention_quadratic(phi(q), phi(k), v, weights, eps=eps)
    return _project_out(context, layer.output_dense)


def window_mask_numpy(length, chunk, window, decay=None, padding=None):
    """`[L, L]` weights of Model Garden's windowed attention, built chunk by chunk from the
    (left- or right-) padded position list: query t in chunk j sees chunk j - d, d < window,
    with weight decay**d."""
    pad = -length % chunk
    positions = [None] * pad + list(range(length)) if padding == "left" else list(range(length)) + [None] * pad
    chunks = [positions[i : i + chunk] for i in range(0, len(positions), chunk)]
    weights = np.zeros((length, length))
    for j, queries in enumerate(chunks):
        for back in range(min(window, j + 1)):
            for t in queries:
                for s in chunks[j - back]:
                    if t is not None and s is not None:
                        weights[t, s] = 1.0 if decay is None else decay**back
    return weights


def test_numpy_window_mask_is_model_gardens_docstring_example():
    # Model Garden's causal_windowed_performer_attention docstring: T=9, chunk_length=3, window_length=2.
    rows = ["111000000"] * 3 + ["111111000"] * 3 + ["000111111"] * 3
    want = np.array([[int(c) for c in row] for row in rows], float)
    np.testing.assert_array_equal(window_mask_numpy(9, 3, 2), want)


@pytest.mark.parametrize("features", [16, 0])
@pytest.mark.parametrize("causal", [False, True])
def test_expmod_matches_numpy(features, causal):
    x = _x()
    padding = np.ones((B, T), bool)
    padding[1, 5:] = False
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform="expmod", num_random_features=features,
                            causal_chunk_length=3)
    out = np.asarray(layer(x, x, attention_mask=padding, use_causal_mask=causal))
    mask = np.broadcast_to(padding[:, None, :], (B, T, T)) * (np.tril(np.ones((T, T))) if causal else 1.0)
    np.testing.assert_allclose(out, _kernel_reference(layer, x, mask), atol=1e-5, rtol=1e-4)


WINDOWED_CASES = [
    # (feature transform, chunk, window, decay, padding, length)
    ("elu", 1, 3, None, None, 7),
    ("elu", 2, 2, 0.5, "right", 7),
    ("elu", 3, 2, None, "left", 7),
    ("exp", 2, 3, 0.7, "left", 9),
    ("expmod", 3, 1, None, None, 9),
    ("expmod", 2, 4, 0.0, "right", 9),
]


@pytest.mark.parametrize("transform, chunk, window, decay, padding, length", WINDOWED_CASES)
def test_windowed_causal_matches_masked_quadratic_numpy(transform, chunk, window, decay, padding, length):
    x = _x(length)
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform=transform, num_random_features=16,
                            use_causal_windowed=True, causal_chunk_length=chunk, causal_window_length=window,
                            causal_window_decay=decay, causal_padding=padding)
    out = np.asarray(layer(x, x))
    weights = window_mask_numpy(length, chunk, window, decay, padding)[None]
    np.testing.assert_allclose(out, _kernel_reference(layer, x, weights), atol=1e-5, rtol=1e-4)


def test_windowed_default_chunk_is_model_gardens_one_and_key_padding_applies():
    x = _x()
    padding = np.ones((B, T), bool)
    padding[0, 4:] = False
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", use_causal_windowed=True)
    out = np.asarray(layer(x, x, attention_mask=padding))
    weights = window_mask_numpy(T, 1, 3)[None] * padding[:, None, :]
    np.testing.assert_allclose(out, _kernel_reference(layer, x, weights), atol=1e-5, rtol=1e-4)
    # chunk 1 is causal: use_causal_mask=True is then consistent and changes nothing
    np.testing.assert_allclose(np.asarray(layer(x, x, attention_mask=padding, use_causal_mask=True)), out, atol=1e-6)


@pytest.mark.parametrize("transform, decay", [("exp", 0.8), ("elu", 1.0), ("expmod", 0.5)])
def test_streaming_cache_token_by_token_equals_batch_call(transform, decay):
    x = _x()
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform=transform, num_random_features=16,
                            use_causal_windowed=True, causal_window_length=T, causal_window_decay=decay)
    batch = np.asarray(layer(x, x))
    cache = layer.initial_cache(B)
    steps = []
    for t in range(T):  # streaming is one call per token by definition
        out, cache = layer(x[:, t : t + 1], x[:, t : t + 1], cache=cache)
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), batch, atol=1e-5, rtol=1e-4)
    assert tuple(cache["kv"].shape) == (B, 2, 4, 16 if transform != "elu" else 4)


def test_streaming_cache_chunk_by_chunk_equals_right_padded_batch_call():
    x = _x()
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", use_causal_windowed=True,
                            causal_chunk_length=2, causal_window_length=4, causal_window_decay=0.6, causal_padding="right")
    batch = np.asarray(layer(x, x))
    cache = layer.initial_cache(B)
    steps = []
    for start in range(0, T, 2):
        out, cache = layer(x[:, start : start + 2], x[:, start : start + 2], cache=cache)
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), batch, atol=1e-5, rtol=1e-4)


def _softmax_head_reference(layer, x, head, weights=None):
    """NumPy: softmax(q·k + log w) over the keys for the first `head` queries, the softmax projection."""
    q, k, v = _heads(layer, x)
    scores = np.einsum("btnh,bsnh->bnts", q[:, :head], k)
    allowed = np.ones(scores.shape, bool)
    if weights is not None:
        w = np.broadcast_to(weights[:, None, :head], scores.shape)
        allowed = w > 0
        scores = scores + np.log(np.where(allowed, w, 1.0))
    probs = reference.softmax(scores, allowed)
    return _project_out(np.einsum("bnts,bsnh->btnh", probs, v), layer.output_dense_softmax)


@pytest.mark.parametrize("windowed", [False, True])
def test_begin_kernel_softmax_part_has_its_own_output_projection(windowed):
    x = _x()
    options = dict(use_causal_windowed=True, causal_chunk_length=2, causal_window_length=2, causal_window_decay=0.5,
                   causal_padding="right") if windowed else {}
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", begin_kernel=3, **options)
    out = np.asarray(layer(x, x))
    assert layer.output_dense_softmax is not layer.output_dense
    weights = window_mask_numpy(T, 2, 2, 0.5, "right")[None] if windowed else None
    np.testing.assert_allclose(out[:, :3], _softmax_head_reference(layer, x, 3, weights), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(out[:, 3:], _kernel_reference(layer, x, weights)[:, 3:], atol=1e-5, rtol=1e-4)


def test_begin_kernel_with_short_sequences_uses_the_softmax_projection_for_the_head():
    x = _x()
    layer = KernelAttention(num_heads=2, key_dim=4, is_short_seq=True, begin_kernel=2)
    out = np.asarray(layer(x, x))
    np.testing.assert_allclose(out[:, :2], _softmax_head_reference(layer, x, 2), atol=1e-5, rtol=1e-4)
    want, _ = reference.multi_head_attention(x, x, *reference.mha_weights(layer))
    np.testing.assert_allclose(out[:, 2:], want[:, 2:], atol=1e-5, rtol=1e-4)


def _general_mask():
    mask = rng.random((B, T, T)) < 0.5
    mask[:, np.arange(T), np.arange(T)] = True  # every query sees at least itself
    return mask


def _traced(layer, x, mask, **static):
    """The layer inside a compiled predict (traced: the mask's values are unknown while tracing)."""
    inputs = [keras.Input((T, D)), keras.Input(mask.shape[1:], dtype="bool")]
    model = keras.Model(inputs, layer(inputs[0], inputs[0], attention_mask=inputs[1], **static))
    return model.predict([x, mask], verbose=0, batch_size=B)


@pytest.mark.parametrize("options, causal", [({}, False), ({}, True), (dict(use_causal_windowed=True, causal_chunk_length=2,
                                              causal_window_decay=0.5, causal_padding="left"), False)])
def test_general_attention_mask_is_honoured_exactly(options, causal):
    x, mask = _x(), _general_mask()
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform="exp", num_random_features=16, **options)
    out = np.asarray(layer(x, x, attention_mask=mask, use_causal_mask=causal))
    pattern = np.tril(np.ones((T, T))) if causal else 1.0
    if options:
        pattern = window_mask_numpy(T, 2, 3, 0.5, "left")
    want = _kernel_reference(layer, x, mask * pattern)
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(_traced(layer, x, mask, use_causal_mask=causal), want, atol=1e-5, rtol=1e-4)


def test_padding_style_attention_mask_is_factorised_and_equals_the_traced_dense_path():
    x = _x()
    query_padding, key_padding = np.ones((B, T), bool), np.ones((B, T), bool)
    query_padding[0, 5:] = key_padding[0, 5:] = False
    key_padding[1, 2] = False
    mask = query_padding[:, :, None] & key_padding[:, None, :]
    layer = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu")
    out = np.asarray(layer(x, x, attention_mask=mask))
    want = _kernel_reference(layer, x, mask)  # a padded query sees no key: context 0, the output bias
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(_traced(layer, x, mask), want, atol=1e-5, rtol=1e-4)


# Every KernelAttention argument of Model Garden's constructor, with non-default values.
MODEL_GARDEN_ARGUMENTS = dict(
    num_heads=2, key_dim=4, value_dim=6, dropout=0.0, use_bias=True, output_shape=None, attention_axes=None,
    kernel_initializer="glorot_uniform", bias_initializer="zeros", feature_transform="expmod",
    num_random_features=8, seed=5, redraw=False, is_short_seq=False, begin_kernel=2, scale=0.4,
    scale_by_length=False, use_causal_windowed=True, causal_chunk_length=2, causal_window_length=2,
    causal_window_decay=0.9, causal_padding="left",
)
MODEL_GARDEN_DEFAULTS = dict(
    feature_transform="exp", num_random_features=256, seed=0, redraw=False, is_short_seq=False, begin_kernel=0,
    scale=None, scale_by_length=False, use_causal_windowed=False, causal_window_length=3, causal_window_decay=None,
    causal_padding=None,
)


@pytest.mark.tf_only  # config porting and defaults: backend-independent Python
def test_builds_from_model_garden_arguments_and_config_round_trips():
    layer = KernelAttention(**MODEL_GARDEN_ARGUMENTS)
    out = np.asarray(layer(_x(), _x()))
    assert out.shape == (B, T, D) and np.all(np.isfinite(out))
    config = layer.get_config()
    for name, value in MODEL_GARDEN_ARGUMENTS.items():
        if not name.endswith("initializer") and name != "attention_axes":  # Keras stores those normalised
            assert config[name] == value, (name, config[name], value)
    rebuilt = KernelAttention.from_config(config)
    dump = lambda lay: json.dumps(keras.saving.serialize_keras_object(lay.get_config()), sort_keys=True)  # noqa: E731
    assert dump(rebuilt) == dump(layer)

    defaults = KernelAttention(num_heads=2, key_dim=4).get_config()
    assert {name: defaults[name] for name in MODEL_GARDEN_DEFAULTS} == MODEL_GARDEN_DEFAULTS
    # causal_chunk_length=None is Model Garden's default 1 in windowed mode
    x = _x()
    one = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", use_causal_windowed=True, causal_chunk_length=1)
    unset = KernelAttention(num_heads=2, key_dim=4, feature_transform="elu", use_causal_windowed=True)
    one(x, x)
    unset(x, x)
    unset.set_weights(one.get_weights())
    np.testing.assert_allclose(np.asarray(unset(x, x)), np.asarray(one(x, x)), atol=1e-6)


def test_contract_windowed_expmod_with_softmax_head(tmp_path):
    x = _x(8)
    padding = np.ones((B, 8), "float32")
    padding[1, 6:] = 0.0
    check_layer(
        KernelAttention,
        dict(num_heads=2, key_dim=4, feature_transform="expmod", num_random_features=8, redraw=True, begin_kernel=2,
             use_causal_windowed=True, causal_chunk_length=2, causal_window_length=2, causal_window_decay=0.5),
        args=[x, x],
        kwargs=dict(attention_mask=padding),
        tmp_path=tmp_path,
        expected_shapes=[(B, 8, D)],
        # q/k/v/output and the softmax head's output projection, kernels and biases; the
        # random-feature projection is not trained
        expected_trainable=10,
        expected_non_trainable=1,
    )


def test_contract_general_attention_mask(tmp_path):
    x = _x()
    check_layer(
        KernelAttention,
        dict(num_heads=2, key_dim=4, feature_transform="elu"),
        args=[x, x],
        kwargs=dict(attention_mask=_general_mask().astype("float32")),
        static_kwargs=dict(use_causal_mask=True),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        expected_trainable=8,
        expected_non_trainable=0,
    )


def test_clear_errors_for_what_the_options_cannot_do():
    x = _x()
    windowed = dict(num_heads=2, key_dim=4, feature_transform="elu", use_causal_windowed=True)
    cases = [
        (lambda: KernelAttention(**windowed, is_short_seq=True), "is_short_seq"),
        (lambda: KernelAttention(num_heads=2, key_dim=4, feature_transform="expplus", use_causal_windowed=True), "expplus"),
        (lambda: KernelAttention(**windowed, causal_window_decay=1.5), "causal_window_decay=1.5"),
        (lambda: KernelAttention(**windowed, causal_padding="middle"), "causal_padding='middle'"),
        (lambda: KernelAttention(**windowed, causal_chunk_length=0), "causal_chunk_length=0"),
        (lambda: KernelAttention(**windowed, causal_chunk_length=2)(x, x), "not a multiple of causal_chunk_length=2"),
        (lambda: KernelAttention(**windowed, causal_chunk_length=7)(x, x, use_causal_mask=True), "use_causal_mask"),
        (lambda: KernelAttention(**windowed)(x, x[:, :5]), "T = S"),
        (lambda: KernelAttention(num_heads=2, key_dim=4)(x, x, cache={}), "use_causal_windowed"),
        (lambda: KernelAttention(**windowed)(x, x, cache={}), "causal_window_decay"),
        (lambda: KernelAttention(**windowed, causal_window_decay=0.5, begin_kernel=1)(x, x, cache={}), "begin_kernel"),
        (lambda: KernelAttention(**windowed, causal_window_decay=0.5)(x, x, cache={}, training=True), "inference"),
    ]
    for make, message in cases:
        with pytest.raises(NlpkitError, match=message):
            make()
    layer = KernelAttention(**windowed, causal_window_decay=0.5)
    with pytest.raises(NlpkitError, match="key padding"):
        layer(x[:, :2], x[:, :2], attention_mask=np.tril(np.ones((B, 2, 2))), cache=layer.initial_cache(B))
