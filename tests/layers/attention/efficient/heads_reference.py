"""NumPy references for attention on already projected heads (independent of nlpkit's code)."""

import numpy as np

from tests.layers import reference


def full_attention(queries, keys, values, mask=None, temp=None):
    """queries [B,T,N,H], keys [B,S,N,H], values [B,S,N,M], mask broadcastable to [B,T,S] -> [B,T,N,M]."""
    temp = 1.0 / np.sqrt(queries.shape[-1]) if temp is None else temp
    scores = np.einsum("btnh,bsnh->bnts", queries.astype(np.float64), keys.astype(np.float64)) * temp
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, bool), (queries.shape[0], queries.shape[1], keys.shape[1]))[:, None]
    probs = reference.softmax(scores, mask)
    return np.einsum("bnts,bsnm->btnm", probs, values.astype(np.float64))


def linear_attention_quadratic(q_features, k_features, values, mask=None, eps=1e-6):
    """phi(q) [B,T,N,F], phi(k) [B,S,N,F]: out_t = sum_s m_ts (phi_t·phi_s) v_s / (sum_s m_ts phi_t·phi_s + eps)."""
    similarity = np.einsum("btnf,bsnf->bnts", q_features.astype(np.float64), k_features.astype(np.float64))
    if mask is not None:
        similarity = similarity * np.asarray(mask, np.float64)[:, None] if np.ndim(mask) == 3 else similarity * mask
    numerator = np.einsum("bnts,bsnm->btnm", similarity, values.astype(np.float64))
    return numerator / (np.transpose(similarity.sum(-1), (0, 2, 1))[..., None] + eps)


def elu_plus_one(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def band_mask(length_t, length_s, local_context):
    """[T, S]: query t sees s in [t - ctx//2, t - ctx//2 + ctx)."""
    t = np.arange(length_t)[:, None]
    s = np.arange(length_s)[None, :]
    start = t - local_context // 2
    return (s >= start) & (s < start + local_context)


def heads(rng, batch=2, t=7, s=7, n=2, h=4, m=3):
    q = rng.normal(size=(batch, t, n, h)).astype("float32")
    k = rng.normal(size=(batch, s, n, h)).astype("float32")
    v = rng.normal(size=(batch, s, n, m)).astype("float32")
    return q, k, v
