import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.cached import CachedAttention
from nlpkit.layers.attention.registry import make_attention
from tests.layers import reference
from tests.layers.harness import check_layer
from tests.layers.properties import assert_causal

rng = np.random.default_rng(0)
B, T, D, N, H = 2, 6, 8, 2, 4


def _sequence(length=T):
    return rng.normal(size=(B, length, D)).astype("float32")


def _causal(length):
    return np.tril(np.ones((length, length), bool))[None]


def _empty_cache(length=0):
    return {"key": np.zeros((B, length, N, H), "float32"), "value": np.zeros((B, length, N, H), "float32")}


def test_contract(tmp_path):
    query, value = _sequence(), _sequence(4)
    mask = (rng.random((B, T, 4)) > 0.3).astype("float32")
    check_layer(
        CachedAttention,
        dict(num_heads=N, key_dim=H, dropout=0.1),
        args=[query, value],
        kwargs=dict(attention_mask=mask),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        expected_trainable=8,
        expected_non_trainable=0,
    )


def test_without_cache_matches_numpy_reference():
    query, value = _sequence(), _sequence(4)
    mask = rng.random((B, T, 4)) > 0.3
    layer = CachedAttention(num_heads=N, key_dim=H)
    out, probs = layer(query, value, attention_mask=mask, return_attention_scores=True)
    want_out, want_probs = reference.multi_head_attention(query, value, *reference.mha_weights(layer), mask=mask)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)


def _reference_with_cache(layer, x, cached_keys, cached_values, mask):
    """NumPy: project the new steps, append them to the cache, attend with the given mask."""
    wq, bq, wk, bk, wv, bv, wo, bo = reference.mha_weights(layer)
    keys = np.concatenate([cached_keys, reference.dense(x, wk, bk)], axis=1)
    values = np.concatenate([cached_values, reference.dense(x, wv, bv)], axis=1)
    scores = np.einsum("btnh,bsnh->bnts", reference.dense(x, wq, bq), keys) / np.sqrt(H)
    probs = reference.softmax(scores, mask[:, None])
    out = np.einsum("btnh,nhd->btd", np.einsum("bnts,bsnh->btnh", probs, values), wo) + bo
    return out, probs, keys, values


def test_growing_cache_matches_numpy_reference():
    layer = CachedAttention(num_heads=N, key_dim=H)
    x = _sequence(2)
    layer(x, x)  # build
    cache = {name: rng.normal(size=(B, 3, N, H)).astype("float32") for name in ("key", "value")}
    padding = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], bool)[:, None, :]  # first cached key of row 1 is padding
    out, probs, new_cache = layer(x, x, cache=cache, attention_mask=padding, return_attention_scores=True)
    # Query t of the new chunk sits at position 3 + t: it sees cache positions <= 3 + t.
    causal = np.tril(np.ones((2, 5), bool), k=3)[None]
    want_out, want_probs, want_keys, want_values = _reference_with_cache(
        layer, x, cache["key"], cache["value"], causal & padding
    )
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_cache["key"]), want_keys, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_cache["value"]), want_values, atol=1e-5)


@pytest.mark.parametrize("step_as_tensor", [False, True])
def test_fixed_size_cache_writes_one_slot_and_ignores_unwritten_slots(step_as_tensor):
    layer = CachedAttention(num_heads=N, key_dim=H)
    x = _sequence(1)
    layer(x, x)
    garbage = {name: rng.normal(size=(B, T, N, H)).astype("float32") for name in ("key", "value")}
    step = keras.ops.convert_to_tensor(2, "int32") if step_as_tensor else 2
    out, probs, new_cache = layer(x, x, cache=garbage, decode_loop_step=step, return_attention_scores=True)
    # Slot 2 holds the new step, other slots are untouched, slots > 2 get probability 0.
    want_keys = garbage["key"].copy()
    wq, bq, wk, bk, *_ = reference.mha_weights(layer)
    want_keys[:, 2:3] = reference.dense(x, wk, bk)
    np.testing.assert_allclose(np.asarray(new_cache["key"]), want_keys, atol=1e-5)
    assert np.all(np.asarray(probs)[..., 3:] == 0.0)
    want_out, want_probs, _, _ = _reference_with_cache(
        layer, x, garbage["key"][:, :2], garbage["value"][:, :2], np.ones((B, 1, 3), bool)
    )
    np.testing.assert_allclose(np.asarray(probs)[..., :3], want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)


def _decode(layer, x, cache, static):
    outputs = []
    for t in range(x.shape[1]):
        step = x[:, t : t + 1]
        out, cache = layer(step, step, cache=cache, decode_loop_step=t if static else None)
        outputs.append(np.asarray(out))
    return np.concatenate(outputs, axis=1), cache


@pytest.mark.parametrize("static", [False, True])
def test_step_by_step_decoding_equals_full_causal_pass(static):
    layer = CachedAttention(num_heads=N, key_dim=H)
    x = _sequence()
    full = np.asarray(layer(x, x, use_causal_mask=True))
    decoded, cache = _decode(layer, x, _empty_cache(T if static else 0), static)
    np.testing.assert_allclose(decoded, full, atol=1e-5)
    assert cache["key"].shape == (B, T, N, H)


def test_prefill_then_steps_equals_full_causal_pass():
    layer = CachedAttention(num_heads=N, key_dim=H)
    x = _sequence()
    full = np.asarray(layer(x, x, attention_mask=_causal(T)))
    prefix, cache = layer(x[:, :4], x[:, :4], cache=_empty_cache())
    rest, _ = _decode_from(layer, x, cache, start=4)
    np.testing.assert_allclose(np.concatenate([np.asarray(prefix), rest], axis=1), full, atol=1e-5)


def _decode_from(layer, x, cache, start):
    outputs = []
    for t in range(start, x.shape[1]):
        out, cache = layer(x[:, t : t + 1], x[:, t : t + 1], cache=cache)
        outputs.append(np.asarray(out))
    return np.concatenate(outputs, axis=1), cache


def test_causal_perturbing_later_tokens_leaves_earlier_outputs_unchanged():
    layer = CachedAttention(num_heads=N, key_dim=H)
    assert_causal(lambda x: layer(x, x, use_causal_mask=True), _sequence(), first_changed=4)


def test_padding_invariance_and_masked_keys_get_zero_probability_with_cache():
    layer = CachedAttention(num_heads=N, key_dim=H)
    x = _sequence(1)
    layer(x, x)
    cache = {name: rng.normal(size=(B, 4, N, H)).astype("float32") for name in ("key", "value")}
    padding = np.array([1, 0, 1, 1, 1], bool)[None, None, :]  # cache position 1 is padding
    out, probs, _ = layer(x, x, cache=cache, attention_mask=padding, return_attention_scores=True)
    changed = {name: value.copy() for name, value in cache.items()}
    changed["key"][:, 1] += 50.0
    changed["value"][:, 1] -= 50.0
    out2 = layer(x, x, cache=changed, attention_mask=padding)[0]
    np.testing.assert_allclose(np.asarray(out2), np.asarray(out), atol=1e-5)
    assert np.all(np.asarray(probs)[..., 1] == 0.0)


def test_symbolic_call_with_cache_gives_the_cache_shapes():
    layer = CachedAttention(num_heads=N, key_dim=H)
    step = keras.Input(shape=(1, D))
    grown = layer(step, step, cache={"key": keras.Input(shape=(3, N, H)), "value": keras.Input(shape=(3, N, H))})
    assert tuple(grown[0].shape) == (None, 1, D)
    assert tuple(grown[1]["key"].shape) == (None, 4, N, H)
    fixed = layer(step, step, cache={"key": keras.Input(shape=(5, N, H)), "value": keras.Input(shape=(5, N, H))},
                  decode_loop_step=0, return_attention_scores=True)
    assert tuple(fixed[1].shape) == (None, N, 1, 5)
    assert tuple(fixed[2]["value"].shape) == (None, 5, N, H)


def test_registered_as_cached():
    assert isinstance(make_attention("cached", num_heads=N, key_dim=H), CachedAttention)


def test_cache_with_higher_rank_attention_is_rejected():
    layer = CachedAttention(num_heads=N, key_dim=H, attention_axes=(2,))
    x = rng.normal(size=(B, 3, 4, D)).astype("float32")
    layer(x, x)
    with pytest.raises(NlpkitError):
        layer(x, x, cache=_empty_cache())
