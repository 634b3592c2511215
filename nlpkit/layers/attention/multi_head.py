"""Multi-head dot-product attention ("Attention Is All You Need")."""

import keras
from keras import ops

from nlpkit.layers.masks import masked_softmax


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
        norm_axes = tuple(range(len(scores.shape) - len(self._attention_axes), len(scores.shape)))
        if attention_mask is not None:
            expand_axis = -len(self._attention_axes) * 2 - 1
            for _ in range(len(scores.shape) - len(attention_mask.shape)):
                attention_mask = ops.expand_dims(attention_mask, axis=expand_axis)
        return ops.cast(masked_softmax(scores, attention_mask, axis=norm_axes), dtype)

    def _compute_attention(
        self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs
    ):
        if kwargs.get("use_causal_mask"):
            attention_mask = self._compute_causal_mask(query, value)
        query = ops.multiply(query, ops.cast(self._inverse_sqrt_key_dim, query.dtype))
        scores = ops.einsum(self._dot_product_equation, key, query)
        probs = self._attention_probabilities(scores, attention_mask, query.dtype)
        dropped = self._dropout_layer(probs, training=training) if self._dropout > 0.0 else probs
        output = ops.einsum(self._combine_equation, dropped, value)
        return output, probs

    def compute_output_spec(self, query, value, key=None, return_attention_scores=False, **kwargs):
        # Keras' own spec gives scores of shape [B, N, T, T]; they are [B, N, <T axes>, <S axes>].
        output_spec = super().compute_output_spec(query, value, key=key, **kwargs)
        if not return_attention_scores:
            return output_spec
        axes = self._attention_axes or tuple(range(1, len(query.shape) - 1))
        batch_dims = [d for i, d in enumerate(query.shape[:-1]) if i not in axes]
        scores_shape = (
            *batch_dims,
            self.num_heads,
            *(query.shape[a] for a in axes),
            *(value.shape[a] for a in axes),
        )
        return output_spec, keras.KerasTensor(scores_shape, dtype=self.compute_dtype)
