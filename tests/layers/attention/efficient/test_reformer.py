"""ReformerAttention: one chunk = shared-QK full attention; padding stays out of every chunk."""

import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient import ReformerAttention
from tests.layers.attention.efficient.heads_reference import full_attention, heads
from tests.layers.harness import check_layer

rng = np.random.default_rng(5)


def _shared_keys(q):
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


@pytest.mark.parametrize("rounds", [1, 3])
def test_one_chunk_is_full_shared_qk_attention(rounds):
    q, _, v = heads(rng, t=7, s=7)
    out = ReformerAttention(chunk_size=16, rounds=rounds, masked=False)(q, q, v)
    np.testing.assert_allclose(np.asarray(out), full_attention(q, _shared_keys(q), v), atol=1e-5)


def test_masked_excludes_self():
    q, _, v = heads(rng, t=6, s=6)
    lengths = np.array([6, 1], "int32")
    out = np.asarray(ReformerAttention(chunk_size=8, rounds=1)(q, q, v, key_lengths=lengths))
    keys = np.arange(6)[None] < lengths[:, None]
    want = full_attention(q, _shared_keys(q), v, ~np.eye(6, dtype=bool)[None] & keys[:, None, :])
    np.testing.assert_allclose(out[0], want[0], atol=1e-5)
    np.testing.assert_allclose(out[1], np.broadcast_to(v[1, :1], out[1].shape), atol=1e-5)  # only itself is left


def test_contract_padding_invariance_and_short_chunks(tmp_path):
    q, _, v = heads(rng, t=10, s=10)
    lengths = np.array([10, 6], "int32")
    out = check_layer(
        ReformerAttention, dict(chunk_size=4, bits=3, rounds=2), args=[q, q, v], kwargs=dict(key_lengths=lengths), tmp_path=tmp_path
    )
    changed_q, changed_v = q.copy(), v.copy()
    changed_q[1, 6:] = rng.normal(size=changed_q[1, 6:].shape) * 30
    changed_v[1, 6:] += 100.0
    again = ReformerAttention(chunk_size=4, bits=3, rounds=2)(changed_q, changed_q, changed_v, key_lengths=lengths)
    np.testing.assert_allclose(np.asarray(again)[1, :6], np.asarray(out)[1, :6], atol=1e-5)


def test_refuses_masks_and_foreign_keys():
    q, k, v = heads(rng, t=5, s=6)
    with pytest.raises(NlpkitError, match="shares queries and keys"):
        ReformerAttention()(q, k, v)
    with pytest.raises(NlpkitError, match="cannot honour"):
        ReformerAttention()(q, q, v[:, :5], attn_mask=np.tril(np.ones((5, 5))))
