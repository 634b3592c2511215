"""Clustered attention ("Fast Transformers with Clustered Attention"): queries are grouped by
LSH hashing + k-means in Hamming space, and each group attends once, through its centroid.

The clustering is the paper's: each query's hash bits (sides of random hyperplanes, redrawn on
every training call), k-means with Hamming distances and majority-vote bit centroids. keras.ops
has no popcount, so the distances are one exact 0/1 matmul (`hamming_distances`), `[B,N,T,C]`.

ClusteredAttention uses the centroid's attention for every query of the cluster (O(C·S)
memory for C clusters). The improved variants add, for each query, exact attention to its
cluster's `topk` keys (O(T·topk) memory); the causal one keeps every query off later keys.
"""

import keras
from keras import ops

from nlpkit.layers.attention.efficient.base import InnerAttention, gather_rows, key_padding, pad_axis
from nlpkit.layers.attention.efficient.full import SoftmaxAttentionMixin
from nlpkit.layers.attention.efficient.names import register_inner_attention
from nlpkit.layers.masks import causal_mask, masked_softmax


def hash_planes(dim, bits, seed):
    """`[dim + 1, bits]` random hyperplanes (last row: their offsets); `seed` an int or a SeedGenerator."""
    return keras.random.normal((dim + 1, bits), seed=seed)


def hash_bits(queries, planes, hash_bias):
    """queries `[B,T,N,E]`, planes `[E+1, K]` -> 0/1 float bits `[B,N,T,K]` (1 on the positive side).

    With `hash_bias` the planes have random offsets, so the Hamming distance of two codes tracks
    the queries' L2 distance; without it, only their angle.
    """
    dim = queries.shape[-1]
    projections = ops.einsum("btne,ek->bntk", ops.cast(queries, "float32"), planes[:dim])
    if hash_bias:
        projections = projections + planes[dim]
    return ops.stop_gradient(ops.cast(projections > 0, "float32"))


def hamming_distances(bits, centroids):
    """Hamming distances `[B,N,T,C]` of 0/1 bits `[B,N,T,K]` to 0/1 centroids `[B,N,C,K]`.

    keras.ops has bitwise_xor but no popcount, so the distance sum_k b(1-c) + (1-b)c is one matmul
    (|b| + |c| - 2 b.c): exact, since it counts at most K <= 2^24 bits in float32.
    """
    overlap = ops.einsum("bntk,bnck->bntc", bits, centroids)
    return ops.sum(bits, axis=-1)[..., None] + ops.sum(centroids, axis=-1)[:, :, None, :] - 2.0 * overlap


def hamming_kmeans(bits, valid, clusters, iterations):
    """k-means in Hamming space (the paper's clustering): 0/1 bits `[B,N,T,K]`, `[B,T]` valid ->
    cluster index `[B,N,T]` (int32; padded queries get 0 and no weight anywhere).

    As fast-transformers: `iterations` assignment steps, each query to its nearest centroid by
    Hamming distance (the first one on a tie), with a majority vote of the members' bits between
    them (a tie of ones and zeros gives 0). Unlike it, centroids start at evenly spaced real queries
    (with C >= T every query starts as its own centroid) and an empty cluster keeps its centroid
    instead of a random one, so the clustering depends on the queries and the planes only.
    """
    length = bits.shape[2]
    positions = ops.arange(length, dtype="float32")
    order = ops.argsort((1.0 - valid) * length + positions[None, :], axis=-1)  # real queries first
    real = ops.maximum(ops.sum(valid, axis=-1, keepdims=True), 1.0)
    picks = ops.cast(ops.floor(ops.arange(clusters, dtype="float32")[None, :] * real / clusters), "int32")
    starts = ops.take_along_axis(ops.cast(order, "int32"), picks, axis=1)  # [B, C]
    centroids = gather_rows(bits, ops.broadcast_to(starts[:, None, :], (ops.shape(bits)[0], bits.shape[1], clusters)))
    members = valid[:, None, :, None]
    for _ in range(iterations - 1):
        assignment = _one_hot_nearest(bits, centroids, clusters) * members
        counts = ops.sum(assignment, axis=2)[..., None]  # [B,N,C,1]
        ones = ops.einsum("bntc,bntk->bnck", assignment, bits)
        majority = ops.cast(2.0 * ones > counts, "float32")
        centroids = ops.where(counts > 0, majority, centroids)
    nearest = ops.argmin(hamming_distances(bits, centroids), axis=-1)
    return ops.stop_gradient(ops.where(valid[:, None, :] > 0, nearest, 0))


def _one_hot_nearest(bits, centroids, clusters):
    return ops.one_hot(ops.argmin(hamming_distances(bits, centroids), axis=-1), clusters, dtype="float32")


class ClusteringMixin:
    """Arguments and the centroid computation shared by the clustered attentions."""

    supports_attention_masks = False

    def _init_clustering(self, clusters, iterations, bits, hash_bias, seed):
        self.clusters = clusters
        self.iterations = iterations
        self.bits = bits
        self.hash_bias = hash_bias
        self.seed = seed
        # Fresh planes on every training call (as the paper) come from this generator.
        self.seed_generator = keras.random.SeedGenerator(seed)

    def centroid_queries(self, queries, query_lengths, training=False):
        """-> (one-hot assignment `[B,N,T,C]`, centroid queries `[B,N,C,E]`, cluster index `[B,N,T]`)."""
        valid = ops.cast(query_lengths.bool_matrix, "float32")
        valid = ops.broadcast_to(valid, (ops.shape(queries)[0], queries.shape[1]))
        planes = hash_planes(queries.shape[-1], self.bits, self.seed_generator if training else self.seed)
        cluster = hamming_kmeans(hash_bits(queries, planes, self.hash_bias), valid, self.clusters, self.iterations)
        assignment = ops.one_hot(cluster, self.clusters, dtype="float32") * valid[:, None, :, None]
        counts = ops.maximum(ops.sum(assignment, axis=2), 1.0)[..., None]
        centroids = ops.einsum("bntc,btne->bnce", assignment, ops.cast(queries, "float32")) / counts
        return assignment, ops.cast(centroids, queries.dtype), cluster

    def _clustering_config(self):
        return {
            "clusters": self.clusters,
            "iterations": self.iterations,
            "bits": self.bits,
            "hash_bias": self.hash_bias,
            "seed": self.seed,
        }


def _keys_mask(key_lengths):
    """`[B,1,1,S]` bool or None."""
    padding = key_padding(key_lengths)
    return None if padding is None else ops.cast(padding, "bool")[:, None, None, :]


@register_inner_attention("clustered")
@keras.saving.register_keras_serializable(package="nlpkit")
class ClusteredAttention(ClusteringMixin, SoftmaxAttentionMixin, InnerAttention):
    """Every query of a cluster gets its centroid's softmax attention output.

    Honours key_lengths and query_lengths (padded queries are not clustered); rejects any other
    attention mask. Queries are hashed by `bits` random hyperplanes and clustered by k-means in
    Hamming space (`hamming_kmeans`). The planes are drawn afresh on every training call (from a
    SeedGenerator seeded by `seed`, as the paper redraws them) and fixed by `seed` in inference
    (identical outputs on every call).

    Args:
      clusters: C, number of query clusters (fewer or more than T both work).
      iterations: k-means assignment steps (iterations - 1 majority-vote centroid updates between
        them, as fast-transformers counts them).
      bits: hash bits per query.
      hash_bias: random plane offsets (L2-like) instead of angle-only hashing.
      softmax_temp: score scale (default 1/sqrt(H)).
      attention_dropout: dropout rate on the centroids' attention probabilities.
      seed: seed of the hash planes.

    Call: `layer(queries [B,T,N,H], keys [B,S,N,H], values [B,S,N,M], attn_mask=None,
    query_lengths=None, key_lengths=None)` -> `[B,T,N,M]`.
    """

    def __init__(
        self, clusters=100, iterations=10, bits=32, hash_bias=True, softmax_temp=None, attention_dropout=0.0, seed=0, **kwargs
    ):
        super().__init__(**kwargs)
        self._init_clustering(clusters, iterations, bits, hash_bias, seed)
        self._init_softmax(softmax_temp, attention_dropout)

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        self.require_no_attention_mask(attn_mask)
        assignment, centroids, _ = self.centroid_queries(queries, query_lengths, training)
        scores = ops.einsum("bnce,bsne->bncs", centroids, keys) * self.temperature(queries.shape[-1])
        probs = self.probabilities(scores, _keys_mask(key_lengths), training)
        centroid_values = ops.einsum("bncs,bsnm->bncm", probs, values)
        return ops.einsum("bntc,bncm->btnm", assignment, centroid_values)

    def get_config(self):
        return {**super().get_config(), **self._clustering_config(), **self._softmax_config()}


class TopKeysMixin:
    """Exact attention of each query to its cluster's top keys (shared by both improved variants)."""

    def top_keys_per_query(self, weights, cluster, keys, values, key_lengths):
        """weights `[B,N,C,S]` ranks the keys of each cluster. Returns per query `[B,N,T,k]` the
        key indices, their cluster weights, and the gathered keys `[B,N,T,k,E]`, values
        `[B,N,T,k,M]` and key validity `[B,N,T,k]`."""
        top = min(self.topk, keys.shape[1])
        top_weights, top_index = ops.top_k(weights, top)
        shape = (*ops.shape(cluster), top)
        pick = ops.broadcast_to(ops.expand_dims(cluster, -1), shape)
        query_index = ops.take_along_axis(top_index, pick, axis=2)
        query_weights = ops.take_along_axis(top_weights, pick, axis=2)
        keys_t = ops.transpose(keys, (0, 2, 1, 3))
        values_t = ops.transpose(values, (0, 2, 1, 3))
        padding = key_padding(key_lengths)
        if padding is None:
            valid = ops.ones_like(query_weights)
        else:
            padding = ops.broadcast_to(padding[:, None, :, None], (ops.shape(keys)[0], keys.shape[2], keys.shape[1], 1))
            valid = gather_rows(padding, query_index)[..., 0]
        return query_index, query_weights, gather_rows(keys_t, query_index), gather_rows(values_t, query_index), valid

    def exact_top_attention(self, queries, top_keys, top_values, mask, training):
        """`[B,T,N,E]` queries over their `[B,N,T,k,*]` keys/values -> `[B,N,T,M]`."""
        scores = ops.einsum("btne,bntke->bntk", queries, top_keys) * self.temperature(queries.shape[-1])
        probs = self.probabilities(scores, mask, training)
        return ops.einsum("bntk,bntkm->bntm", probs, top_values)


@register_inner_attention("improved-clustered")
@keras.saving.register_keras_serializable(package="nlpkit")
class ImprovedClusteredAttention(TopKeysMixin, ClusteredAttention):
    """Clustered attention plus exact attention to each cluster's `topk` keys.

    For a query in cluster c: out = m_c · softmax_topk(q·k) V_topk + sum over the other keys of
    the centroid's probabilities times V, where m_c is the centroid's probability mass on its
    top-k keys. With topk >= S this is exactly full softmax attention.

    Args:
      clusters, iterations, bits, hash_bias, softmax_temp, attention_dropout, seed: as for
        ClusteredAttention.
      topk: number of keys each cluster attends to exactly.

    Call: as ClusteredAttention; output `[B,T,N,M]`.
    """

    def __init__(
        self,
        clusters=100,
        iterations=10,
        bits=32,
        hash_bias=True,
        topk=32,
        softmax_temp=None,
        attention_dropout=0.0,
        seed=0,
        **kwargs,
    ):
        super().__init__(clusters, iterations, bits, hash_bias, softmax_temp, attention_dropout, seed, **kwargs)
        self.topk = topk

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        self.require_no_attention_mask(attn_mask)
        assignment, centroids, cluster = self.centroid_queries(queries, query_lengths, training)
        scores = ops.einsum("bnce,bsne->bncs", centroids, keys) * self.temperature(queries.shape[-1])
        probs = masked_softmax(scores, _keys_mask(key_lengths), axis=-1)
        _, top_probs, top_keys, top_values, valid = self.top_keys_per_query(probs, cluster, keys, values, key_lengths)
        exact = self.exact_top_attention(queries, top_keys, top_values, valid > 0, training)
        mass = ops.sum(top_probs, axis=-1, keepdims=True)
        # The centroid's attention to all keys, minus its part on the query's top keys.
        centroid_values = ops.einsum("bncs,bsnm->bncm", probs, values)
        rest = ops.einsum("bntc,bncm->bntm", assignment, centroid_values) - ops.einsum(
            "bntk,bntkm->bntm", top_probs, top_values
        )
        return ops.transpose(mass * exact + rest, (0, 2, 1, 3))

    def get_config(self):
        return {**super().get_config(), "topk": self.topk}


def causal_cluster_sums(weights, values, assignment, chunk_size):
    """For each query t of cluster c(t): sum_{s<=t} w[c(t), s] v_s and sum_{s<=t} w[c(t), s].

    weights `[B,N,C,S]`, values `[B,N,S,M]`, assignment one-hot `[B,N,T,C]` with T = S ->
    (`[B,N,T,M]`, `[B,N,T]`). By chunks: running sums over earlier chunks for every cluster
    (O(C·S/chunk·M)) plus the masked product within the query's own chunk (O(T·chunk)).
    """
    length = values.shape[2]
    chunk = max(1, min(chunk_size, length))
    padded = -(-length // chunk) * chunk
    n_chunks = padded // chunk
    w = ops.reshape(pad_axis(weights, 3, 0, padded - length), (-1, weights.shape[1], weights.shape[2], n_chunks, chunk))
    v = ops.reshape(pad_axis(values, 2, 0, padded - length), (-1, values.shape[1], n_chunks, chunk, values.shape[3]))
    a = ops.reshape(pad_axis(assignment, 2, 0, padded - length), (-1, values.shape[1], n_chunks, chunk, weights.shape[2]))

    chunk_wv = ops.einsum("bncjs,bnjsm->bncjm", w, v)
    chunk_w = ops.sum(w, axis=-1)
    earlier_wv = ops.cumsum(chunk_wv, axis=3) - chunk_wv
    earlier_w = ops.cumsum(chunk_w, axis=3) - chunk_w
    own = ops.einsum("bnjtc,bncjs->bnjts", a, w) * ops.cast(causal_mask(chunk), w.dtype)
    sums_wv = ops.einsum("bnjtc,bncjm->bnjtm", a, earlier_wv) + ops.einsum("bnjts,bnjsm->bnjtm", own, v)
    sums_w = ops.einsum("bnjtc,bncj->bnjt", a, earlier_w) + ops.sum(own, axis=-1)
    sums_wv = ops.reshape(sums_wv, (-1, values.shape[1], padded, values.shape[3]))[:, :, :length]
    return sums_wv, ops.reshape(sums_w, (-1, values.shape[1], padded))[:, :, :length]


@register_inner_attention("improved-clustered-causal")
@keras.saving.register_keras_serializable(package="nlpkit")
class ImprovedClusteredCausalAttention(ImprovedClusteredAttention):
    """Causal improved-clustered attention: query t uses only keys s <= t.

    As ImprovedClusteredAttention, with the centroid's distribution renormalised over the keys
    each query may see (by chunked prefix sums, O(T) memory) and top-k keys after t masked.
    Needs a lower-triangular attn_mask (TriangularMask) and T = S. No query averages a later
    value, but (as in fast-transformers) the clusters and each cluster's top-k choice are
    computed over the whole sequence, so this is not an incremental (token-by-token) attention.
    With topk >= S the result is exact causal softmax attention.
    Centroid weights are stabilised by each centroid's largest score.

    Args:
      clusters, iterations, bits, hash_bias, topk, softmax_temp, attention_dropout, seed: as
        for ImprovedClusteredAttention (dropout applies to the exact top-k probabilities).
      chunk_size: chunk length of the prefix sums.

    Call: as ClusteredAttention; output `[B,T,N,M]`.
    """

    is_causal = True

    def __init__(self, *args, chunk_size=128, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunk_size = chunk_size

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        self.require_causal_mask(attn_mask, queries.shape[1], keys.shape[1])
        assignment, centroids, cluster = self.centroid_queries(queries, query_lengths, training)
        scores = ops.einsum("bnce,bsne->bncs", centroids, keys) * self.temperature(queries.shape[-1])
        allowed = _keys_mask(key_lengths)
        allowed = ops.ones_like(scores, "bool") if allowed is None else ops.broadcast_to(allowed, ops.shape(scores))
        peak = ops.stop_gradient(ops.max(ops.where(allowed, scores, -1e9), axis=-1, keepdims=True))
        weights = ops.where(allowed, ops.exp(ops.minimum(scores - peak, 0.0)), 0.0)

        index, top_weights, top_keys, top_values, valid = self.top_keys_per_query(weights, cluster, keys, values, key_lengths)
        positions = ops.arange(queries.shape[1], dtype=index.dtype)[None, None, :, None]
        visible = ops.logical_and(valid > 0, index <= positions)
        exact = self.exact_top_attention(queries, top_keys, top_values, visible, training)

        top_weights = top_weights * ops.cast(visible, "float32")
        sums_wv, sums_w = causal_cluster_sums(weights, ops.transpose(values, (0, 2, 1, 3)), assignment, self.chunk_size)
        total = ops.where(sums_w > 0, sums_w, 1.0)[..., None]
        mass = ops.sum(top_weights, axis=-1, keepdims=True) / total
        rest = (sums_wv - ops.einsum("bntk,bntkm->bntm", top_weights, top_values)) / total
        return ops.transpose(mass * exact + rest, (0, 2, 1, 3))

    def get_config(self):
        return {**super().get_config(), "chunk_size": self.chunk_size}
