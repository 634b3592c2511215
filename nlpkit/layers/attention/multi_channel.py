"""Cross-attention over several context streams (e.g. several retrieved documents) at once.

`VotingAttention` scores the C contexts against each other (document-level "votes") and
`MultiChannelAttention` attends from one target sequence into every context separately, then
merges the C per-context results with those weights.
"""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
import nlpkit.layers.attention.keras_mha as keras_mha
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.masks import masked_softmax


@keras.saving.register_keras_serializable(package="nlpkit")
class VotingAttention(keras.layers.Layer):
    """Document-level weights over C contexts, from how strongly each context agrees with the others.

    The first token of each context (its CLS embedding) is projected to N heads of queries and
    keys; context x collects the dot products q_x . k_y with every other real context y != x,
    summed over heads, and a softmax over the real contexts turns these votes into probabilities.

    Args:
      num_heads: N, number of heads of the vote projections.
      head_size: H, size of each head.
      kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
      activity_regularizer, kernel_constraint, bias_constraint: as for `keras.layers.Dense`.

    Call: `layer(encoder_outputs, doc_attention_mask)`; encoder_outputs `[B, C, S, D]`,
    doc_attention_mask `[B, C]` (1 = real context). Output: float32 probabilities `[B, C]`,
    0 at masked contexts (all zeros when every context is masked).
    """

    def __init__(
        self,
        num_heads,
        head_size,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_size = head_size
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.activity_regularizer = keras.regularizers.get(activity_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.query_dense = self._projection("query")
        self.key_dense = self._projection("key")

    def _projection(self, name):
        return keras.layers.EinsumDense(
            "bce,enh->bcnh",
            output_shape=(None, self.num_heads, self.head_size),
            bias_axes="nh",
            kernel_initializer=keras.initializers.get(keras.initializers.serialize(self.kernel_initializer)),
            bias_initializer=keras.initializers.get(keras.initializers.serialize(self.bias_initializer)),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, encoder_outputs_shape):
        cls_shape = (encoder_outputs_shape[0], encoder_outputs_shape[1], encoder_outputs_shape[3])
        self.query_dense.build(cls_shape)
        self.key_dense.build(cls_shape)

    def call(self, encoder_outputs, doc_attention_mask):
        cls_embeddings = encoder_outputs[:, :, 0, :]  # [B, C, D]
        queries = ops.cast(self.query_dense(cls_embeddings), "float32")
        keys = ops.cast(self.key_dense(cls_embeddings), "float32")
        doc_mask = ops.cast(doc_attention_mask, "float32")
        votes = ops.einsum("bxnh,bynh->bxy", queries, keys)  # summed over heads
        num_docs = ops.shape(votes)[1]
        # A context does not vote for itself, and masked contexts cast no vote.
        voters = ops.expand_dims(doc_mask, 1) * (1.0 - ops.eye(num_docs, dtype="float32"))
        logits = ops.sum(votes * voters, axis=-1)  # [B, C]
        return masked_softmax(logits, doc_mask, axis=-1)

    def compute_output_shape(self, encoder_outputs_shape, doc_attention_mask_shape=None):
        return tuple(encoder_outputs_shape[:2])

    def compute_output_spec(self, encoder_outputs, doc_attention_mask):
        return keras.KerasTensor(tuple(encoder_outputs.shape[:2]), dtype="float32")

    def get_config(self):
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            num_heads=self.num_heads,
            head_size=self.head_size,
            kernel_initializer=serialize(self.kernel_initializer),
            bias_initializer=serialize(self.bias_initializer),
            kernel_regularizer=serialize(self.kernel_regularizer),
            bias_regularizer=serialize(self.bias_regularizer),
            activity_regularizer=serialize(self.activity_regularizer),
            kernel_constraint=serialize(self.kernel_constraint),
            bias_constraint=serialize(self.bias_constraint),
        )
        return config


@keras.saving.register_keras_serializable(package="nlpkit")
class MultiChannelAttention(MultiHeadAttention):
    """Cross-attention from one target sequence into C context streams, merged by context weights.

    The query attends into each context separately (own softmax per context, masked by that
    context's mask); the C per-context results are then averaged with `context_attention_weights`
    (e.g. the output of `VotingAttention`) and projected back as in `MultiHeadAttention`.

    Args: those of `MultiHeadAttention` (num_heads, key_dim, value_dim, dropout, use_bias,
    output_shape, kernel/bias initializer, regularizer, constraint); `attention_axes` must be None
    and `sliding_window` unset.

    Call: `layer(query, value, key=None, context_attention_weights=..., attention_mask=None,
    return_attention_scores=False, training=None)`; query `[B, T, D]`, value/key `[B, C, S, D]`,
    context_attention_weights `[B, C]` or `[B, N, T, C]` (required), attention_mask `[B, C, T, S]`
    (1 = may attend). Output `[B, T, D]` (or `output_shape`); scores: the per-context
    probabilities `[B, C, N, T, S]`.
    """

    def __init__(self, num_heads, key_dim, attention_axes=None, sliding_window=None, **kwargs):
        if attention_axes is not None or sliding_window is not None:
            raise NlpkitError(
                "MultiChannelAttention attends over the sequence axis of each context only",
                hint="leave attention_axes and sliding_window unset",
            )
        super().__init__(num_heads, key_dim, **kwargs)

    def _build_attention(self, rank):
        # The per-context einsums below replace Keras' attention equations; only dropout is needed
        # (and `attention_axes` stays None, so the config round-trips).
        keras_mha.set_probability_dropout(self, keras.layers.Dropout(rate=self.dropout, dtype=self.dtype_policy, seed=self.seed))

    def call(
        self,
        query,
        value,
        key=None,
        context_attention_weights=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
    ):
        if context_attention_weights is None:
            raise NlpkitError(
                f"{self.name}: context_attention_weights is required",
                hint="pass [B, C] weights over the contexts, e.g. from VotingAttention",
            )
        key = value if key is None else key
        queries = self.query_dense(query)  # [B, T, N, H]
        keys = self.key_dense(key)  # [B, C, S, N, H]
        values = self.value_dense(value)  # [B, C, S, N, Hv]
        queries = ops.multiply(queries, ops.cast(keras_mha.logit_scale(self), queries.dtype))
        scores = ops.einsum("btnh,bcsnh->bcnts", queries, keys)
        if attention_mask is not None:
            attention_mask = ops.expand_dims(ops.cast(attention_mask, "bool"), 2)  # [B, C, 1, T, S]
        probs = ops.cast(masked_softmax(scores, attention_mask, axis=-1), queries.dtype)
        dropped = keras_mha.probability_dropout(self)(probs, training=training) if self.dropout > 0.0 else probs
        per_context = ops.einsum("bcnts,bcsnh->bctnh", dropped, values)
        output = self._merge_contexts(per_context, ops.cast(context_attention_weights, per_context.dtype))
        gate = keras_mha.gate_projection(self)
        if gate is not None:
            output = ops.multiply(output, gate(query))
        output = self.output_dense(output)
        return (output, probs) if return_attention_scores else output

    @staticmethod
    def _merge_contexts(per_context, weights):
        """`[B, C, T, N, H]` x weights `[B, C]` or `[B, N, T, C]` -> `[B, T, N, H]`."""
        if len(weights.shape) == 2:
            return ops.einsum("bc,bctnh->btnh", weights, per_context)
        return ops.einsum("bntc,bctnh->btnh", weights, per_context)

    def compute_output_spec(self, query, value, key=None, return_attention_scores=False, **kwargs):
        output = keras.KerasTensor(self.compute_output_shape(query.shape, value.shape), dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        batch, contexts, length = value.shape[:3]
        scores = keras.KerasTensor((batch, contexts, self.num_heads, query.shape[1], length), dtype=self.compute_dtype)
        return output, scores
