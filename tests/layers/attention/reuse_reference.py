"""Plain-NumPy reference for ReuseMultiHeadAttention, fed with a layer's own weights."""

import numpy as np

from tests.layers import reference


def _weights(layer):
    """(wq, bq, wk, bk, wv, bv, wo, bo); the query/key ones are None when every head is reused."""
    weights = []
    for dense in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense):
        weights += [None, None] if dense is None else [np.asarray(dense.kernel), np.asarray(dense.bias)]
    return weights


def relative_position_bias(table, query_length, key_length):
    """`[N', T, S]`: entry (n, t, s) is `table[0, n, L - 1 + clip(s - t, -(L - 1), L - 1)]`,
    for a Model Garden table `[1, N', 2L - 1]` (written out element by element)."""
    table = np.asarray(table)
    largest = (table.shape[-1] - 1) // 2
    bias = np.zeros((table.shape[1], query_length, key_length))
    for t in range(query_length):
        for s in range(key_length):
            bias[:, t, s] = table[0, :, largest + min(max(s - t, -largest), largest)]
    return bias


def reuse_attention(layer, query, value, mask, previous, reused):
    """The first `reused` heads' probabilities from `previous` (masked keys set to 0), the rest
    from softmax(q.k / sqrt(H) + relative position bias, if the layer has one); then the
    weighted values and the output projection.
    mask `[B, T, S]` bool. Returns (output `[B, T, D]`, probabilities `[B, N, T, S]`)."""
    wq, bq, wk, bk, wv, bv, wo, bo = _weights(layer)
    heads = [np.where(mask[:, None], previous[:, :reused], 0.0)]
    if wq is not None:
        q, k = reference.dense(query, wq, bq), reference.dense(value, wk, bk)
        logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
        if layer.use_relative_pe:
            logits = logits + relative_position_bias(layer.relative_position_embeddings, q.shape[1], k.shape[1])
        heads.append(reference.softmax(logits, mask[:, None]))
    probs = np.concatenate(heads, axis=1)
    context = np.einsum("bnts,bsnh->btnh", probs, reference.dense(value, wv, bv))
    return np.einsum("btnh,nhd->btd", context, wo) + bo, probs
