"""Projections around an inner attention (fast-transformers' AttentionLayer)."""

import keras

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient.base import PositionalMasksMixin
from nlpkit.layers.attention.efficient.names import make_inner_attention


def resolve_inner_attention(attention, dtype, **kwargs):
    """A layer, a serialised layer (dict) or a name -> an inner-attention layer."""
    if isinstance(attention, dict):
        return keras.saving.deserialize_keras_object(attention)
    if isinstance(attention, str):
        return make_inner_attention(attention, dtype=dtype, **kwargs)
    if not callable(attention):
        raise NlpkitError(f"attention must be an inner-attention layer or its name, got {attention!r}")
    return attention


@keras.saving.register_keras_serializable(package="nlpkit")
class AttentionLayer(PositionalMasksMixin, keras.layers.Layer):
    """Projects queries, keys and values to heads, runs an inner attention, projects back.

    Args:
      attention: the inner attention (FullAttention, LinearAttention, ...), or its name.
      d_model: D, width of the inputs and of the output.
      n_heads: N, number of heads.
      d_keys: H, head size of queries and keys (default D // N).
      d_values: M, head size of values (default D // N).

    Call: `layer(queries [B,T,D], keys [B,S,D], values [B,S,D'], attn_mask=None,
    query_lengths=None, key_lengths=None)` -> `[B,T,D]`. `attn_mask` is a mask object or a
    `[T,S]`/`[B,T,S]` array (1 = may attend); the lengths are LengthMasks or `[B]` int arrays.
    The masks may be passed positionally, as fast-transformers code does.
    """

    def __init__(self, attention, d_model, n_heads, d_keys=None, d_values=None, **kwargs):
        super().__init__(**kwargs)
        self.attention = resolve_inner_attention(attention, self.dtype_policy)
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_keys = d_keys
        self.d_values = d_values
        keys_size = d_keys or d_model // n_heads
        values_size = d_values or d_model // n_heads

        def heads(name, size):
            return keras.layers.EinsumDense(
                "bld,dnh->blnh", output_shape=(None, n_heads, size), bias_axes="nh", name=name, dtype=self.dtype_policy
            )

        self.query_projection = heads("query_projection", keys_size)
        self.key_projection = heads("key_projection", keys_size)
        self.value_projection = heads("value_projection", values_size)
        self.out_projection = keras.layers.EinsumDense(
            "blnh,nhd->bld", output_shape=(None, d_model), bias_axes="d", name="out_projection", dtype=self.dtype_policy
        )

    def build(self, queries_shape, keys_shape, values_shape, **unused_mask_shapes):
        self.query_projection.build(queries_shape)
        self.key_projection.build(keys_shape)
        self.value_projection.build(values_shape)
        self.out_projection.build((*queries_shape[:2], self.n_heads, self.d_values or self.d_model // self.n_heads))

    def call(self, queries, keys, values, attn_mask=None, query_lengths=None, key_lengths=None, training=None):
        output = self.attention(
            self.query_projection(queries),
            self.key_projection(keys),
            self.value_projection(values),
            attn_mask=attn_mask,
            query_lengths=query_lengths,
            key_lengths=key_lengths,
            training=training,
        )
        return self.out_projection(output)

    def compute_output_spec(self, queries, *args, **kwargs):
        return keras.KerasTensor((*queries.shape[:2], self.d_model), dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "attention": keras.saving.serialize_keras_object(self.attention),
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "d_keys": self.d_keys,
            "d_values": self.d_values,
        }
