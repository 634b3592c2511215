"""The transformer encoder block: attention and feed-forward, each with residual and layer norm."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.grouped_query import GroupedQueryAttention
from nlpkit.layers.attention.registry import make_attention
from nlpkit.layers.feedforward import PositionwiseFeedforward, clone_initializer
from nlpkit.layers.masks import combine_masks
from nlpkit.layers.normalization import RMSNorm

_FEEDFORWARD_TYPES = ("dense", "gated")
# Attentions that `num_kv_heads` can turn into grouped-query attention.
_GROUPABLE_ATTENTIONS = ("multi_head", "grouped_query")
# Constructor arguments kept as given, so get_config returns them unchanged.
_PLAIN_CONFIG = (
    "num_attention_heads", "inner_dim", "key_dim", "value_dim", "output_last_dim", "norm_first", "norm_epsilon",
    "output_dropout", "attention_dropout", "inner_dropout", "attention_axes", "use_query_residual", "use_bias",
    "return_attention_scores", "attention_type", "attention_kwargs", "feedforward_type", "use_rms_norm",
    "diff_q_kv_att_layer_norm", "num_kv_heads", "src_block_size", "tgt_block_size", "output_range",
)


def merge_padding_mask(attention_mask, padding_mask):
    """The one mask an attention gets: `[B, S]` padding as `[B, 1, S]` (a broadcast, never a
    T x S tensor), AND-ed with the `[B, T, S]` attention mask only where there is one."""
    if padding_mask is None:
        return attention_mask
    padding = ops.expand_dims(ops.cast(padding_mask, "bool"), axis=1)
    return padding if attention_mask is None else combine_masks(attention_mask, padding)


@keras.saving.register_keras_serializable(package="nlpkit")
class TransformerEncoderBlock(keras.layers.Layer):
    """One transformer encoder layer ("Attention Is All You Need"), post- or pre-norm.

    Post-norm (`norm_first=False`, BERT):
      `a = LN(x + dropout(Attn(x)))`, `out = LN(a + dropout(FFN(a)))`.
    Pre-norm (`norm_first=True`):
      `a = x + dropout(Attn(LN(x)))`, `out = a + dropout(FFN(LN(a)))`.
    Layer norms compute in float32 under mixed precision.

    Args:
      num_attention_heads: N, number of attention heads.
      inner_dim: size of the feed-forward inner projection.
      inner_activation: activation of the feed-forward inner projection.
      key_dim: H, size of each head for query and key (default D // N).
      value_dim: size of each head for value (default `key_dim`).
      output_last_dim: width of the attention and block output (default D); a width other
        than D needs `use_query_residual=False`.
      norm_first: pre-norm (True) or post-norm (False).
      norm_epsilon: epsilon of the layer norms.
      output_dropout: dropout rate on the attention and feed-forward outputs.
      attention_dropout: dropout rate on the attention probabilities.
      inner_dropout: dropout rate on the feed-forward inner activations.
      attention_axes: axes attended over (see `MultiHeadAttention`).
      use_query_residual: add the residual connection around the attention.
      use_bias: whether the projections have biases.
      kernel_initializer, bias_initializer: initializers of all projections.
      return_attention_scores: also return the attention scores `[B, N, T, S]`.
      attention_type: the attention, as a registered name (`"multi_head"`, `"talking_heads"`,
        `"conditional-full:linear"`, ...; see `nlpkit.layers.attention.registry`) or a factory
        `factory(**kwargs) -> layer`. A name is what a saved config keeps; a factory works for
        building and calling, but a config holding it can only be saved if the factory itself
        is a registered Keras serialisable - register it with `register_attention` and pass
        its name instead.
      attention_kwargs: extra keyword arguments for the attention (e.g. `{"inner": ...}`).
      feedforward_type: "dense" (`act(x W) V`) or "gated" (GLU: `(act(x W) * x G) V`, see
        `GatedFeedforward`).
      kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: given to every projection (attention and feed-forward); the activity
        regularizer acts on each projection's output, not on the block's. Model Garden's names
        and defaults (None); unlike Model Garden, `kernel_regularizer` is applied (Model Garden
        accepts it and drops it).
      attention_initializer: initializer of the attention kernels (default: `kernel_initializer`).
      use_rms_norm: RMSNorm (`x / rms(x) * scale`, see `nlpkit.layers.RMSNorm`) instead of layer
        norm for the attention norm(s); the output norm stays a layer norm, as in Model Garden.
      diff_q_kv_att_layer_norm: with `norm_first`, a separate norm (`attention_layer_norm_kv`)
        for a given `key_value` (cross-attention), which is otherwise used unnormalised; self-
        attention keys are the query's normalised input either way. Needs `norm_first=True`.
      num_kv_heads: grouped-query attention (`GroupedQueryAttention`): the N query heads share
        `num_kv_heads` key/value heads (1 = multi-query; N = multi-head); must divide N and needs
        `attention_type` "multi_head" (the default) or "grouped_query". Default None: N heads.
      src_block_size, tgt_block_size: block-sparse (block-diagonal) attention, as Model Garden's:
        query blocks of `src_block_size` attend only the matching key block of `tgt_block_size`
        (default `src_block_size`); see `GroupedQueryAttention`. Lengths must be static multiples
        of the block sizes; scores are then `[B, N, L, src_block_size, s]`. Unlike Model Garden,
        combines with `num_kv_heads`, and the block mask is the diagonal blocks of the given mask.
      output_range: default of the call's `output_range` (Model Garden's deprecated constructor
        argument; None = all positions).

    Call: `block(x, attention_mask=None, key_value=None, output_range=None, training=None,
    padding_mask=None)` or `block([x, key_value], ...)`.
      x: `[B, T, D]`; key_value: `[B, S, D_kv]` for cross-attention (used as given, also under
        pre-norm, unless `diff_q_kv_att_layer_norm` normalises it with `attention_layer_norm_kv`);
        default self-attention on x (normalised first under pre-norm).
      attention_mask: `[B, T, S]` (1 = may attend) or a `[B, S]` padding mask.
      padding_mask: `[B, S]` (1 = real key), what encoders pass. The attention gets it as
        `[B, 1, S]`, AND-ed into `attention_mask` only when one is given, so no `[B, T, S]`
        tensor exists for it: the O(n) attentions read key padding from it directly.
      output_range: compute only the first k query positions (CLS-only serving): the query is
        sliced before the attention, so the output is `[B, k, D]`, equal to the first k rows of
        the full output.
    Output: `[B, T, D]` (or `[B, T, output_last_dim]`), plus the scores `[B, N, T, S]` when
    `return_attention_scores`.
    Sub-layers (for weight conversion): `attention`, `attention_layer_norm`,
    `attention_layer_norm_kv` (only with `diff_q_kv_att_layer_norm`), `feedforward`
    (`inner_dense`, `gate_dense`, `output_dense`), `output_layer_norm`.
    """

    def __init__(
        self,
        num_attention_heads,
        inner_dim,
        inner_activation,
        key_dim=None,
        value_dim=None,
        output_last_dim=None,
        norm_first=False,
        norm_epsilon=1e-12,
        output_dropout=0.0,
        attention_dropout=0.0,
        inner_dropout=0.0,
        attention_axes=None,
        use_query_residual=True,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        return_attention_scores=False,
        attention_type="multi_head",
        attention_kwargs=None,
        feedforward_type="dense",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        attention_initializer=None,
        use_rms_norm=False,
        diff_q_kv_att_layer_norm=False,
        num_kv_heads=None,
        src_block_size=None,
        tgt_block_size=None,
        output_range=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if feedforward_type not in _FEEDFORWARD_TYPES:
            raise NlpkitError(
                f"{type(self).__name__}: feedforward_type={feedforward_type!r} is not supported",
                hint=f"use one of {', '.join(_FEEDFORWARD_TYPES)}",
            )
        self._check_model_garden_options(
            norm_first, diff_q_kv_att_layer_norm, num_kv_heads, attention_type, src_block_size, tgt_block_size
        )
        self.num_attention_heads = num_attention_heads
        self.inner_dim = inner_dim
        self.inner_activation = keras.activations.get(inner_activation)
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.output_last_dim = output_last_dim
        self.norm_first = norm_first
        self.norm_epsilon = norm_epsilon
        self.output_dropout = output_dropout
        self.attention_dropout = attention_dropout
        self.inner_dropout = inner_dropout
        self.attention_axes = attention_axes
        self.use_query_residual = use_query_residual
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.return_attention_scores = return_attention_scores
        self.attention_type = attention_type
        self.attention_kwargs = dict(attention_kwargs or {})
        self.feedforward_type = feedforward_type
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        # Not `self.activity_regularizer`: Keras would apply that one to the block's own output.
        self.projection_activity_regularizer = keras.regularizers.get(activity_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.attention_initializer = attention_initializer and keras.initializers.get(attention_initializer)
        self.use_rms_norm = use_rms_norm
        self.diff_q_kv_att_layer_norm = diff_q_kv_att_layer_norm
        self.num_kv_heads = num_kv_heads
        self.src_block_size = src_block_size
        self.tgt_block_size = tgt_block_size
        self.output_range = output_range
        self.attention_layer_norm_kv = None
        self.output_dropout_layer = keras.layers.Dropout(output_dropout, dtype=self.dtype_policy)
        self.attention = None
        self.feedforward = None
        self.attention_layer_norm = None
        self.output_layer_norm = None

    def _check_model_garden_options(
        self, norm_first, diff_q_kv_att_layer_norm, num_kv_heads, attention_type, src_block_size, tgt_block_size
    ):
        name = type(self).__name__
        if tgt_block_size is not None and src_block_size is None:
            raise NlpkitError(
                f"{name}: tgt_block_size={tgt_block_size} needs src_block_size (block-sparse attention)",
                hint="set src_block_size too, or drop tgt_block_size",
            )
        if diff_q_kv_att_layer_norm and not norm_first:
            raise NlpkitError(
                f"{name}: diff_q_kv_att_layer_norm=True needs norm_first=True",
                hint="set norm_first=True or diff_q_kv_att_layer_norm=False",
            )
        if (num_kv_heads is not None or src_block_size is not None) and attention_type not in _GROUPABLE_ATTENTIONS:
            raise NlpkitError(
                f"{name}: num_kv_heads/src_block_size need attention_type 'multi_head', got {attention_type!r}",
                hint="leave attention_type unset with num_kv_heads or block sizes, or drop them",
            )

    def _uses_layer_norms(self):
        return True

    def _layer_norm(self, name, shape, rms=False):
        # Both norms compute in float32 and return the compute dtype.
        norm_class = RMSNorm if rms else keras.layers.LayerNormalization
        norm = norm_class(epsilon=self.norm_epsilon, dtype=self.dtype_policy, name=name)
        norm.build(shape)
        return norm

    def _projection_options(self):
        """Regularizers and constraints of the projections: only those set, so that attentions
        that take none of them still build."""
        options = dict(
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            activity_regularizer=self.projection_activity_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
        )
        return {key: value for key, value in options.items() if value is not None}

    def build(self, inputs_shape, attention_mask_shape=None, key_value_shape=None):
        if isinstance(inputs_shape, (list, tuple)) and isinstance(inputs_shape[0], (list, tuple)):
            inputs_shape, key_value_shape = inputs_shape
        width = inputs_shape[-1]
        output_width = self.output_last_dim or width
        if self.use_query_residual and output_width != width:
            raise NlpkitError(
                f"{type(self).__name__}: output_last_dim={self.output_last_dim} differs from the input width {width}",
                hint="set use_query_residual=False, or leave output_last_dim unset",
            )
        key_dim = self.key_dim or self._default_key_dim(width)
        attention_type, grouping = self.attention_type, {}
        if self.num_kv_heads is not None or self.src_block_size is not None:
            attention_type, grouping = "grouped_query", dict(
                num_kv_heads=self.num_kv_heads, src_block_size=self.src_block_size, tgt_block_size=self.tgt_block_size
            )
        attention_options = dict(
            num_heads=self.num_attention_heads,
            key_dim=key_dim,
            value_dim=self.value_dim,
            dropout=self.attention_dropout,
            use_bias=self.use_bias,
            output_shape=self.output_last_dim,
            attention_axes=self.attention_axes,
            kernel_initializer=clone_initializer(self.attention_initializer or self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="attention",
            **grouping,
            **self._projection_options(),
        )
        attention_options.update(self.attention_kwargs)  # the caller's attention options win
        self.attention = make_attention(attention_type, **attention_options)
        # Build now where the attention says how, so that a saved block restores its weights
        # without a call; others build on their first call.
        if isinstance(self.attention, (keras.layers.MultiHeadAttention, GroupedQueryAttention)):
            self.attention.build(inputs_shape, key_value_shape or inputs_shape)
        self.feedforward = PositionwiseFeedforward(
            self.inner_dim,
            self.inner_activation,
            use_gate=self.feedforward_type == "gated",
            inner_dropout=self.inner_dropout,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feedforward",
        )
        output_shape = (*inputs_shape[:-1], output_width)
        self.feedforward.build(output_shape)
        self.feedforward.regularize(
            self.kernel_regularizer, self.bias_regularizer, self.projection_activity_regularizer,
            self.kernel_constraint, self.bias_constraint,
        )
        if self._uses_layer_norms():
            self.attention_layer_norm = self._layer_norm(
                "attention_layer_norm", inputs_shape if self.norm_first else output_shape, rms=self.use_rms_norm
            )
            if self.diff_q_kv_att_layer_norm:
                self.attention_layer_norm_kv = self._layer_norm(
                    "attention_layer_norm_kv", key_value_shape or inputs_shape, rms=self.use_rms_norm
                )
            self.output_layer_norm = self._layer_norm("output_layer_norm", output_shape)

    def _default_key_dim(self, width):
        if width % self.num_attention_heads:
            raise NlpkitError(
                f"{type(self).__name__}: width {width} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}",
                hint="pass key_dim explicitly or change the number of heads",
            )
        return width // self.num_attention_heads

    # The residual and the norms are hooks, so that variants (ReZero) change only them.
    def _residual(self, source, update, sublayer):
        """`source + update` for the sub-layer named "attention" or "feedforward"."""
        return source + update

    def _pre_norm(self, x, norm):
        return norm(x) if self.norm_first else x

    def _post_norm(self, x, norm):
        return x if self.norm_first else norm(x)

    def call(self, inputs, attention_mask=None, key_value=None, output_range=None, training=None, padding_mask=None):
        query, key_value, source, attention_mask = self._attention_inputs(
            inputs, attention_mask, key_value, output_range, padding_mask
        )
        attention_output = self.attention(
            query,
            key_value,
            attention_mask=attention_mask,
            return_attention_scores=self.return_attention_scores,
            training=training,
        )
        if self.return_attention_scores:
            attention_output, scores = attention_output
        outputs = self._after_attention(attention_output, source, training)
        return (outputs, scores) if self.return_attention_scores else outputs

    # The steps of `call`, shared with variants whose attention takes other arguments (reuse).
    def _attention_inputs(self, inputs, attention_mask, key_value, output_range, padding_mask=None):
        """(query, key_value, residual source, mask): pre-norm applied, queries cut to `output_range`."""
        if isinstance(inputs, (list, tuple)):
            inputs, key_value = inputs
        normed = self._pre_norm(inputs, self.attention_layer_norm)
        if key_value is None:
            key_value = normed
        elif self.attention_layer_norm_kv is not None:
            key_value = self.attention_layer_norm_kv(key_value)
        query, source = normed, inputs
        attention_mask = merge_padding_mask(self._standard_mask(attention_mask, inputs), padding_mask)
        output_range = self.output_range if output_range is None else output_range
        if output_range is not None:
            # Slice before the attention: only the first k queries are computed at all.
            query, source = query[:, :output_range], source[:, :output_range]
            if attention_mask is not None:
                attention_mask = attention_mask[:, :output_range]
        return query, key_value, source, attention_mask

    def _after_attention(self, attention_output, source, training):
        """Residual and norm around the attention, then the feed-forward sub-layer."""
        attention_output = self.output_dropout_layer(attention_output, training=training)
        if self.use_query_residual:
            attention_output = self._residual(source, attention_output, "attention")
        attention_output = self._post_norm(attention_output, self.attention_layer_norm)

        ffn_output = self.feedforward(self._pre_norm(attention_output, self.output_layer_norm), training=training)
        ffn_output = self.output_dropout_layer(ffn_output, training=training)
        outputs = self._residual(attention_output, ffn_output, "feedforward")
        return self._post_norm(outputs, self.output_layer_norm)

    def compute_output_spec(
        self, inputs, attention_mask=None, key_value=None, output_range=None, training=None, padding_mask=None
    ):
        # Shapes are known without tracing `call`; tracing would run the softmax on placeholder
        # shapes with an unknown batch size, which keras.ops.softmax over a tuple of axes rejects.
        if isinstance(inputs, (list, tuple)):
            inputs, key_value = inputs
        query_shape = list(inputs.shape)
        output_range = self.output_range if output_range is None else output_range
        if output_range is not None:
            query_shape[1] = output_range if query_shape[1] is None else min(output_range, query_shape[1])
        output_shape = [*query_shape[:-1], self.output_last_dim or query_shape[-1]]
        outputs = keras.KerasTensor(output_shape, dtype=self.compute_dtype)
        if not self.return_attention_scores:
            return outputs
        query = keras.KerasTensor(query_shape, dtype=self.compute_dtype)
        _, scores = self.attention.compute_output_spec(
            query, inputs if key_value is None else key_value, return_attention_scores=True
        )
        return outputs, scores

    def _standard_mask(self, mask, inputs):
        """A `[B, S]` padding mask on 3-D inputs becomes `[B, 1, S]`; other masks pass as given."""
        if mask is not None and len(mask.shape) == 2 and len(inputs.shape) == 3:
            return ops.expand_dims(mask, axis=1)
        return mask

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in _PLAIN_CONFIG})
        config.update(
            inner_activation=keras.activations.serialize(self.inner_activation),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            activity_regularizer=keras.regularizers.serialize(self.projection_activity_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
            attention_initializer=self.attention_initializer and keras.initializers.serialize(self.attention_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="nlpkit")
class Transformer(TransformerEncoderBlock):
    """The older catalogue name of `TransformerEncoderBlock`; identical in every respect."""
