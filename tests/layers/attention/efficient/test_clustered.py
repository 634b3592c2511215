"""Clustered attentions: exact limits (one cluster per query, topk = S) and the centroid rule."""

import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient import (
    ClusteredAttention,
    ImprovedClusteredAttention,
    ImprovedClusteredCausalAttention,
    TriangularMask,
)
from nlpkit.layers.attention.efficient.clustered import hamming_kmeans, hash_bits
from tests.layers.attention.efficient.heads_reference import full_attention, heads
from tests.layers.harness import check_layer
from tests.layers.model_garden_config import assert_config_holds_arguments

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


# The paper's clustering (issue #18): Hamming k-means on hash bits, planes redrawn per training call.
def numpy_popcount_kmeans(bits, valid, clusters, iterations):
    """Brute force on packed integer codes: popcount(a ^ b) distances, majority-vote bit centroids.

    Same rules as the layer: centroids start at evenly spaced real queries, `iterations` assignment
    steps, the first nearest centroid on a tie, a 0 bit on a tied vote, empty clusters keep theirs.
    """
    batch, heads, length, width = bits.shape
    codes = (bits.astype(np.int64) << np.arange(width)).sum(-1)
    result = np.zeros((batch, heads, length), np.int64)
    for b in range(batch):
        real = np.flatnonzero(valid[b])
        starts = real[np.arange(clusters) * len(real) // clusters]
        for n in range(heads):
            centroids = [int(c) for c in codes[b, n, starts]]

            def assign():
                return np.array([
                    min(range(clusters), key=lambda c: (bin(int(codes[b, n, t]) ^ centroids[c]).count("1"), c))
                    for t in real
                ])

            for _ in range(iterations - 1):
                nearest = assign()
                for c in range(clusters):
                    members = [int(code) for code in codes[b, n, real[nearest == c]]]
                    if members:
                        ones = [sum(code >> k & 1 for code in members) for k in range(width)]
                        centroids[c] = sum(1 << k for k in range(width) if 2 * ones[k] > len(members))
            result[b, n, real] = assign()
    return result


@pytest.mark.parametrize("iterations", [1, 2, 6])
@pytest.mark.parametrize("width,clusters", [(6, 3), (12, 5), (40, 4)])
def test_hamming_kmeans_equals_numpy_popcount_kmeans(iterations, width, clusters):
    local = np.random.default_rng(width * 10 + iterations)
    bits = local.integers(0, 2, size=(2, 3, 17, width)).astype("float32")
    valid = np.ones((2, 17), "float32")
    valid[1, 11:] = 0
    got = np.asarray(hamming_kmeans(bits, valid, clusters, iterations))
    np.testing.assert_array_equal(got, numpy_popcount_kmeans(bits, valid, clusters, iterations))


@pytest.mark.parametrize("hash_bias", [True, False])
def test_hash_bits_are_the_sides_of_the_planes(hash_bias):
    queries = rng.normal(size=(2, 7, 3, 5)).astype("float32")
    planes = rng.normal(size=(6, 16)).astype("float32")
    projections = np.einsum("btne,ek->bntk", queries, planes[:5]) + (planes[5] if hash_bias else 0.0)
    np.testing.assert_array_equal(np.asarray(hash_bits(queries, planes, hash_bias)), projections > 0)


def test_planes_are_redrawn_per_training_call_and_fixed_in_inference():
    q, k, v = heads(rng, batch=1, t=16, s=9, n=2)
    layer = ClusteredAttention(clusters=3, bits=8, seed=5)
    trained = [np.asarray(layer(q, k, v, training=True)) for _ in range(4)]
    assert any(not np.allclose(out, trained[0]) for out in trained[1:])
    inference = np.asarray(layer(q, k, v))
    np.testing.assert_array_equal(np.asarray(layer(q, k, v, training=False)), inference)
    np.testing.assert_array_equal(np.asarray(ClusteredAttention(clusters=3, bits=8, seed=5)(q, k, v)), inference)
    # In inference the queries are clustered on the planes `seed` gives.
    planes = np.asarray(keras.random.normal((q.shape[-1] + 1, 8), seed=5))
    bits = np.einsum("btne,ek->bntk", q, planes[:-1]) + planes[-1] > 0
    cluster = numpy_popcount_kmeans(bits.astype("float32"), np.ones((1, 16)), 3, layer.iterations)
    for n in range(2):
        for c in set(cluster[0, n]):
            members = cluster[0, n] == c
            want = full_attention(q[:, members, n : n + 1].mean(axis=1, keepdims=True), k[:, :, n : n + 1], v[:, :, n : n + 1])
            np.testing.assert_allclose(inference[0, members, n], np.broadcast_to(want[0, 0, 0], (members.sum(), v.shape[-1])), atol=1e-5)


def test_built_from_fast_transformers_arguments():
    fast_transformers = {"clusters": 4, "iterations": 10, "bits": 63, "hash_bias": True, "softmax_temp": 0.5,
                         "attention_dropout": 0.1}
    for cls, extra in [(ClusteredAttention, {}), (ImprovedClusteredAttention, {"topk": 32})]:
        assert_config_holds_arguments(cls(**fast_transformers, **extra), {**fast_transformers, **extra})
