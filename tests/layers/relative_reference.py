"""Plain-NumPy references for relative-position attention and Transformer-XL blocks.

Written from the papers' formulas with explicit loops over query i and key j, independent of
nlpkit's vectorised relative shift. Encoding rows hold the distances S, S-1, ..., -T+1 (S keys
including memory, T queries that are the last T keys), so distance d sits in row S - d.
"""

import numpy as np

from tests.layers.reference import dense, softmax


def sinusoid(distances, hidden_size):
    """`[..., L]` -> `[..., L, hidden]`: sin(d w_k) in the first half, cos(d w_k) in the second."""
    distances = np.asarray(distances, np.float64)
    out = np.zeros(distances.shape + (hidden_size,))
    half = hidden_size // 2
    for k in range(half):
        frequency = 1.0 / 10000 ** (2 * k / hidden_size)
        out[..., k] = np.sin(distances * frequency)
        out[..., half + k] = np.cos(distances * frequency)
    return out


def relative_weights(layer):
    """Kernels/biases of a built MultiHeadRelativeAttention as a dict of NumPy arrays (None = no bias)."""

    def bias(d):
        return None if d.bias is None else np.asarray(d.bias)

    weights = {}
    projections = (("q", layer.query_dense), ("k", layer.key_dense), ("v", layer.value_dense), ("o", layer.output_dense))
    for name, d in projections:
        weights[f"w{name}"], weights[f"b{name}"] = np.asarray(d.kernel), bias(d)
    weights["wr"] = np.asarray(layer.encoding_dense.kernel)
    return weights


def relative_scores(q, k, r, content_bias=None, position_bias=None, segment=None):
    """Scaled scores `[B, N, T, S]` from projected q `[B,T,N,H]`, k `[B,S,N,H]`, r `[B,S+T,N,H]`.

    segment: None or (segment_matrix `[B, T, S]`, segment_encoding `[2, N, H]`, segment_bias `[N, H]`).
    """
    batch, query_length, heads, head_size = q.shape
    key_length = k.shape[1]
    u = 0.0 if content_bias is None else content_bias
    v = 0.0 if position_bias is None else position_bias
    scores = np.zeros((batch, heads, query_length, key_length))
    for i in range(query_length):
        for j in range(key_length):
            distance = i + key_length - query_length - j
            row = key_length - distance
            total = np.sum((q[:, i] + u) * k[:, j], -1) + np.sum((q[:, i] + v) * r[:, row], -1)
            if segment is not None:
                matrix, encoding, bias = segment
                chosen = np.where(matrix[:, i, j, None, None].astype(bool), encoding[1], encoding[0])
                total = total + np.sum((q[:, i] + (0.0 if bias is None else bias)) * chosen, -1)
            scores[:, :, i, j] = total
    return scores / np.sqrt(head_size)


def relative_attention(
    query, value, encoding, w, biases=(None, None), state=None, segment=None, mask=None, query_input=None
):
    """Reference Transformer-XL attention output `[B, T, D]` and probabilities `[B, N, T, S]`.

    `query_input` (default `query`) is what the query projection sees: the query stream for XLNet,
    while keys/values always come from memory + `value`.
    """
    keys = value if state is None else np.concatenate([state, value], 1)
    q = dense(query if query_input is None else query_input, w["wq"], w["bq"])
    k, v = dense(keys, w["wk"], w["bk"]), dense(keys, w["wv"], w["bv"])
    r = dense(encoding, w["wr"])
    scores = relative_scores(q, k, r, biases[0], biases[1], segment)
    probs = softmax(scores, None if mask is None else np.asarray(mask)[:, None].astype(bool))
    context = np.einsum("bnts,bsnh->btnh", probs, v)
    out = np.einsum("btnh,nhd->btd", context, w["wo"]) + (0.0 if w["bo"] is None else w["bo"])
    return out, probs


def layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta
