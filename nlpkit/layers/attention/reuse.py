"""Multi-head attention that reuses attention probabilities of an earlier layer
("Leveraging redundancy in attention with Reuse Transformers", Bhojanapalli et al. 2021)."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
import nlpkit.layers.attention.keras_mha as keras_mha
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
      use_relative_pe: add a learned relative position bias to the logits of the N - R fresh
        heads (Model Garden's): one scalar per fresh head and distance `s - t`, distances
        clipped to `+-(pe_max_seq_length - 1)`. A weight `relative_position_embeddings`
        `[1, N - R, 2 * pe_max_seq_length - 1]` (truncated normal, stddev 0.2), present only
        when some head is fresh. Needs rank-3 inputs (one attention axis). Default False.
      pe_max_seq_length: L, the distances the bias distinguishes (default 512).
      attention_axes: axes attended over, as for `MultiHeadAttention` (None: all but batch,
        heads and features); e.g. `(2, 3)` on `[B, 5, 3, 4, D]` inputs. Scores are then
        `[B, <other axes>, N, <T axes>, <S axes>]` and heads are reused along the head axis.
      value_dim, dropout, use_bias, output_shape, kernel/bias initializer, regularizer,
      constraint: as for `MultiHeadAttention`. `use_gate`/`sliding_window` must be unset.

    Call: `layer(query, value, key=None, attention_mask=None, reuse_attention_scores=None,
    return_attention_scores=False, training=None)`; query `[B, T, D]`, value/key `[B, S, D]`,
    attention_mask `[B, T, S]`, reuse_attention_scores `[B, N', T, S]` with N' >= R (required
    when R > 0, ignored when R = 0). Output `[B, T, D]` (or `output_shape`), scores `[B, N, T, S]`.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        reuse_attention=0,
        attention_axes=None,
        use_relative_pe=False,
        pe_max_seq_length=512,
        **kwargs,
    ):
        if not isinstance(reuse_attention, int) or not -1 <= reuse_attention <= num_heads:
            raise NlpkitError(
                f"reuse_attention={reuse_attention!r} is not a head count",
                hint=f"use an integer from 0 to num_heads={num_heads}, or -1 for all heads",
            )
        unsupported = [name for name in ("use_gate", "sliding_window") if kwargs.get(name)]
        if unsupported:
            raise NlpkitError(
                f"ReuseMultiHeadAttention does not support {', '.join(unsupported)}",
                hint="leave them unset (plain projections)",
            )
        super().__init__(num_heads, key_dim, attention_axes=attention_axes, **kwargs)
        self.reuse_attention = reuse_attention
        self.use_relative_pe = use_relative_pe
        self.pe_max_seq_length = pe_max_seq_length
        self.relative_position_embeddings = None

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
            if self.use_relative_pe:
                self._build_relative_position_embeddings(fresh_heads, query_shape)
        value = self._head_projection("value", self.num_heads, self.value_dim, value_shape)
        keras_mha.build_attention(self, len(query_shape) + 1)
        output = keras_mha.make_output_dense(self, query_shape, "attention_output")
        keras_mha.replace_projections(self, query=query, key=key, value=value, output=output)
        self.output_dense.build((*query_shape[:-1], self.num_heads, self.value_dim))

    def _head_projection(self, name, heads, size, input_shape):
        """EinsumDense `[B, ..., D]` -> `[B, ..., heads, size]`."""
        layer = keras.layers.EinsumDense(
            "...d,dnh->...nh",
            output_shape=(heads, size),
            bias_axes="nh" if self.use_bias else None,
            name=name,
            **keras_mha.sublayer_kwargs(self),
        )
        layer.build(input_shape)
        return layer

    def _build_relative_position_embeddings(self, fresh_heads, query_shape):
        if len(query_shape) != 3 or tuple(self.attention_axes or (1,)) != (1,):
            raise NlpkitError(
                f"{self.name}: use_relative_pe needs rank-3 inputs [B, T, D] attended over axis 1, "
                f"got query shape {tuple(query_shape)} and attention_axes={self.attention_axes}",
                hint="leave attention_axes unset with use_relative_pe, or set use_relative_pe=False",
            )
        # Model Garden's shape and initialisation, so its checkpoints map one to one.
        self.relative_position_embeddings = self.add_weight(
            name="relative_position_embeddings",
            shape=(1, fresh_heads, 2 * self.pe_max_seq_length - 1),
            initializer=keras.initializers.TruncatedNormal(stddev=0.2),
        )

    def _relative_position_bias(self, query_length, key_length, dtype):
        """`[1, N - R, T, S]`: the bias of distance `s - t`, clipped to the table's range."""
        largest = self.pe_max_seq_length - 1
        distances = ops.expand_dims(ops.arange(key_length), 0) - ops.expand_dims(ops.arange(query_length), 1)
        indices = ops.clip(distances, -largest, largest) + largest
        return ops.cast(ops.take(self.relative_position_embeddings, indices, axis=2), dtype)

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

    def _head_axis(self, scores_rank):
        """Scores are `[B, <other axes>, N, <T axes>, <S axes>]`."""
        return scores_rank - 2 * len(self.attention_axes) - 1

    def _combined_probabilities(self, query, key, attention_mask, reuse_attention_scores, dtype):
        """`[..., N, <T axes>, <S axes>]`: the reused heads first, then the freshly computed ones."""
        scores_rank = len(query.shape) + len(self.attention_axes)
        head_axis = self._head_axis(scores_rank)
        parts = []
        if self.reused_heads:
            heads = (slice(None),) * head_axis + (slice(0, self.reused_heads),)
            reused = ops.cast(reuse_attention_scores[heads], dtype)
            if attention_mask is not None:
                reused = ops.where(self._expanded_mask(attention_mask, scores_rank), reused, ops.zeros_like(reused))
            parts.append(reused)
        if self.query_dense is not None:
            queries = self.query_dense(query)
            queries = ops.multiply(queries, ops.cast(keras_mha.logit_scale(self), queries.dtype))
            scores = ops.einsum(keras_mha.score_equation(self), self.key_dense(key), queries)
            if self.relative_position_embeddings is not None:
                bias = self._relative_position_bias(ops.shape(query)[1], ops.shape(key)[1], scores.dtype)
                scores = scores + bias
            parts.append(self._attention_probabilities(scores, attention_mask, dtype))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=head_axis)

    def _expanded_mask(self, attention_mask, scores_rank):
        """The mask as bool with a broadcast head axis, as `_attention_probabilities` expands it."""
        mask = ops.cast(attention_mask, "bool")
        for _ in range(scores_rank - len(mask.shape)):
            mask = ops.expand_dims(mask, axis=-2 * len(self.attention_axes) - 1)
        return mask

    def compute_output_spec(self, query, value, key=None, return_attention_scores=False, **kwargs):
        # The parent's spec gives the scores' shape from query and value (reuse adds no axis).
        return super().compute_output_spec(query, value, key=key, return_attention_scores=return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update(
            reuse_attention=self.reuse_attention,
            use_relative_pe=self.use_relative_pe,
            pe_max_seq_length=self.pe_max_seq_length,
        )
        return config


register_attention("reuse")(ReuseMultiHeadAttention)
