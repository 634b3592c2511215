"""Talking-heads attention ("Talking-Heads Attention", Shazeer et al. 2020)."""

import keras
from keras import ops

import nlpkit.layers.attention.keras_mha as keras_mha
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import register_attention


@keras.saving.register_keras_serializable(package="nlpkit")
class TalkingHeadsAttention(MultiHeadAttention):
    """Multi-head attention whose heads exchange information around the softmax.

    Two learned `[N, N]` matrices mix the heads: the logits of every head become a linear
    combination of all heads' logits just before the softmax, and the probabilities are mixed
    again just after it (before dropout and the weighted sum of values). Everything else is
    `MultiHeadAttention`. Both mixes run in float32; a key masked for a query stays at
    probability 0 after mixing because the mask is the same for every head.

    Args:
      num_heads: N, number of attention heads (the size of both mixing matrices).
      key_dim: H, size of each head for query and key.
      value_dim: size of each head for value (default `key_dim`).
      dropout: dropout rate on the (mixed) attention probabilities.
      use_bias: whether the query/key/value/output projections have biases.
      output_shape: last dims of the output (default: the query's last dim).
      attention_axes: axes attended over (default: all but batch, heads and features).
      kernel_initializer, kernel_regularizer, kernel_constraint: also used for the two mixing
        matrices.
      bias_initializer, bias_regularizer, activity_regularizer, bias_constraint: as for Dense.

    Call: as `MultiHeadAttention`: query `[B, T, D]`, value/key `[B, S, D]`, attention_mask
    `[B, T, S]`. Output `[B, T, D]` (or `output_shape`); scores `[B, N, T, S]` are the
    probabilities after the post-softmax mix.
    """

    def _build_attention(self, rank):
        super()._build_attention(rank)

        def mixing_matrix(name):
            initializer, regularizer, constraint = keras_mha.kernel_settings(self)
            return self.add_weight(
                name=name,
                shape=(self.num_heads, self.num_heads),
                initializer=initializer,
                regularizer=regularizer,
                constraint=constraint,
                autocast=False,  # mixed in float32 even under mixed precision
            )

        self.pre_softmax_weight = mixing_matrix("pre_softmax_weight")
        self.post_softmax_weight = mixing_matrix("post_softmax_weight")

    def _mix_heads(self, scores, weight):
        """Mixes the heads axis of float32 `scores` `[B.., N, <T axes>, <S axes>]`: out[l] = sum_n s[n] w[n, l]."""
        heads_axis = len(scores.shape) - 2 * len(self.attention_axes) - 1
        mixed = ops.tensordot(scores, ops.cast(weight, "float32"), axes=[[heads_axis], [0]])
        return ops.moveaxis(mixed, -1, heads_axis)

    def _compute_attention(
        self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs
    ):
        # (Keras computes the causal mask itself for subclasses that override this method.)
        query = ops.multiply(query, ops.cast(keras_mha.logit_scale(self), query.dtype))
        scores = ops.cast(ops.einsum(keras_mha.score_equation(self), key, query), "float32")
        scores = self._mix_heads(scores, self.pre_softmax_weight)
        probs = self._attention_probabilities(scores, attention_mask, "float32")
        probs = ops.cast(self._mix_heads(probs, self.post_softmax_weight), query.dtype)
        dropped = keras_mha.probability_dropout(self)(probs, training=training) if self.dropout > 0.0 else probs
        output = ops.einsum(keras_mha.combine_equation(self), dropped, value)
        return output, probs


register_attention("talking_heads")(TalkingHeadsAttention)
