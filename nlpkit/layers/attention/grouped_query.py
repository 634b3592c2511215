"""Grouped-query / multi-query attention (Ainslie et al. 2023; Shazeer 2019), as Model Garden's
`multi_query_attention.MultiHeadAttention`: N query heads share `num_kv_heads` key/value heads."""

import math

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.registry import register_attention
from nlpkit.layers.feedforward import clone_initializer
from nlpkit.layers.masks import masked_softmax


@register_attention("grouped_query")
@keras.saving.register_keras_serializable(package="nlpkit")
class GroupedQueryAttention(keras.layers.Layer):
    """Attention whose N query heads are split into `num_kv_heads` groups of N / num_kv_heads
    consecutive heads; each group attends with one key head and one value head.

    `num_kv_heads = num_heads` is multi-head attention, `num_kv_heads = 1` multi-query attention.
    Query head n uses key/value head `n // (num_heads // num_kv_heads)`. Softmax, masking and
    fully masked rows follow the catalogue's rule (float32, masked keys 0, an all-masked query
    gives zero attention).

    Args:
      num_heads: N, number of query heads.
      key_dim: H, size of each query and key head.
      num_kv_heads: G, number of key/value heads; must divide N (default N).
      value_dim: size of each value head (default `key_dim`).
      dropout: dropout rate on the attention probabilities.
      use_bias: whether the projections have biases.
      output_shape: last dim of the output (default the query's last dim).
      attention_axes: only None or (1,) (attention over the sequence axis).
      kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
      activity_regularizer, kernel_constraint, bias_constraint: as for `keras.layers.EinsumDense`.
      src_block_size, tgt_block_size: block-diagonal (block-sparse) attention, as Model Garden's
        `block_sparse_attention`: the query is cut into blocks of `src_block_size` and the keys
        into blocks of `tgt_block_size` (default `src_block_size`); query block l attends only
        key block l (or all keys when they form one block). Lengths must be static multiples of
        the block sizes, giving as many key blocks as query blocks (or one). Default None: full.

    Call: `layer(query, value, key=None, attention_mask=None, return_attention_scores=False,
    training=None)`; query `[B, T, D]`, value/key `[B, S, D_kv]`, attention_mask `[B, T, S]` or
    `[B, 1, S]` (1 = may attend). Output `[B, T, output_shape or D]`, scores `[B, N, T, S]`
    (block-sparse: `[B, N, L, src_block_size, s]`, L blocks, s keys per block, as Model Garden).
    Weights (sub-layers `query`, `key`, `value`, `attention_output`): query kernel `[D, N, H]`,
    key kernel `[D_kv, G, H]`, value kernel `[D_kv, G, H_v]`, output kernel `[N, H_v, D]`.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        num_kv_heads=None,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        attention_axes=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        src_block_size=None,
        tgt_block_size=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise NlpkitError(
                f"GroupedQueryAttention: num_kv_heads={num_kv_heads} does not divide num_heads={num_heads}",
                hint="use a num_kv_heads that divides the number of attention heads (1 = multi-query)",
            )
        if attention_axes not in (None, 1, (1,), [1]):
            raise NlpkitError(
                f"GroupedQueryAttention: attention_axes={attention_axes!r} is not supported",
                hint="grouped-query attention attends over the sequence axis only; leave attention_axes unset",
            )
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.num_kv_heads = num_kv_heads
        self.value_dim = value_dim or key_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.output_shape_ = output_shape
        self.src_block_size = src_block_size
        self.tgt_block_size = tgt_block_size
        self.attention_axes = attention_axes
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def _projection(self, equation, output_shape, bias_axes, name):
        return keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = value_shape or query_shape
        key_shape = key_shape or value_shape
        heads, groups = self.num_heads, self.num_kv_heads
        self.query_dense = self._projection("btd,dnh->btnh", (None, heads, self.key_dim), "nh", "query")
        self.key_dense = self._projection("bsd,dgh->bsgh", (None, groups, self.key_dim), "gh", "key")
        self.value_dense = self._projection("bsd,dgh->bsgh", (None, groups, self.value_dim), "gh", "value")
        width = self.output_shape_ or query_shape[-1]
        self.output_dense = self._projection("btnh,nhd->btd", (None, width), "d", "attention_output")
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)
        self.output_dense.build((*query_shape[:-1], heads, self.value_dim))

    def _blocks(self, query_length, key_length):
        """(number of query blocks L, query block size, whether keys are cut into L blocks too)."""
        if self.src_block_size is None:
            return 1, query_length, False
        tgt_block_size = self.tgt_block_size or self.src_block_size
        if query_length is None or key_length is None or query_length % self.src_block_size or key_length % tgt_block_size:
            raise NlpkitError(
                f"GroupedQueryAttention: sequence lengths {query_length} (query) and {key_length} (key) are not "
                f"multiples of src_block_size={self.src_block_size} and tgt_block_size={tgt_block_size}",
                hint="pad the sequences to a multiple of the block sizes (known when the model is built)",
            )
        num_blocks, key_blocks = query_length // self.src_block_size, key_length // tgt_block_size
        if key_blocks not in (1, num_blocks):
            raise NlpkitError(
                f"GroupedQueryAttention: {num_blocks} query blocks but {key_blocks} key blocks",
                hint="choose block sizes that cut query and key into the same number of blocks (or keys into one)",
            )
        return num_blocks, self.src_block_size, key_blocks > 1

    def _key_block_mask(self, mask, num_blocks):
        """`[B, T|1, S]` -> `[B * L, t|1, s]`: each query block's mask over its own key block."""
        batch, rows = ops.shape(mask)[0], mask.shape[1]
        if rows == 1:
            return ops.reshape(mask, (batch * num_blocks, 1, -1))
        grid = ops.reshape(ops.cast(mask, "float32"), (batch, num_blocks, rows // num_blocks, num_blocks, -1))
        diagonal = ops.einsum("bltks,lk->blts", grid, ops.eye(num_blocks)) > 0.5  # the diagonal blocks
        return ops.reshape(diagonal, (batch * num_blocks, rows // num_blocks, -1))

    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False, training=None):
        key = value if key is None else key
        q = self.query_dense(query) * ops.cast(1.0 / math.sqrt(float(self.key_dim)), self.compute_dtype)
        k, v = self.key_dense(key), self.value_dense(value)  # [B, S, G, H]
        batch, length = ops.shape(q)[0], ops.shape(q)[1]
        num_blocks, block, blocked_keys = 1, length, False
        if self.src_block_size is not None:
            num_blocks, block, blocked_keys = self._blocks(query.shape[1], key.shape[1])
        if blocked_keys:
            # Blocks fold into the batch: block l of the queries meets block l of the keys only.
            q = ops.reshape(q, (batch * num_blocks, block, *q.shape[2:]))
            k = ops.reshape(k, (batch * num_blocks, -1, *k.shape[2:]))
            v = ops.reshape(v, (batch * num_blocks, -1, *v.shape[2:]))
            if attention_mask is not None:
                attention_mask = self._key_block_mask(attention_mask, num_blocks)
        output, probs = self._attend(q, k, v, attention_mask, training)  # probs [B', N, t, s]
        output = self.output_dense(ops.reshape(output, (batch, length, self.num_heads, self.value_dim)))
        if not return_attention_scores:
            return output
        if self.src_block_size is not None:  # Model Garden's block scores [B, N, L, t, s]
            keys = ops.shape(probs)[-1]
            if blocked_keys:
                probs = ops.reshape(probs, (batch, num_blocks, self.num_heads, block, keys))
                probs = ops.transpose(probs, (0, 2, 1, 3, 4))
            else:
                probs = ops.reshape(probs, (batch, self.num_heads, num_blocks, block, keys))
        return output, probs

    def _attend(self, q, k, v, attention_mask, training):
        """q `[B, T, N, H]`, k/v `[B, S, G, H]`, mask `[B, T|1, S]` -> (`[B, T, N, H_v]`, probs `[B, N, T, S]`)."""
        groups, per_group = self.num_kv_heads, self.num_heads // self.num_kv_heads
        batch, length = ops.shape(q)[0], ops.shape(q)[1]
        q = ops.reshape(q, (batch, length, groups, per_group, self.key_dim))
        scores = ops.einsum("btgrh,bsgh->bgrts", q, k)
        mask = None if attention_mask is None else ops.expand_dims(ops.expand_dims(attention_mask, 1), 1)
        probs = ops.cast(masked_softmax(scores, mask, axis=-1), q.dtype)  # [B, G, R, T, S]
        dropped = self.dropout_layer(probs, training=training)
        combined = ops.einsum("bgrts,bsgh->btgrh", dropped, v)
        # Head n = g * R + r: the group-major order of the query projection.
        heads = ops.reshape(combined, (batch, length, self.num_heads, self.value_dim))
        return heads, ops.reshape(probs, (batch, self.num_heads, length, ops.shape(probs)[-1]))

    def compute_output_spec(self, query, value, key=None, return_attention_scores=False, **kwargs):
        output = keras.KerasTensor((*query.shape[:-1], self.output_shape_ or query.shape[-1]), self.compute_dtype)
        if not return_attention_scores:
            return output
        if self.src_block_size is None:
            scores_shape = (query.shape[0], self.num_heads, query.shape[1], value.shape[1])
        else:
            num_blocks, block, blocked_keys = self._blocks(query.shape[1], value.shape[1])
            key_block = value.shape[1] // num_blocks if blocked_keys else value.shape[1]
            scores_shape = (query.shape[0], self.num_heads, num_blocks, block, key_block)
        return output, keras.KerasTensor(scores_shape, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            num_kv_heads=self.num_kv_heads,
            value_dim=self.value_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            output_shape=self.output_shape_,
            attention_axes=self.attention_axes,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            activity_regularizer=keras.regularizers.serialize(self.activity_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
            src_block_size=self.src_block_size,
            tgt_block_size=self.tgt_block_size,
        )
        return config
