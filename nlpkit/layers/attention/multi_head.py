"""Multi-head dot-product attention ("Attention Is All You Need")."""

import keras
from keras import ops

import nlpkit.layers.attention.keras_mha as keras_mha
from nlpkit.layers.attention.registry import register_attention
from nlpkit.layers.masks import masked_softmax


@register_attention("multi_head")
@keras.saving.register_keras_serializable(package="nlpkit")
class MultiHeadAttention(keras.layers.MultiHeadAttention):
    """Keras' multi-head attention with the catalogue's mask contract.

    Projections, shapes and arguments are those of `keras.layers.MultiHeadAttention`; what this
    subclass changes is the softmax: computed in float32 under mixed precision, masked keys get
    probability exactly 0 and a fully masked query row gives zero attention (finite output),
    never NaN or a uniform average over padding.

    Args:
      num_heads: N, number of attention heads.
      key_dim: H, size of each head for query and key.
      value_dim: size of each head for value (default `key_dim`).
      dropout: dropout rate on the attention probabilities.
      use_bias: whether the projections have biases.
      output_shape: last dims of the output (default: the query's last dim).
      attention_axes: axes attended over (default: all but batch, heads and features).
      kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
      activity_regularizer, kernel_constraint, bias_constraint: as for `keras.layers.Dense`.

    Call: `layer(query, value, key=None, attention_mask=None, return_attention_scores=False,
    training=None)`; query `[B, T, D]`, value/key `[B, S, D]`, attention_mask `[B, T, S]`
    (1 = may attend). Output `[B, T, D]` (or `output_shape`), scores `[B, N, T, S]`.
    Higher-rank inputs with `attention_axes` work as in Keras (e.g. `[B, 5, 3, 4, 16]`).
    """

    def _attention_probabilities(self, scores, attention_mask, dtype):
        """Scores `[B, N, <T axes>, <S axes>]` -> probabilities in `dtype`."""
        norm_axes = tuple(range(len(scores.shape) - len(self.attention_axes), len(scores.shape)))
        if attention_mask is not None:
            expand_axis = -len(self.attention_axes) * 2 - 1
            for _ in range(len(scores.shape) - len(attention_mask.shape)):
                attention_mask = ops.expand_dims(attention_mask, axis=expand_axis)
        return ops.cast(masked_softmax(scores, attention_mask, axis=norm_axes), dtype)

    def _compute_attention(
        self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs
    ):
        # Keras passes `use_causal_mask` here only to its own _compute_attention: for a subclass
        # it builds the causal mask into `attention_mask` before the call.
        if self._fused_path_applies(query, value, return_attention_scores, training):
            return self._fused_attention(query, key, value, attention_mask), None
        query = ops.multiply(query, ops.cast(keras_mha.logit_scale(self), query.dtype))
        scores = ops.einsum(keras_mha.score_equation(self), key, query)
        probs = self._attention_probabilities(scores, attention_mask, query.dtype)
        dropped = keras_mha.probability_dropout(self)(probs, training=training) if self.dropout > 0.0 else probs
        output = ops.einsum(keras_mha.combine_equation(self), dropped, value)
        return output, probs

    def _fused_path_applies(self, query, value, return_attention_scores, training):
        """Keras' fused attention computes the same when no scores are returned, no dropout is
        drawn and the attention is over the one sequence axis of `[B, T, N, H]` heads (JAX's
        kernel also needs value heads as wide as key heads)."""
        dropping = self.dropout > 0.0 and bool(training)
        one_axis = len(query.shape) == 4 and tuple(self.attention_axes) == (1,)
        return not return_attention_scores and not dropping and one_axis and value.shape[-1] == query.shape[-1]

    def _fused_attention(self, query, key, value, attention_mask):
        """`ops.dot_product_attention` (its softmax is float32), with the catalogue's rule that a
        query with no allowed key gets 0 (Keras gives it the average of all values)."""
        scale = keras_mha.logit_scale(self)
        if attention_mask is None:
            return ops.dot_product_attention(query, key, value, scale=scale)
        mask = ops.cast(attention_mask, "bool")
        while len(mask.shape) < 4:
            mask = ops.expand_dims(mask, axis=-3)  # [B, T, S] -> [B, 1, T, S] (heads broadcast)
        output = ops.dot_product_attention(query, key, value, mask=mask, scale=scale)
        allowed = ops.expand_dims(ops.swapaxes(ops.any(mask, axis=-1), 1, 2), -1)  # [B, T, 1|N, 1]
        return output * ops.cast(allowed, output.dtype)

    def compute_output_spec(self, query, value, key=None, return_attention_scores=False, **kwargs):
        # Keras' own spec gives scores of shape [B, N, T, T]; they are [B, N, <T axes>, <S axes>].
        output_spec = super().compute_output_spec(query, value, key=key, **kwargs)
        if not return_attention_scores:
            return output_spec
        axes = self.attention_axes or tuple(range(1, len(query.shape) - 1))
        batch_dims = [d for i, d in enumerate(query.shape[:-1]) if i not in axes]
        scores_shape = (
            *batch_dims,
            self.num_heads,
            *(query.shape[a] for a in axes),
            *(value.shape[a] for a in axes),
        )
        return output_spec, keras.KerasTensor(scores_shape, dtype=self.compute_dtype)
