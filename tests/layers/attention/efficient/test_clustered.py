"""Clustered attentions: exact limits (one cluster per query, topk = S) and the centroid rule."""

import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient import (
    ClusteredAttention,
    ImprovedClusteredAttention,
    ImprovedClusteredCausalAttention,
    TriangularMask,
)
from tests.layers.attention.efficient.heads_reference import full_attention, heads
from tests.layers.harness import check_layer

rng = np.random.default_rng(4)
KEYS = np.array([9, 5], "int32")
KEY_MASK = (np.arange(9)[None] < KEYS[:, None])[:, None, :]


@pytest.mark.parametrize("clusters", [8, 11])
def test_as_many_clusters_as_queries_is_full_attention(clusters):
    q, k, v = heads(rng, t=8, s=9)
    out = ClusteredAttention(clusters=clusters, bits=32)(q, k, v, key_lengths=KEYS)
    np.testing.assert_allclose(np.asarray(out), full_attention(q, k, v, KEY_MASK), atol=1e-5)


def test_fewer_clusters_each_group_gets_its_centroid_attention():
    q, k, v = heads(rng, batch=1, t=12, s=9, n=1)
    out = np.asarray(ClusteredAttention(clusters=3, bits=8)(q, k, v))[0, :, 0]
    groups = np.unique(np.round(out, 5), axis=0, return_inverse=True)[1].ravel()
    assert len(set(groups)) <= 3
    for group in set(groups):
        members = groups == group
        centroid = q[:, members].mean(axis=1, keepdims=True)
        want = full_attention(centroid, k, v)[0, 0, 0]
        np.testing.assert_allclose(out[members], np.broadcast_to(want, out[members].shape), atol=1e-5)


def test_padded_queries_are_zero_and_do_not_move_the_clusters():
    q, k, v = heads(rng, t=8, s=9)
    lengths = np.array([8, 5], "int32")
    layer = ClusteredAttention(clusters=3)
    out = np.asarray(layer(q, k, v, query_lengths=lengths))
    changed = q.copy()
    changed[1, 5:] = rng.normal(size=changed[1, 5:].shape) * 50
    np.testing.assert_allclose(np.asarray(layer(changed, k, v, query_lengths=lengths)), out, atol=1e-6)
    assert np.all(out[1, 5:] == 0.0)


@pytest.mark.parametrize("clusters", [2, 5])
def test_improved_clustered_with_topk_s_is_full_attention(clusters):
    q, k, v = heads(rng, t=8, s=9)
    out = ImprovedClusteredAttention(clusters=clusters, topk=9)(q, k, v, key_lengths=KEYS)
    np.testing.assert_allclose(np.asarray(out), full_attention(q, k, v, KEY_MASK), atol=1e-5)


@pytest.mark.parametrize("chunk", [3, 16])
def test_improved_causal_with_topk_s_is_causal_full_attention(chunk):
    q, k, v = heads(rng, t=9, s=9)
    out = ImprovedClusteredCausalAttention(clusters=3, topk=9, chunk_size=chunk)(
        q, k, v, attn_mask=TriangularMask(9), key_lengths=KEYS
    )
    want = full_attention(q, k, v, np.tril(np.ones((9, 9), bool))[None] & KEY_MASK)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_improved_causal_small_topk_never_reads_later_values():
    # Clusters and top-k choices look at the whole sequence (as in fast-transformers); what the
    # causal mask guarantees is that no query averages a later value.
    q, k, v = heads(rng, batch=1, t=10, s=10)
    layer = ImprovedClusteredCausalAttention(clusters=2, topk=3, chunk_size=4)
    out = np.asarray(layer(q, k, v, attn_mask=TriangularMask(10)))
    changed_v = v.copy()
    changed_v[:, 6:] += 5.0
    out2 = np.asarray(layer(q, k, changed_v, attn_mask=TriangularMask(10)))
    np.testing.assert_allclose(out2[:, :6], out[:, :6], atol=1e-5)


@pytest.mark.parametrize(
    "cls, init, static",
    [
        (ClusteredAttention, dict(clusters=3, iterations=3, bits=16, hash_bias=False), {}),
        (ImprovedClusteredAttention, dict(clusters=3, topk=4), {}),
        (ImprovedClusteredCausalAttention, dict(clusters=3, topk=4, chunk_size=4), dict(attn_mask=TriangularMask(9))),
    ],
)
def test_contract(cls, init, static, tmp_path):
    q, k, v = heads(rng, t=9, s=9)
    out = check_layer(
        cls, init, args=[q, k, v], kwargs=dict(key_lengths=KEYS), static_kwargs=static, tmp_path=tmp_path,
        expected_trainable=0,
        expected_non_trainable=0,
    )
    assert np.all(np.isfinite(np.asarray(out)))


def test_arbitrary_masks_are_refused_and_empty_key_sets_are_zero():
    q, k, v = heads(rng, t=8, s=9)
    with pytest.raises(NlpkitError, match="cannot honour"):
        ClusteredAttention(clusters=2)(q, k, v, attn_mask=np.ones((8, 9)) * np.eye(8, 9))
    for layer in (ClusteredAttention(clusters=2), ImprovedClusteredAttention(clusters=2, topk=3)):
        out = np.asarray(layer(q, k, v, key_lengths=np.array([0, 9])))
        assert np.all(np.isfinite(out)) and np.all(out[0] == 0.0)
