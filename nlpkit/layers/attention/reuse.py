"""Multi-head attention that reuses attention probabilities of an earlier layer
("Leveraging redundancy in attention with Reuse Transformers", Bhojanapalli et al. 2021)."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention import keras_mha
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import register_attention


@keras.saving.register_keras_serializable(package="nlpkit")
class ReuseMultiHeadAttention(MultiHeadAttention):
    """Multi-head attention where some heads take their probabilities from a previous layer.

    The first `R` heads use the first `R` heads of `reuse_attention_scores` (the probabilities a
    lower layer returned) and need no query/key projection; the other `N - R` heads compute
    attention as usual. The combined `[B, N, T, S]` probabilities are what the layer returns as
    scores, so the next layer can reuse them in turn. Reused probabilities are taken as given,
    except that keys masked by this layer's `attention_mask` are set to 0 (not renormalised).

    Args:
      num_heads: N, number of attention heads.
      key_dim: H, size of each head for query and key.
      reuse_attention: R, number of heads to reuse; 0 = none (plain multi-head attention),
        -1 = all (no query/key projections at all).
      value_dim, dropout, use_bias, output_shape, kernel/bias initializer, regularizer,
      constraint: as for `MultiHeadAttention`. `attention_axes` must be None (rank-3 inputs)
      and `use_gate`/`sliding_window` unset.

    Call: `layer(query, value, key=None, attention_mask=None, reuse_attention_scores=None,
    return_attention_scores=False, training=None)`; query `[B, T, D]`, value/key `[B, S, D]`,
    attention_mask `[B, T, S]`, reuse_attention_scores `[B, N', T, S]` with N' >= R (required
    when R > 0). Output `[B, T, D]` (or `output_shape`), scores `[B, N, T, S]`.
    """

    def __init__(self, num_heads, key_dim, reuse_attention=0, attention_axes=None, **kwargs):
        if not isinstance(reuse_attention, int) or not -1 <= reuse_attention <= num_heads:
            raise NlpkitError(
                f"reuse_attention={reuse_attention!r} is not a head count",
                hint=f"use an integer from 0 to num_heads={num_heads}, or -1 for all heads",
            )
        # A built layer reports its default axis (1,); anything else is unsupported.
        unsupported = [name for name in ("use_gate", "sliding_window") if kwargs.get(name)]
        if attention_axes not in (None, 1, (1,), [1]):
            unsupported.append("attention_axes")
        if unsupported:
            raise NlpkitError(
                f"ReuseMultiHeadAttention does not support {', '.join(unsupported)}",
                hint="leave them unset (rank-3 inputs, plain projections)",
            )
        super().__init__(num_heads, key_dim, attention_axes=attention_axes, **kwargs)
        self.reuse_attention = reuse_attention

    @property
    def reused_heads(self):
        return self.num_heads if self.reuse_attention == -1 else self.reuse_attention

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        fresh_heads = self.num_heads - self.reused_heads
        query = key = None
        if fresh_heads:
            query = self._head_projection("query", fresh_heads, self.key_dim, query_shape)
            key = self._head_projection("key", fresh_heads, self.key_dim, key_shape)
        value = self._head_projection("value", self.num_heads, self.value_dim, value_shape)
        keras_mha.build_attention(self, 4)
        output = keras_mha.make_output_dense(self, query_shape, "attention_output")
        keras_mha.replace_projections(self, query=query, key=key, value=value, output=output)
        self.output_dense.build((*query_shape[:-1], self.num_heads, self.value_dim))

    def _head_projection(self, name, heads, size, input_shape):
        """EinsumDense `[B, L, D]` -> `[B, L, heads, size]`."""
        layer = keras.layers.EinsumDense(
            "bld,dnh->blnh",
            output_shape=(None, heads, size),
            bias_axes="nh" if self.use_bias else None,
            name=name,
            **keras_mha.sublayer_kwargs(self),
        )
        layer.build(input_shape)
        return layer

    def call(
        self,
        query,
        value,
        key=None,
        attention_mask=None,
        reuse_attention_scores=None,
        return_attention_scores=False,
        training=None,
    ):
        if len(query.shape) != 3:
            raise NlpkitError(f"{self.name}: expects query/value of rank 3 [B, T, D], got {query.shape}")
        if self.reused_heads and reuse_attention_scores is None:
            raise NlpkitError(
                f"{self.name}: reuse_attention={self.reuse_attention} needs reuse_attention_scores",
                hint="pass the [B, N, T, S] scores returned by the previous layer",
            )
        key = value if key is None else key
        values = self.value_dense(value)
        probs = self._combined_probabilities(query, key, attention_mask, reuse_attention_scores, values.dtype)
        dropped = keras_mha.probability_dropout(self)(probs, training=training) if self.dropout > 0.0 else probs
        output = self.output_dense(ops.einsum(keras_mha.combine_equation(self), dropped, values))
        return (output, probs) if return_attention_scores else output

    def _combined_probabilities(self, query, key, attention_mask, reuse_attention_scores, dtype):
        """`[B, N, T, S]`: the reused heads first, then the freshly computed ones."""
        parts = []
        if self.reused_heads:
            reused = ops.cast(reuse_attention_scores[:, : self.reused_heads], dtype)
            if attention_mask is not None:
                keep = ops.expand_dims(ops.cast(attention_mask, "bool"), 1)
                reused = ops.where(keep, reused, ops.zeros_like(reused))
            parts.append(reused)
        if self.query_dense is not None:
            queries = self.query_dense(query)
            queries = ops.multiply(queries, ops.cast(keras_mha.logit_scale(self), queries.dtype))
            scores = ops.einsum(keras_mha.score_equation(self), self.key_dense(key), queries)
            parts.append(self._attention_probabilities(scores, attention_mask, dtype))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)

    def compute_output_spec(self, query, value, key=None, return_attention_scores=False, **kwargs):
        output = keras.KerasTensor(self.compute_output_shape(query.shape, value.shape), dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        scores_shape = (query.shape[0], self.num_heads, query.shape[1], value.shape[1])
        scores = keras.KerasTensor(scores_shape, dtype=self.compute_dtype)
        return output, scores

    def get_config(self):
        config = super().get_config()
        config["reuse_attention"] = self.reuse_attention
        return config


register_attention("reuse")(ReuseMultiHeadAttention)
