"""KernelAttention's feature transforms and its dense (masked) kernel form.

`kernel_features` maps scaled queries and keys `[B, L, N, H]` to phi(q), phi(k) for every
`feature_transform`; `split_attention_mask` sorts a mask into what the O(n) path honours
(key padding, query padding x key padding) and what it cannot (any other `[B, T, S]` mask),
which `masked_kernel_attention`, the quadratic form, honours exactly.
"""

import math

from keras import ops

from nlpkit.errors import NlpkitError

from nlpkit.layers.attention.efficient.feature_maps import (
    DETERMINISTIC_FEATURE_MAPS,
    _positive_feature_pair,
    exp_features_without_projection,
    expplus_features,
    favor_features,
)
from nlpkit.layers.attention.efficient.linear import safe_divide
from nlpkit.layers.attention.efficient.masks import concrete_value, factorize_padding

# Transforms that use the random projection when num_random_features > 0.
RANDOM_FEATURE_TRANSFORMS = ("exp", "expplus", "expmod")
FEATURE_TRANSFORMS = (*DETERMINISTIC_FEATURE_MAPS, *RANDOM_FEATURE_TRANSFORMS)
# Transforms whose features depend on statistics of the whole sequence.
NON_CAUSAL_TRANSFORMS = ("expplus",)


def expmod_features(queries, keys, projection=None):
    """Model Garden's 'expmod': phi(x) = exp(w·x - sqrt(H)/2) / sqrt(m).

    Unlike 'exp' there is no -|x|²/2 term, so phi(q)·phi(k) estimates exp(|q + k|²/2)-like
    similarities rather than exp(q·k). Without a projection (`projection=None`) w·x is the head
    coordinate x_h itself. The per-query max is taken out of the query exponent (it cancels in
    the attention ratio); the key features use only the fixed shift sqrt(H)/2 (Model Garden's
    constant), so a key's features never depend on another token (causal and streaming calls
    equal the batch call); the price is that w·k is unbounded: a key with w·k above about 88
    overflows float32 (Model Garden's batch-wide max shift would avoid that but makes a token's
    features depend on later tokens). Returns (phi(queries), phi(keys)).
    """

    def exponent(x):
        return x if projection is None else ops.einsum("blnh,mh->blnm", x, projection)

    return _positive_feature_pair(exponent(queries), exponent(keys), 0.5 * math.sqrt(queries.shape[-1]))


def kernel_features(feature_transform, queries, keys, projection):
    """(phi(queries), phi(keys)) float32; `projection` `[m, H]` or None (no random projection)."""
    if feature_transform in DETERMINISTIC_FEATURE_MAPS:
        phi = DETERMINISTIC_FEATURE_MAPS[feature_transform]
        return phi(queries), phi(keys)
    if feature_transform == "expmod":
        return expmod_features(queries, keys, projection)
    if projection is None:
        return exp_features_without_projection(queries, keys)  # 'expplus' without projection is refused
    if feature_transform == "exp":
        return favor_features(queries, keys, projection)
    return expplus_features(queries, keys, projection)


def masked_kernel_attention(q_features, k_features, values, weights, eps):
    """out_t = sum_s w_ts phi(q_t)·phi(k_s) v_s / (sum_s w_ts phi(q_t)·phi(k_s) + eps).

    phi(q) `[B, T, N, F]`, phi(k) `[B, S, N, F]`, values `[B, S, N, M]`, weights `[B or 1, T, S]`
    (the mask times any positional weights). Costs `[B, N, T, S]` memory, as a dense mask does.
    """
    similarity = ops.einsum("btnf,bsnf->bnts", q_features, k_features) * weights[:, None]
    numerator = ops.einsum("bnts,bsnm->btnm", similarity, values)
    normaliser = ops.transpose(ops.sum(similarity, axis=-1), (0, 2, 1))
    return safe_divide(numerator, normaliser + eps)


def split_attention_mask(attention_mask):
    """`[B, 1, S]` or `[B, T, S]` mask -> (query padding `[B, T]`, key padding `[B, S]`, dense `[B, T, S]`).

    Key padding (one row) and, when the values are known, query padding x key padding come
    back factorised (the O(n) path, dense None); any other mask comes back as `dense`.
    """
    if attention_mask is None:
        return None, None, None
    mask = ops.cast(attention_mask, "bool")
    if len(mask.shape) != 3:
        raise NlpkitError(
            f"KernelAttention: attention_mask must be [B, S] or [B, T, S], got shape {tuple(mask.shape)}",
            hint="pass a key padding mask [B, S] or an attention mask [B, T, S] (1 = may attend)",
        )
    if mask.shape[1] == 1:
        return None, mask[:, 0], None
    if concrete_value(mask) is not None:
        try:
            return (*factorize_padding(mask), None)
        except NlpkitError:
            pass  # not a padding mask: the dense path below honours it exactly
    return None, None, mask
