"""Registry adapters: every inner attention behind the MultiHeadAttention constructor and call.

`make_attention("linear", num_heads=4, key_dim=64)` (and 'full', 'causal-linear', 'clustered',
'improved-clustered', 'improved-clustered-causal', 'reformer', 'local', 'conditional-full[:inner]')
gives an `InnerAttentionAdapter`, usable wherever a MultiHeadAttention is: in blocks, encoders,
configs and CLI flags. Attention-specific keyword arguments (`local_context=`, `clusters=`, ...)
go to the inner attention; defaults are the inner attention's own.
"""

import keras
from keras import ops

from nlpkit.layers.attention.efficient.layer import resolve_inner_attention
from nlpkit.layers.attention.efficient.masks import FullMask, LengthMask, TriangularMask, factorize_padding, is_key_padding
from nlpkit.layers.attention.efficient.projected import ProjectedCoreAttention
from nlpkit.layers.attention.registry import register_attention
from nlpkit.layers.masks import causal_mask


@keras.saving.register_keras_serializable(package="nlpkit")
class InnerAttentionAdapter(ProjectedCoreAttention):
    """MultiHeadAttention whose attention core is an inner attention (linear, local, ...).

    The projections, arguments and call are MultiHeadAttention's; between the projections the
    inner attention gets `[B,T,N,H]` tensors and mask objects: a `[B,S]` or `[B,1,S]` mask is
    passed as key padding (`key_lengths`), so no T x S mask exists; a dense `[B,T,S]` mask is
    passed as is to attentions that honour any mask (full, local), and as query/key padding to
    the others (it must then be a padding mask, checked when its values are known).
    `use_causal_mask=True`, or a causal inner attention, passes a TriangularMask (no T x S mask
    is built). Attention scores are not materialised: `return_attention_scores=True` is an error.

    Args:
      num_heads, key_dim, value_dim, dropout, use_bias, output_shape, kernel_initializer,
      bias_initializer, ...: as for MultiHeadAttention (`attention_axes` must be None).
      attention: the inner attention: a layer or its name ('linear', 'local', ...). Built from a
        name, it gets `query_dimensions=key_dim` and `attention_dropout=dropout`.

    Call: `layer(query [B,T,D], value [B,S,D], key=None, attention_mask=None, training=None,
    use_causal_mask=False)`; attention_mask `[B,T,S]` or a `[B,S]` key padding mask; -> `[B,T,D]` (or `output_shape`).
    """

    def __init__(self, num_heads, key_dim, attention="full", **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.attention = resolve_inner_attention(
            attention, self.dtype_policy, query_dimensions=key_dim, attention_dropout=self.dropout
        )

    def _always_causal(self):
        return self.attention.is_causal

    def _compute_attention(self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs):
        length_t, length_s = query.shape[1], key.shape[1]
        attn_mask = TriangularMask(length_t) if self._causal_call else None
        query_lengths = key_lengths = None
        if attention_mask is not None and self.attention.supports_attention_masks and not is_key_padding(attention_mask):
            mask = ops.cast(attention_mask, "bool")
            if self._causal_call:
                mask = ops.logical_and(mask, causal_mask(length_t, length_s))
            attn_mask = FullMask(mask)
        elif attention_mask is not None:
            query_padding, key_padding = factorize_padding(attention_mask)
            # Key padding [B, 1, S] gives [B, 1] (a sample without real keys): one per query.
            query_padding = ops.logical_and(query_padding, ops.ones_like(query[:, :, 0, 0], dtype="bool"))
            query_lengths = LengthMask.from_padding(query_padding)
            key_lengths = LengthMask.from_padding(key_padding)
        output = self.attention(
            query, key, value, attn_mask=attn_mask, query_lengths=query_lengths, key_lengths=key_lengths, training=training
        )
        return output, None

    def get_config(self):
        return {**super().get_config(), "attention": keras.saving.serialize_keras_object(self.attention)}


def _inner_defaults(adapter_arguments):
    """What each inner attention built for an adapter gets: its head size and dropout, the adapter's dtype."""
    return {
        "query_dimensions": adapter_arguments["key_dim"],
        "attention_dropout": adapter_arguments.get("dropout", 0.0),
        "dtype": adapter_arguments.get("dtype"),
    }


# The outer attention of each inner one: MultiHeadAttention arguments for the adapter, the rest
# for the inner attention; 'conditional-full:linear' composes through the inner entry.
for _name in ("full", "linear", "causal-linear", "clustered", "improved-clustered", "improved-clustered-causal", "reformer",
              "local", "conditional-full"):
    register_attention(_name, inner="attention", inner_kind="inner_attention", default_inner=_name, forward=True,
                       inherit=_inner_defaults)(InnerAttentionAdapter)
