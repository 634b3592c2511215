"""Linear attention ("Transformers are RNNs"): phi(Q) (phi(K)^T V) in O(n) time and memory.

`linear_attention` and the chunked `causal_linear_attention` are plain functions of feature
tensors, shared with KernelAttention.
"""

import keras
from keras import ops

from nlpkit.layers.attention.efficient.base import InnerAttention, key_padding, pad_axis
from nlpkit.layers.attention.efficient.feature_maps import deterministic_feature_map
from nlpkit.layers.attention.efficient.names import register_inner_attention
from nlpkit.layers.masks import causal_mask


def safe_divide(numerator, normaliser):
    """numerator `[..., M]` / normaliser `[...]`; 0 where the normaliser is 0 (no visible key)."""
    normaliser = ops.where(normaliser == 0, 1.0, normaliser)
    return numerator / normaliser[..., None]


def linear_attention(q_features, k_features, values, eps):
    """phi(q) [B,T,N,F], phi(k) [B,S,N,F] (padded keys zeroed), values [B,S,N,M] -> [B,T,N,M].

    A query whose keys are all padding gets 0 (numerator 0, denominator eps).
    """
    kv = ops.einsum("bsnf,bsnm->bnfm", k_features, values)
    normaliser = ops.einsum("btnf,bnf->btn", q_features, ops.sum(k_features, axis=1))
    numerator = ops.einsum("btnf,bnfm->btnm", q_features, kv)
    return safe_divide(numerator, normaliser + eps)


def causal_linear_attention(q_features, k_features, values, eps, chunk_size):
    """Causal linear attention by chunks: query t sees keys s <= t; O(T) memory.

    Within a chunk the (chunk x chunk) products are masked explicitly; across chunks each chunk
    reads the running sums of phi(k) v^T and phi(k) over all earlier chunks (an exclusive
    cumulative sum over chunks), so memory is O(T·C + T/C·F·M) and there is no loop over tokens.
    """
    length = q_features.shape[1]
    chunk = max(1, min(chunk_size, length))
    padded = -(-length // chunk) * chunk
    tensors = [pad_axis(x, 1, 0, padded - length) for x in (q_features, k_features, values)]
    q, k, v = (ops.reshape(x, (-1, padded // chunk, chunk, *x.shape[2:])) for x in tensors)

    chunk_kv = ops.einsum("bjcnf,bjcnm->bjnfm", k, v)
    chunk_k = ops.sum(k, axis=2)
    earlier_kv = ops.cumsum(chunk_kv, axis=1) - chunk_kv
    earlier_k = ops.cumsum(chunk_k, axis=1) - chunk_k
    numerator = ops.einsum("bjcnf,bjnfm->bjcnm", q, earlier_kv)
    normaliser = ops.einsum("bjcnf,bjnf->bjcn", q, earlier_k)

    within = ops.einsum("bjcnf,bjdnf->bjncd", q, k) * ops.cast(causal_mask(chunk), q.dtype)
    numerator = numerator + ops.einsum("bjncd,bjdnm->bjcnm", within, v)
    normaliser = normaliser + ops.transpose(ops.sum(within, axis=-1), (0, 1, 3, 2))
    output = safe_divide(numerator, normaliser + eps)
    return ops.reshape(output, (-1, padded, *output.shape[3:]))[:, :length]


class FeatureMapMixin:
    """A feature map given by name ('elu', 'relu', 'square', 'identity') or as a Keras layer/callable."""

    def _init_feature_map(self, feature_map):
        self.feature_map = "elu" if feature_map is None else feature_map
        if isinstance(self.feature_map, dict):  # a serialised layer, from get_config()
            self.feature_map = keras.saving.deserialize_keras_object(self.feature_map)
        if isinstance(self.feature_map, str):
            self._phi = deterministic_feature_map(self.feature_map)
        else:
            self._phi = self.feature_map

    def features(self, x):
        return ops.cast(self._phi(x), "float32")

    def _feature_map_config(self):
        if isinstance(self.feature_map, str):
            return self.feature_map
        return keras.saving.serialize_keras_object(self.feature_map)


@register_inner_attention("linear")
@keras.saving.register_keras_serializable(package="nlpkit")
class LinearAttention(FeatureMapMixin, InnerAttention):
    """Linear attention: out_t = phi(q_t)·sum_s phi(k_s) v_s^T / phi(q_t)·sum_s phi(k_s).

    Honours key_lengths/query_lengths (padding); rejects any other attention mask.

    Args:
      query_dimensions: H, the query/key head size (optional; kept for the fast-transformers API).
      feature_map: 'elu' (elu+1, default), 'relu', 'square', 'identity', or a Keras layer /
        callable mapping `[..., H]` to positive features `[..., F]`.
      eps: added to the normaliser.

    Call: `layer(queries [B,T,N,H], keys [B,S,N,H], values [B,S,N,M], attn_mask=None,
    query_lengths=None, key_lengths=None)` -> `[B,T,N,M]`.
    """

    supports_attention_masks = False

    def __init__(self, query_dimensions=None, feature_map=None, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.query_dimensions = query_dimensions
        self.eps = eps
        self._init_feature_map(feature_map)

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        self.require_no_attention_mask(attn_mask)
        return linear_attention(self.features(queries), self._key_features(keys, key_lengths), values, self.eps)

    def _key_features(self, keys, key_lengths):
        features = self.features(keys)
        padding = key_padding(key_lengths)
        return features if padding is None else features * padding[:, :, None, None]

    def get_config(self):
        return {
            **super().get_config(),
            "query_dimensions": self.query_dimensions,
            "feature_map": self._feature_map_config(),
            "eps": self.eps,
        }


@register_inner_attention("causal-linear")
@keras.saving.register_keras_serializable(package="nlpkit")
class CausalLinearAttention(LinearAttention):
    """Causal linear attention: query t attends to keys s <= t, by chunked prefix sums (O(T) memory).

    Needs a lower-triangular attn_mask (`TriangularMask`, which AttentionLayer and the registry
    adapter pass) and T = S; honours key_lengths/query_lengths.

    Args:
      query_dimensions, feature_map, eps: as for LinearAttention.
      chunk_size: tokens per chunk; memory grows as T·chunk_size, time is linear in T.

    Call: as LinearAttention; output `[B,T,N,M]`.

    Recurrent decoding (fast-transformers' `RecurrentLinearAttention`): `layer.recurrent(query
    [B,N,H], key [B,N,H], value [B,N,M], state=None)` -> `(output [B,N,M], state)` attends from
    the newest token to it and every token before it; `state` is `[sum phi(k) v^T [B,N,F,M],
    sum phi(k) [B,N,F]]` (None before the first token). Feeding tokens one by one gives the
    batch call's outputs, in O(1) memory per token.
    """

    is_causal = True

    def __init__(self, query_dimensions=None, feature_map=None, eps=1e-6, chunk_size=128, **kwargs):
        super().__init__(query_dimensions=query_dimensions, feature_map=feature_map, eps=eps, **kwargs)
        self.chunk_size = chunk_size

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        self.require_causal_mask(attn_mask, queries.shape[1], keys.shape[1])
        return causal_linear_attention(
            self.features(queries), self._key_features(keys, key_lengths), values, self.eps, self.chunk_size
        )

    def recurrent(self, query, key, value, state=None):
        """One decoding step; see the class docstring. Arguments as fast-transformers names them."""
        dtype = query.dtype
        query, key, value = (ops.cast(x, "float32") for x in (query, key, value))
        q_features, k_features = self.features(query), self.features(key)
        kv = ops.einsum("bnf,bnm->bnfm", k_features, value)
        if state is not None:
            # The state includes the new token before it is read: a token sees itself (s <= t).
            kv, k_features = state[0] + kv, state[1] + k_features
        numerator = ops.einsum("bnf,bnfm->bnm", q_features, kv)
        normaliser = ops.einsum("bnf,bnf->bn", q_features, k_features)
        return ops.cast(safe_divide(numerator, normaliser + self.eps), dtype), [kv, k_features]

    def get_config(self):
        return {**super().get_config(), "chunk_size": self.chunk_size}
