"""BigBirdAttention = full attention under its block-sparse pattern; every block global = full."""

import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.bigbird import BigBirdAttention, bigbird_block_mask, bigbird_block_plan
from tests.layers import reference
from tests.layers.harness import check_layer

rng = np.random.default_rng(8)


def _inputs(length=20, batch=2):
    x = rng.normal(size=(batch, length, 16)).astype("float32")
    padding = np.ones((batch, length), bool)
    padding[1, length - 5 :] = False
    return x, padding


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


@pytest.mark.parametrize("length, block, rand", [(40, 4, 2), (37, 4, 1), (3, 8, 2)])
def test_sparse_pattern_equals_full_attention_with_its_mask(length, block, rand):
    x, padding = _inputs(length)
    layer = BigBirdAttention(num_heads=2, key_dim=4, block_size=block, num_rand_blocks=rand, seed=5)
    out = np.asarray(layer(x, x, attention_mask=padding))
    mask = bigbird_block_mask(length, block, 1, rand, seed=5)[None] & padding[:, None, :]
    want, _ = reference.multi_head_attention(x, x, *reference.mha_weights(layer), mask=mask)
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_block_plan_window_globals_and_random_blocks():
    global_ids, middle, slots = bigbird_block_plan(num_blocks=12, num_global_blocks=1, num_rand_blocks=2, seed=0)
    assert global_ids == [0, 11] and middle == list(range(1, 11))
    for block, row in zip(middle, slots):
        row = [b for b in row if b >= 0]
        assert len(row) == len(set(row))
        window = {b for b in (block - 1, block, block + 1) if 0 <= b < 12}
        assert window | {0, 11} <= set(row)
        assert len(set(row) - window - {0, 11}) == 2
    mask = bigbird_block_mask(48, 4, 1, 2, seed=0)
    assert mask[:4].all() and mask[:, :4].all() and mask.sum() < 48 * 48


def test_fully_padded_sample_is_finite_and_errors_are_clear():
    x, padding = _inputs()
    padding[0] = False
    out = np.asarray(BigBirdAttention(num_heads=2, key_dim=4, block_size=4, num_rand_blocks=1)(x, x, attention_mask=padding))
    assert np.all(np.isfinite(out))
    with pytest.raises(NlpkitError, match="self-attention"):
        BigBirdAttention(num_heads=2, key_dim=4)(x, x[:, :10])
    with pytest.raises(NlpkitError, match="does not support use_causal_mask"):
        BigBirdAttention(num_heads=2, key_dim=4)(x, x, use_causal_mask=True)
