"""BigBirdAttention = dense attention under each head's block-sparse pattern (NumPy, here)."""

import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention import bigbird
from nlpkit.layers.attention.bigbird import BigBirdAttention, BigBirdMasks
from tests.layers import reference
from tests.layers.harness import check_layer
from tests.layers.model_garden_config import assert_config_holds_arguments

rng = np.random.default_rng(8)


def _inputs(length=20, batch=2, width=16):
    x = rng.normal(size=(batch, length, width)).astype("float32")
    padding = np.ones((batch, length), bool)
    padding[1, length - 5 :] = False
    return x, padding


def _dense_reference(layer, query, value, head_masks, query_padding=None):
    """NumPy multi-head attention where head n sees `head_masks[:, n]` ([B, N, T, S]); padded queries -> 0."""
    wq, bq, wk, bk, wv, bv, wo, bo = reference.mha_weights(layer)
    q, k, v = reference.dense(query, wq, bq), reference.dense(value, wk, bk), reference.dense(value, wv, bv)
    scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(head_masks, scores, -np.inf)
    top = np.max(scores, axis=-1, keepdims=True)
    weights = np.where(head_masks, np.exp(scores - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = weights.sum(-1, keepdims=True)
    probs = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    context = np.einsum("bnts,bsnh->btnh", probs, v)
    if query_padding is not None:
        context = context * query_padding[:, :, None, None]
    return np.einsum("btnh,nhd->btd", context, wo) + (0 if bo is None else bo)


def _head_masks(length, key_length, block_q, block_k, global_blocks, random_ids, key_padding):
    """[B, N, T, S] from the block pattern, written out: window, globals, and `random_ids[i][n]` per head."""
    num_blocks = len(random_ids)
    heads = len(random_ids[0])
    blocks = np.zeros((heads, num_blocks, num_blocks), bool)
    for i in range(num_blocks):
        is_global = i < global_blocks or i >= num_blocks - global_blocks
        for j in range(num_blocks):
            j_global = j < global_blocks or j >= num_blocks - global_blocks
            if is_global or j_global or abs(i - j) <= 1:
                blocks[:, i, j] = True
        for n in range(heads):
            blocks[n, i, list(random_ids[i][n])] = True
    tokens = np.kron(blocks, np.ones((1, block_q, block_k), bool))[:, :length, :key_length]
    return tokens[None] & key_padding[:, None, None, :]


def _random_ids(layer, num_blocks):
    """The layer's random picks as lists, checked against the rule they must follow."""
    ids, valid = (np.asarray(keras.ops.convert_to_numpy(x)) for x in layer.random_blocks(num_blocks))
    g = layer.num_global_blocks
    picks = []
    for i in range(num_blocks):
        row = []
        candidates = {b for b in range(g, num_blocks - g) if abs(b - i) > 1}
        for n in range(layer.num_heads):
            chosen = [int(b) for b in ids[i, n][valid[i, n]]]
            assert len(set(chosen)) == len(chosen) == min(layer.num_rand_blocks, len(candidates)), (i, n, chosen)
            assert set(chosen) <= candidates, (i, n, chosen, candidates)
            row.append(chosen)
        picks.append(row)
    return picks


def test_contract(tmp_path):
    x, padding = _inputs()
    check_layer(
        BigBirdAttention,
        dict(num_heads=2, key_dim=4, block_size=3, num_rand_blocks=1, num_global_blocks=1, seed=2, dropout=0.1),
        args=[x, x],
        kwargs=dict(attention_mask=padding.astype("float32")),
        tmp_path=tmp_path,
        expected_shapes=[x.shape],
        expected_trainable=8,
        expected_non_trainable=0,
    )


def test_every_block_global_is_full_attention():
    x, padding = _inputs()
    layer = BigBirdAttention(num_heads=2, key_dim=4, block_size=4, num_global_blocks=3)
    out = np.asarray(layer(x, x, attention_mask=padding))
    mask = np.broadcast_to(padding[:, None, :], (2, 20, 20))
    want, _ = reference.multi_head_attention(x, x, *reference.mha_weights(layer), mask=mask)
    np.testing.assert_allclose(out, want, atol=1e-5)


@pytest.mark.parametrize("length, block, rand, globals_", [(64, 4, 2, 1), (37, 4, 1, 1), (3, 8, 2, 1), (48, 4, 3, 2), (40, 4, 2, 0)])
def test_per_head_random_blocks_equal_dense_attention_under_each_heads_mask(length, block, rand, globals_):
    x, padding = _inputs(length)
    layer = BigBirdAttention(num_heads=3, key_dim=4, block_size=block, num_rand_blocks=rand, num_global_blocks=globals_, seed=5)
    out = np.asarray(layer(x, x, attention_mask=padding))
    num_blocks = -(-length // block)
    random_ids = _random_ids(layer, num_blocks)
    masks = _head_masks(length, length, block, block, globals_, random_ids, padding)
    np.testing.assert_allclose(out, _dense_reference(layer, x, x, masks), atol=1e-5)
    np.testing.assert_array_equal(layer.block_mask(length), masks[0] | ~padding[0][None, None, :])


def _one_sgd_step(layer, x, target, head_masks=None):
    """The layer's weights after one SGD step on `x` (Keras' own MHA takes the per-head masks)."""
    inputs = [keras.Input(shape=x.shape[1:])]
    if head_masks is not None:
        inputs.append(keras.Input(shape=head_masks.shape[1:], dtype="bool"))
    model = keras.Model(inputs, layer(inputs[0], inputs[0], attention_mask=inputs[1] if head_masks is not None else None))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.train_on_batch([x] if head_masks is None else [x, head_masks], target)
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in layer.weights]


def test_blocked_loop_over_several_chunks_equals_numpy_and_its_gradients_dense_attention(monkeypatch):
    monkeypatch.setattr(bigbird, "CHUNK_TOKENS", 12)  # 10 blocks of 4: chunks of 3 blocks, the last one padded
    x, _ = _inputs(40)
    layer = BigBirdAttention(num_heads=2, key_dim=4, block_size=4, num_rand_blocks=2, seed=4)
    out = np.asarray(layer(x, x))
    masks = _head_masks(40, 40, 4, 4, 1, _random_ids(layer, 10), np.ones((2, 40), bool))
    np.testing.assert_allclose(out, _dense_reference(layer, x, x, masks), atol=1e-5)
    # The gradients through the rematerialised loop: one SGD step moves the weights as it moves
    # those of Keras' dense MultiHeadAttention under the same per-head masks.
    dense = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    dense(x, x)
    dense.set_weights(layer.get_weights())
    target = rng.normal(size=x.shape).astype("float32")
    want_weights = _one_sgd_step(dense, x, target, masks)
    for got, want in zip(_one_sgd_step(layer, x, target), want_weights, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_random_blocks_differ_per_head_and_follow_the_seed():
    layer = BigBirdAttention(num_heads=4, key_dim=4, block_size=4, num_rand_blocks=2, seed=1)
    picks = np.array(_random_ids(layer, 32)[1:-1])  # the middle blocks: [nb-2, N, R]
    assert any(not np.array_equal(picks[:, 0], picks[:, n]) for n in range(1, 4))  # heads draw their own blocks
    same_seed = BigBirdAttention(num_heads=4, key_dim=4, block_size=4, num_rand_blocks=2, seed=1)
    np.testing.assert_array_equal(np.array(_random_ids(same_seed, 32)[1:-1]), picks)
    other_seed = BigBirdAttention(num_heads=4, key_dim=4, block_size=4, num_rand_blocks=2, seed=2)
    assert not np.array_equal(np.array(_random_ids(other_seed, 32)[1:-1]), picks)


def test_cross_attention_with_different_block_sizes_equals_numpy():
    query, query_padding = _inputs(24)  # 6 blocks of 4 queries
    value, key_padding = _inputs(36)  # 6 blocks of 6 keys
    layer = BigBirdAttention(num_heads=2, key_dim=4, from_block_size=4, to_block_size=6, num_rand_blocks=1, seed=3)
    mask = query_padding[:, :, None] & key_padding[:, None, :]
    out = np.asarray(layer(query, value, attention_mask=mask))
    masks = _head_masks(24, 36, 4, 6, 1, _random_ids(layer, 6), key_padding)
    np.testing.assert_allclose(out, _dense_reference(layer, query, value, masks, query_padding), atol=1e-5)
    with pytest.raises(NlpkitError, match="as many query as key blocks"):
        layer(query, value[:, :30])


def test_one_layer_on_two_lengths_eager_and_in_a_model_with_unknown_length():
    layer = BigBirdAttention(num_heads=2, key_dim=4, block_size=4, num_rand_blocks=2, seed=7)
    inputs = keras.Input(shape=(None, 16))
    model = keras.Model(inputs, layer(inputs, inputs))
    for length in (32, 48):
        x, padding = _inputs(length, width=16)
        masks = _head_masks(length, length, 4, 4, 1, _random_ids(layer, length // 4), np.ones_like(padding))
        want = _dense_reference(layer, x, x, masks)
        np.testing.assert_allclose(np.asarray(layer(x, x)), want, atol=1e-5)
        # predict traces again for a new length (TensorFlow then with the length unknown).
        np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=1e-5)


def test_model_garden_masks_and_arguments_port():
    model_garden = dict(num_heads=2, key_dim=4, num_rand_blocks=1, from_block_size=4, to_block_size=4,
                        max_rand_mask_length=64, seed=0, dropout=0.0, use_bias=True)
    layer = BigBirdAttention(**model_garden)
    assert assert_config_holds_arguments(layer, model_garden)["block_size"] == 4
    masks_layer = BigBirdMasks(block_size=4)
    assert_config_holds_arguments(masks_layer, dict(block_size=4))
    with pytest.raises(NlpkitError, match="block_size=8 and from_block_size=4 disagree"):
        BigBirdAttention(num_heads=2, key_dim=4, block_size=8, from_block_size=4)

    x, _ = _inputs(32)
    padding = rng.random((2, 32)) > 0.3  # holes everywhere, so that each band block is checked
    padding[:, 0] = True
    masks = masks_layer(x, padding.astype("float64"))
    band, from_mask, to_mask, blocked = (np.asarray(keras.ops.convert_to_numpy(m)) for m in masks)
    p = padding.astype("float32")
    np.testing.assert_array_equal(from_mask, p[:, None, :, None])
    np.testing.assert_array_equal(to_mask, p[:, None, None, :])
    np.testing.assert_array_equal(blocked, p.reshape(2, 8, 4))
    for i in range(2, 6):  # middle query block i by key blocks i-1, i, i+1
        np.testing.assert_array_equal(band[:, 0, i - 2], p[:, 4 * i : 4 * i + 4, None] * p[:, None, 4 * i - 4 : 4 * i + 8])
    out = np.asarray(layer(x, x, attention_mask=masks))
    head_masks = _head_masks(32, 32, 4, 4, 1, _random_ids(layer, 8), padding)
    np.testing.assert_allclose(out, _dense_reference(layer, x, x, head_masks, padding), atol=1e-5)


def test_drawn_seed_is_kept_by_the_config():
    layer = BigBirdAttention(num_heads=2, key_dim=4, seed=None)
    assert isinstance(layer.seed, int)
    assert BigBirdAttention.from_config(layer.get_config()).seed == layer.seed


def test_fully_padded_sample_is_finite_and_errors_are_clear():
    x, padding = _inputs()
    padding[0] = False
    out = np.asarray(BigBirdAttention(num_heads=2, key_dim=4, block_size=4, num_rand_blocks=1)(x, x, attention_mask=padding))
    assert np.all(np.isfinite(out))
    with pytest.raises(NlpkitError, match="as many query as key blocks"):
        BigBirdAttention(num_heads=2, key_dim=4, block_size=4)(x, x[:, :10])
    with pytest.raises(NlpkitError, match="does not support use_causal_mask"):
        BigBirdAttention(num_heads=2, key_dim=4)(x, x, use_causal_mask=True)
