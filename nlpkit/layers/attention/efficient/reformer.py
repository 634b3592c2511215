"""Reformer attention ("Reformer: The Efficient Transformer"): shared query/key LSH buckets.

Queries are hashed with random hyperplanes, sorted by bucket, cut into chunks, and each query
attends to the (normalised) queries of its chunk: O(T·chunk_size) memory per hashing round.
"""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient.base import InnerAttention, gather_rows, key_padding, pad_axis
from nlpkit.layers.attention.efficient.full import SoftmaxAttentionMixin
from nlpkit.layers.attention.efficient.names import register_inner_attention

# Subtracted from a query's score for itself when `masked`: it then attends to itself only if
# nothing else in its chunk is allowed (a hard mask would leave such a query with no key).
_SELF_PENALTY = 1e5


def _unsort(sorted_values, inverse):
    """`[B,N,R,P,*]` values in bucket order -> original order, with `inverse` `[B,N,R,P]`."""
    rounds, length = inverse.shape[2], inverse.shape[3]
    flat = ops.reshape(sorted_values, (-1, sorted_values.shape[1], rounds * length, sorted_values.shape[-1]))
    offsets = (ops.arange(rounds, dtype="int32") * length)[None, None, :, None]
    return gather_rows(flat, ops.cast(inverse, "int32") + offsets)


@register_inner_attention("reformer")
@keras.saving.register_keras_serializable(package="nlpkit")
class ReformerAttention(SoftmaxAttentionMixin, InnerAttention):
    """LSH attention with shared queries and keys.

    The keys are the queries themselves, scaled to unit length (shared-QK, as in Reformer), so
    the `keys` argument only has to match the queries' shape. Each of `rounds` hashings sorts
    the positions by bucket (then position), splits them into chunks of `chunk_size`, and
    attends within each chunk and, with `look_back`, the chunk before it (the first chunk has
    none), as fast-transformers does; the rounds are combined weighted by each round's softmax
    normaliser. Honours key_lengths/query_lengths and `attn_mask` (`[T, T]` or `[B, T, T]`,
    applied to the pairs that share a chunk, as in fast-transformers; a `TriangularMask` is
    applied from positions, without a T x T tensor). A query that sees no key gets 0.

    Args:
      chunk_size: positions per chunk (a shorter input is one chunk).
      bits: hash bits (2**bits buckets).
      rounds: independent hashing rounds.
      masked: a query does not attend to itself unless nothing else is allowed.
      look_back: each chunk also attends to the previous chunk, as fast-transformers always does
        (default False: within chunks only, as nlpkit did before, so saved models keep their outputs).
      softmax_temp: score scale (default 1/sqrt(H)).
      attention_dropout: dropout rate on the attention probabilities.
      seed: seed of the hash planes (fixed: identical outputs on every call).

    Call: `layer(queries [B,T,N,H], keys [B,T,N,H], values [B,T,N,M], attn_mask=None,
    query_lengths=None, key_lengths=None)` -> `[B,T,N,M]`.
    """

    supports_attention_masks = False

    def __init__(
        self, chunk_size=32, bits=8, rounds=4, masked=True, softmax_temp=None, attention_dropout=0.0, seed=0,
        look_back=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.look_back = look_back
        self.chunk_size = chunk_size
        self.bits = bits
        self.rounds = rounds
        self.masked = masked
        self.seed = seed
        self._init_softmax(softmax_temp, attention_dropout)

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        if tuple(keys.shape[1:]) != tuple(queries.shape[1:]):
            raise NlpkitError(
                f"ReformerAttention shares queries and keys, so keys must have the queries' shape; "
                f"got {tuple(queries.shape)} and {tuple(keys.shape)}",
                hint="use it for self-attention",
            )
        length, heads, dim = queries.shape[1], queries.shape[2], queries.shape[3]
        chunk = max(1, min(self.chunk_size, length))
        padded = -(-length // chunk) * chunk
        q = pad_axis(ops.transpose(queries, (0, 2, 1, 3)), 2, 0, padded - length)
        k = q / ops.maximum(ops.norm(q, axis=-1, keepdims=True), 1e-6)
        v = pad_axis(ops.transpose(values, (0, 2, 1, 3)), 2, 0, padded - length)
        valid = ops.arange(padded)[None, :] < length
        padding = key_padding(key_lengths)
        if padding is not None:
            valid = ops.logical_and(valid, pad_axis(padding > 0, 1, 0, padded - length, False))
        valid = ops.broadcast_to(ops.cast(valid, "float32")[:, None, :, None], (ops.shape(q)[0], heads, padded, 1))

        order, inverse = self._bucket_order(q, valid[..., 0], padded)
        qs, ks, vs, valid_s = (gather_rows(x, order) for x in (q, k, v, valid))
        # Batch, heads, rounds and chunks fold into one axis: the scores stay rank 3, since
        # TensorFlow's oneDNN CPU kernels (softmax among them) refuse tensors of rank > 5.
        qs = ops.reshape(qs, (-1, chunk, qs.shape[-1]))
        ks, vs, valid_k = (self._chunk_keys(x, chunk) for x in (ks, vs, valid_s))
        query_position = ops.reshape(order, (-1, chunk, 1))
        key_position = ops.reshape(self._chunk_keys(order[..., None], chunk), (-1, 1, ks.shape[1]))
        allowed = ops.reshape(valid_k, (-1, 1, ks.shape[1])) > 0
        allowed = ops.logical_and(allowed, self._attn_mask_pairs(attn_mask, order, query_position, key_position, length))

        scores = ops.einsum("xie,xje->xij", qs, ks) * self.temperature(dim)
        if self.masked:
            scores = scores - _SELF_PENALTY * ops.cast(query_position == key_position, "float32")
        probs = self.probabilities(scores, allowed, training)
        outputs = ops.einsum("xij,xjm->xim", probs, vs)
        outputs = _unsort(ops.reshape(outputs, (-1, heads, self.rounds * padded, outputs.shape[-1])), inverse)
        normaliser = _unsort(ops.reshape(self._log_normaliser(scores, allowed), (-1, heads, self.rounds * padded, 1)), inverse)
        round_weights = ops.softmax(normaliser, axis=2)  # [B, N, R, P, 1]
        output = ops.sum(round_weights * outputs, axis=2)[:, :, :length]
        return ops.transpose(output, (0, 2, 1, 3))

    def _chunk_keys(self, x, chunk):
        """Sorted `[B,N,R,P,E]` -> the keys of each chunk `[X, K, E]`: its own `chunk` positions,
        after those of the previous chunk (zeros, never allowed, before the first) when `look_back`."""
        x = ops.reshape(x, (-1, x.shape[3] // chunk, chunk, x.shape[-1]))
        if self.look_back:
            x = ops.concatenate([pad_axis(x, 1, 1, 0)[:, :-1], x], axis=2)
        return ops.reshape(x, (-1, x.shape[2], x.shape[-1]))

    @staticmethod
    def _attn_mask_pairs(attn_mask, order, query_position, key_position, length):
        """Whether attn_mask lets each query `[X, C, 1]` see each key of its chunk `[X, 1, K]`."""
        if tuple(attn_mask.shape) != (length, length):
            raise NlpkitError(
                f"ReformerAttention takes an attn_mask of [T, T] = [{length}, {length}], got {tuple(attn_mask.shape)}",
                hint="it is self-attention: the mask is queries x the same positions",
            )
        if attn_mask.all_ones:
            return True
        if attn_mask.lower_triangular:
            return key_position <= query_position
        padded = order.shape[-1]
        matrix = pad_axis(pad_axis(attn_mask.attention_mask, 1, 0, padded - length, False), 2, 0, padded - length, False)
        matrix = ops.broadcast_to(matrix, (ops.shape(order)[0], padded, padded))
        # Row of (sample, query) in the flattened [B * P, P] mask, for every sorted slot.
        sample = ops.arange(ops.shape(order)[0], dtype="int32")[:, None, None, None]
        rows = ops.reshape(order + sample * padded, (-1, query_position.shape[1], 1))
        return ops.take(ops.reshape(matrix, (-1,)), rows * padded + key_position)

    def _bucket_order(self, q, valid, padded):
        """Per round, the positions sorted by (bucket, position) and its inverse, `[B,N,R,P]`.

        Padded positions go last so they fill the final chunk."""
        planes = keras.random.normal((self.rounds, q.shape[-1], self.bits), seed=self.seed)
        bits = ops.cast(ops.einsum("bnpe,reh->bnrph", q, planes) > 0, "int32")
        buckets = ops.sum(bits * (2 ** ops.arange(self.bits, dtype="int32")), axis=-1)
        buckets = ops.where(valid[:, :, None, :] > 0, buckets, 2**self.bits)
        order = ops.argsort(buckets * padded + ops.arange(padded, dtype="int32"), axis=-1)
        return ops.cast(order, "int32"), ops.cast(ops.argsort(order, axis=-1), "int32")

    @staticmethod
    def _log_normaliser(scores, allowed):
        """log sum exp of the allowed scores per query (-1e9 when none is allowed)."""
        peak = ops.max(ops.where(allowed, scores, -1e9), axis=-1, keepdims=True)
        total = ops.sum(ops.where(allowed, ops.exp(scores - peak), 0.0), axis=-1, keepdims=True)
        return ops.where(total > 0, peak + ops.log(ops.maximum(total, 1e-30)), -1e9)

    def get_config(self):
        return {
            **super().get_config(),
            "chunk_size": self.chunk_size,
            "bits": self.bits,
            "rounds": self.rounds,
            "masked": self.masked,
            "seed": self.seed,
            "look_back": self.look_back,
            **self._softmax_config(),
        }
