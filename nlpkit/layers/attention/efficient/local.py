"""Local (banded) attention: each query sees the `local_context` keys around its own position."""

import keras
from keras import ops

from nlpkit.layers.attention.efficient.base import InnerAttention, key_padding, pad_axis
from nlpkit.layers.attention.efficient.full import SoftmaxAttentionMixin
from nlpkit.layers.attention.efficient.names import register_inner_attention


def _windows(x, block):
    """x `[B, n*block + 2*block, ...]` -> `[B, n, 3*block, ...]`: block j with its two neighbours."""
    blocks = ops.reshape(x, (-1, x.shape[1] // block, block, *x.shape[2:]))
    return ops.concatenate([blocks[:, :-2], blocks[:, 1:-1], blocks[:, 2:]], axis=2)


@register_inner_attention("local")
@keras.saving.register_keras_serializable(package="nlpkit")
class LocalAttention(SoftmaxAttentionMixin, InnerAttention):
    """Softmax attention restricted to a band: query t sees keys s with
    t - local_context//2 <= s < t - local_context//2 + local_context (clipped to [0, S)).

    Computed by blocks of `max(local_context//2, 1)` queries, each against its own and the two
    neighbouring key blocks, so memory is O(T·local_context), never a dense T x S matrix.
    Honours every mask: lower-triangular masks structurally, other attention masks by reading
    only their band.

    Args:
      local_context: width of the band (number of keys a query may see).
      softmax_temp: score scale (default 1/sqrt(H)).
      attention_dropout: dropout rate on the attention probabilities.

    Call: `layer(queries [B,T,N,H], keys [B,S,N,H], values [B,S,N,M], attn_mask=None,
    query_lengths=None, key_lengths=None)` -> `[B,T,N,M]`; query t is at position t of the keys.
    """

    def __init__(self, local_context=32, softmax_temp=None, attention_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.local_context = local_context
        self._init_softmax(softmax_temp, attention_dropout)

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        length_t, length_s = queries.shape[1], keys.shape[1]
        left = self.local_context // 2
        right = self.local_context - left - 1
        block = max(left, right, 1)
        n_blocks = -(-max(length_t, length_s) // block)
        padded = n_blocks * block

        q = ops.reshape(pad_axis(queries, 1, 0, padded - length_t), (-1, n_blocks, block, *queries.shape[2:]))
        k = _windows(pad_axis(keys, 1, block, padded + block - length_s), block)
        v = _windows(pad_axis(values, 1, block, padded + block - length_s), block)

        # Positions of the queries [n, C, 1] and of the keys in each window [n, 1, 3C].
        q_pos = ops.reshape(ops.arange(padded, dtype="int32"), (n_blocks, block, 1))
        k_pos = (ops.arange(n_blocks, dtype="int32") * block - block)[:, None, None] + ops.arange(3 * block, dtype="int32")
        mask = (k_pos >= q_pos - left) & (k_pos <= q_pos + right) & (k_pos >= 0) & (k_pos < length_s)
        if attn_mask.lower_triangular:
            mask = mask & (k_pos <= q_pos)
        mask = ops.expand_dims(mask, 0)
        if not attn_mask.all_ones and not attn_mask.lower_triangular:
            mask = mask & self._band_of(attn_mask.attention_mask, n_blocks, block, length_t, length_s)
        padding = key_padding(key_lengths)
        if padding is not None:
            keys_mask = _windows(pad_axis(ops.cast(padding, "bool"), 1, block, padded + block - length_s, False), block)
            mask = mask & keys_mask[:, :, None, :]

        scores = ops.einsum("bjcnh,bjknh->bjnck", q, k) * self.temperature(queries.shape[-1])
        probs = self.probabilities(scores, ops.expand_dims(mask, 2), training)
        output = ops.einsum("bjnck,bjknm->bjcnm", probs, v)
        return ops.reshape(output, (-1, padded, *output.shape[3:]))[:, :length_t]

    @staticmethod
    def _band_of(attention_mask, n_blocks, block, length_t, length_s):
        """The entries of a dense `[B, T, S]` mask inside each query's window -> `[B, n, C, 3C]`."""
        padded = n_blocks * block
        mask = ops.broadcast_to(attention_mask, (ops.shape(attention_mask)[0], length_t, length_s))
        mask = pad_axis(mask, 1, 0, padded - length_t, False)
        mask = pad_axis(mask, 2, block, padded + block - length_s, False)
        starts = ops.repeat(ops.arange(n_blocks, dtype="int32") * block, block)
        index = starts[:, None] + ops.arange(3 * block, dtype="int32")[None, :]
        band = ops.take_along_axis(mask, ops.broadcast_to(index[None], (mask.shape[0], padded, 3 * block)), axis=2)
        return ops.reshape(band, (-1, n_blocks, block, 3 * block))

    def get_config(self):
        return {**super().get_config(), "local_context": self.local_context, **self._softmax_config()}
