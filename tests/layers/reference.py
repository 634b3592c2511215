"""Plain-NumPy references shared by layer tests (independent of nlpkit's code)."""

import numpy as np


def softmax(x, mask=None, axis=-1):
    """Softmax with masked entries 0 and fully masked rows all 0."""
    x = np.asarray(x, np.float64)
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    e = np.exp(x - peak)
    total = np.sum(e, axis=axis, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)


def dense(x, kernel, bias=None):
    """x @ kernel over the last axis of x and the leading axes of kernel (Keras EinsumDense layouts)."""
    out = np.tensordot(x, kernel, axes=([x.ndim - 1], [0]))
    return out if bias is None else out + bias


def multi_head_attention(query, value, wq, bq, wk, bk, wv, bv, wo, bo, mask=None, key=None):
    """Reference MHA. wq/wk/wv: [D, N, H]; wo: [N, H, D_out]; mask [B, T, S]. Returns (out, probs)."""
    key = value if key is None else key
    q = dense(query, wq, bq)  # [B, T, N, H]
    k = dense(key, wk, bk)
    v = dense(value, wv, bv)
    scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    probs = softmax(scores, None if mask is None else mask[:, None].astype(bool))
    context = np.einsum("bnts,bsnh->btnh", probs, v)
    out = np.einsum("btnh,nhd->btd", context, wo) + (0 if bo is None else bo)
    return out, probs


def mha_weights(layer):
    """(wq, bq, wk, bk, wv, bv, wo, bo) as NumPy arrays from a built (nlpkit/Keras) MultiHeadAttention."""
    parts = []
    for dense_layer in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense):
        parts.append(np.asarray(dense_layer.kernel))
        parts.append(np.asarray(dense_layer.bias) if dense_layer.bias is not None else None)
    return parts
