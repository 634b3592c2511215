"""ReformerAttention: one chunk = shared-QK full attention; padding stays out of every chunk;
look-back and attn_mask decide which keys each chunk sees."""

import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient import ReformerAttention, TriangularMask
from tests.layers.attention.efficient.heads_reference import full_attention, heads
from tests.layers.harness import check_layer

rng = np.random.default_rng(5)


def _shared_keys(q):
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


@pytest.mark.parametrize("rounds", [1, 3])
def test_reformer_with_look_back_and_one_chunk_equals_shared_qk_full_attention(rounds):
    q, _, v = heads(rng, t=7, s=7)
    out = ReformerAttention(chunk_size=16, rounds=rounds, masked=False, look_back=True)(q, q, v)
    np.testing.assert_allclose(np.asarray(out), full_attention(q, _shared_keys(q), v), atol=1e-5)


def _random_mask(shape):
    mask = rng.random(shape) < 0.5
    mask[..., np.arange(shape[-1]), np.arange(shape[-1])] = True  # every query keeps a key
    return mask


@pytest.mark.parametrize("mask", [_random_mask((7, 7)), _random_mask((2, 7, 7)), "triangular"], ids=["2d", "3d", "triangular"])
def test_attn_mask_in_one_chunk_equals_masked_full_attention(mask):
    q, _, v = heads(rng, t=7, s=7)
    dense = np.tril(np.ones((7, 7), bool)) if isinstance(mask, str) else mask
    attn_mask = TriangularMask(7) if isinstance(mask, str) else mask
    out = ReformerAttention(chunk_size=16, rounds=2, masked=False)(q, q, v, attn_mask=attn_mask)
    np.testing.assert_allclose(np.asarray(out), full_attention(q, _shared_keys(q), v, np.broadcast_to(dense, (2, 7, 7))), atol=1e-5)


def _mean_of_visible_values(values, visible):
    """values [B,T,N,M], visible [B,T,S] -> the plain average of the visible values (0 if none)."""
    counts = visible.sum(-1)[:, :, None, None]
    total = np.einsum("bts,bsnm->btnm", visible.astype(np.float64), values.astype(np.float64))
    return np.where(counts > 0, total / np.maximum(counts, 1), 0.0)


@pytest.mark.parametrize("look_back", [True, False])
@pytest.mark.parametrize("masked", [True, False])
def test_chunks_see_their_own_and_the_previous_chunk_under_attn_mask(look_back, masked):
    # Zero queries all hash to bucket 0, so the chunks are runs of positions, and every allowed
    # key scores 0: each output is the plain average of the values the query may see.
    length, chunk = 8, 3
    _, _, v = heads(rng, t=length, s=length)
    q = np.zeros((2, length, 2, 4), "float32")
    attn_mask = _random_mask((2, length, length))
    lengths = np.array([8, 7], "int32")
    block = np.arange(length) // chunk
    same_chunk = block[:, None] == block[None, :]
    previous_chunk = block[:, None] == block[None, :] + 1
    allowed = attn_mask & (np.arange(length)[None] < lengths[:, None])[:, None, :]
    visible = (same_chunk | (previous_chunk & look_back))[None] & allowed
    if masked:  # a query sees itself only when nothing else is visible
        others = visible & ~np.eye(length, dtype=bool)
        visible = np.where(others.any(-1, keepdims=True), others, visible)
    layer = ReformerAttention(chunk_size=chunk, bits=2, rounds=2, masked=masked, look_back=look_back)
    out = np.asarray(layer(q, q, v, attn_mask=attn_mask, key_lengths=lengths))
    want = _mean_of_visible_values(v, visible)
    np.testing.assert_allclose(out[0], want[0], atol=1e-5)
    np.testing.assert_allclose(out[1, :7], want[1, :7], atol=1e-5)


def test_masked_excludes_self():
    q, _, v = heads(rng, t=6, s=6)
    lengths = np.array([6, 1], "int32")
    out = np.asarray(ReformerAttention(chunk_size=8, rounds=1)(q, q, v, key_lengths=lengths))
    keys = np.arange(6)[None] < lengths[:, None]
    want = full_attention(q, _shared_keys(q), v, ~np.eye(6, dtype=bool)[None] & keys[:, None, :])
    np.testing.assert_allclose(out[0], want[0], atol=1e-5)
    np.testing.assert_allclose(out[1], np.broadcast_to(v[1, :1], out[1].shape), atol=1e-5)  # only itself is left


@pytest.mark.parametrize("look_back", [True, False])
def test_contract_padding_invariance_and_short_chunks(tmp_path, look_back):
    q, _, v = heads(rng, t=10, s=10)
    lengths = np.array([10, 6], "int32")
    out = check_layer(
        ReformerAttention, dict(chunk_size=4, bits=3, rounds=2, look_back=look_back), args=[q, q, v], kwargs=dict(key_lengths=lengths), tmp_path=tmp_path,
        expected_trainable=0,
        expected_non_trainable=0,
    )
    changed_q, changed_v = q.copy(), v.copy()
    changed_q[1, 6:] = rng.normal(size=changed_q[1, 6:].shape) * 30
    changed_v[1, 6:] += 100.0
    again = ReformerAttention(chunk_size=4, bits=3, rounds=2, look_back=look_back)(changed_q, changed_q, changed_v, key_lengths=lengths)
    np.testing.assert_allclose(np.asarray(again)[1, :6], np.asarray(out)[1, :6], atol=1e-5)


def test_refuses_foreign_keys_and_masks_of_another_size():
    q, k, v = heads(rng, t=5, s=6)
    with pytest.raises(NlpkitError, match="shares queries and keys"):
        ReformerAttention()(q, k, v)
    with pytest.raises(NlpkitError, match=r"attn_mask of \[T, T\]"):
        ReformerAttention()(q, q, v[:, :5], attn_mask=np.ones((5, 6)))

