"""Plain-NumPy reference for ReuseMultiHeadAttention, fed with a layer's own weights."""

import numpy as np

from tests.layers import reference


def _weights(layer):
    """(wq, bq, wk, bk, wv, bv, wo, bo); the query/key ones are None when every head is reused."""
    weights = []
    for dense in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense):
        weights += [None, None] if dense is None else [np.asarray(dense.kernel), np.asarray(dense.bias)]
    return weights


def reuse_attention(layer, query, value, mask, previous, reused):
    """The first `reused` heads' probabilities from `previous` (masked keys set to 0), the rest
    from softmax(q.k / sqrt(H)); then the weighted values and the output projection.
    mask `[B, T, S]` bool. Returns (output `[B, T, D]`, probabilities `[B, N, T, S]`)."""
    wq, bq, wk, bk, wv, bv, wo, bo = _weights(layer)
    heads = [np.where(mask[:, None], previous[:, :reused], 0.0)]
    if wq is not None:
        q, k = reference.dense(query, wq, bq), reference.dense(value, wk, bk)
        logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
        heads.append(reference.softmax(logits, mask[:, None]))
    probs = np.concatenate(heads, axis=1)
    context = np.einsum("bnts,bsnh->btnh", probs, reference.dense(value, wv, bv))
    return np.einsum("btnh,nhd->btd", context, wo) + bo, probs
