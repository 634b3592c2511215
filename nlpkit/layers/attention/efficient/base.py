"""What every inner attention shares: the call contract, mask normalisation, small tensor helpers.

An inner attention computes a weighted average of values from queries and keys that are already
projected to heads: `inner(queries [B,T,N,H], keys [B,S,N,H], values [B,S,N,M], attn_mask=None,
query_lengths=None, key_lengths=None)` -> `[B,T,N,M]`. Masks (by keyword or, as in
fast-transformers, positionally) may be mask objects
(`FullMask`, `TriangularMask`, `LengthMask`) or plain arrays; outputs at padded query positions
are zero. Accumulation is float32; the result has the queries' dtype.
"""

import math

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient.masks import as_attn_mask, as_length_mask


_MASK_ARGUMENTS = ("attn_mask", "query_lengths", "key_lengths")


class PositionalMasksMixin:
    """Accepts the masks positionally, `layer(q, k, v, attn_mask, query_lengths, key_lengths)`,
    as fast-transformers code calls it: Keras takes only tensors positionally, so they are
    passed on by keyword."""

    def __call__(self, queries, keys, values, *masks, **kwargs):
        if len(masks) > len(_MASK_ARGUMENTS):
            raise NlpkitError(
                f"{type(self).__name__} takes at most {3 + len(_MASK_ARGUMENTS)} positional arguments, got {3 + len(masks)}",
                hint="call it as layer(queries, keys, values, attn_mask, query_lengths, key_lengths)",
            )
        for name, mask in zip(_MASK_ARGUMENTS, masks):
            if name in kwargs:
                raise NlpkitError(f"{type(self).__name__} got {name} both positionally and by keyword", hint="pass it once")
            kwargs[name] = mask
        return super().__call__(queries, keys, values, **kwargs)


class InnerAttention(PositionalMasksMixin, keras.layers.Layer):
    """Base class: normalises masks, zeroes padded queries, casts back to the input dtype.

    Subclasses implement `attend(queries, keys, values, attn_mask, query_lengths, key_lengths,
    training)` on float32 tensors with mask objects. Class attributes tell the projections layer
    what the attention can honour: `supports_attention_masks` (arbitrary `[B,T,S]` masks; if
    False, only all-ones or the kind named by `is_causal`), `is_causal` (needs a lower-triangular
    mask).
    """

    supports_attention_masks = True
    is_causal = False

    def call(self, queries, keys, values, attn_mask=None, query_lengths=None, key_lengths=None, training=None):
        if len(queries.shape) != 4 or len(keys.shape) != 4 or len(values.shape) != 4:
            raise NlpkitError(
                f"{type(self).__name__} takes queries [B,T,N,H], keys [B,S,N,H], values [B,S,N,M]; "
                f"got ranks {len(queries.shape)}, {len(keys.shape)}, {len(values.shape)}",
                hint="call it through AttentionLayer, which projects [B,T,D] inputs to heads",
            )
        length_t, length_s = queries.shape[1], keys.shape[1]
        attn_mask = as_attn_mask(attn_mask, length_t, length_s)
        query_lengths = as_length_mask(query_lengths, length_t)
        key_lengths = as_length_mask(key_lengths, length_s)
        dtype = queries.dtype
        queries, keys, values = (ops.cast(x, "float32") for x in (queries, keys, values))
        output = self.attend(queries, keys, values, attn_mask, query_lengths, key_lengths, training)
        if not query_lengths.all_ones:
            output = output * ops.cast(query_lengths.bool_matrix, "float32")[:, :, None, None]
        return ops.cast(output, dtype)

    def build(self, *input_shapes, **named_shapes):
        # No weights of its own to create; sub-layers (dropout) have none either.
        self.built = True

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        raise NotImplementedError

    def compute_output_spec(self, queries, keys, values, *args, **kwargs):
        shape = (*queries.shape[:3], values.shape[-1])
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    # -- checks shared by the attentions that cannot honour every mask -----------------------
    def require_no_attention_mask(self, attn_mask):
        if not attn_mask.all_ones:
            raise NlpkitError(
                f"{type(self).__name__} cannot honour an arbitrary attention mask (attn_mask)",
                hint="drop padding through key_lengths/query_lengths, or use FullAttention or LocalAttention",
            )

    def require_causal_mask(self, attn_mask, length_t, length_s):
        if not attn_mask.lower_triangular:
            raise NlpkitError(
                f"{type(self).__name__} needs a lower-triangular attn_mask (TriangularMask)",
                hint="pass attn_mask=TriangularMask(T), or use the non-causal attention",
            )
        if length_t is not None and length_s is not None and length_t != length_s:
            raise NlpkitError(
                f"{type(self).__name__} needs as many queries as keys, got T={length_t}, S={length_s}",
                hint="causal attention is self-attention",
            )


def softmax_temperature(softmax_temp, head_size):
    return softmax_temp if softmax_temp is not None else 1.0 / math.sqrt(head_size)


def key_padding(key_lengths):
    """`[B, S]` float32 (1 = real key), or None when every key is real."""
    return None if key_lengths.all_ones else ops.cast(key_lengths.bool_matrix, "float32")


def pad_axis(x, axis, before, after, value=0):
    widths = [(0, 0)] * len(x.shape)
    widths[axis] = (before, after)
    return ops.pad(x, widths, constant_values=value)


def gather_rows(x, indices):
    """x `[B, N, S, E]`, indices int `[B, N, ...]` into S -> `[B, N, ..., E]` (per batch and head)."""
    batch, heads, length = x.shape[0], x.shape[1], x.shape[2]
    batch = ops.shape(x)[0] if batch is None else batch
    offsets = (ops.arange(batch, dtype="int32")[:, None] * heads + ops.arange(heads, dtype="int32")[None, :]) * length
    offsets = ops.reshape(offsets, (batch, heads) + (1,) * (len(indices.shape) - 2))
    flat = ops.reshape(x, (-1, x.shape[-1]))
    return ops.take(flat, ops.cast(indices, "int32") + offsets, axis=0)
