"""The transformer encoder block: attention and feed-forward, each with residual and layer norm."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.registry import make_attention
from nlpkit.layers.feedforward import PositionwiseFeedforward, clone_initializer

_FEEDFORWARD_TYPES = ("dense", "gated")


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

    Call: `block(x, attention_mask=None, key_value=None, output_range=None, training=None)` or
    `block([x, key_value], ...)`.
      x: `[B, T, D]`; key_value: `[B, S, D_kv]` for cross-attention (used as given, also under
        pre-norm); default self-attention on x (layer-normalised first under pre-norm).
      attention_mask: `[B, T, S]` (1 = may attend) or a `[B, S]` padding mask.
      output_range: compute only the first k query positions (CLS-only serving): the query is
        sliced before the attention, so the output is `[B, k, D]`, equal to the first k rows of
        the full output.
    Output: `[B, T, D]` (or `[B, T, output_last_dim]`), plus the scores `[B, N, T, S]` when
    `return_attention_scores`.
    Sub-layers (for weight conversion): `attention`, `attention_layer_norm`, `feedforward`
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if feedforward_type not in _FEEDFORWARD_TYPES:
            raise NlpkitError(
                f"{type(self).__name__}: feedforward_type={feedforward_type!r} is not supported",
                hint=f"use one of {', '.join(_FEEDFORWARD_TYPES)}",
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
        self.output_dropout_layer = keras.layers.Dropout(output_dropout, dtype=self.dtype_policy)
        self.attention = None
        self.feedforward = None
        self.attention_layer_norm = None
        self.output_layer_norm = None

    def _uses_layer_norms(self):
        return True

    def _layer_norm(self, name, shape):
        # Keras' LayerNormalization computes in float32 and returns the compute dtype.
        norm = keras.layers.LayerNormalization(epsilon=self.norm_epsilon, dtype=self.dtype_policy, name=name)
        norm.build(shape)
        return norm

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
        self.attention = make_attention(
            self.attention_type,
            num_heads=self.num_attention_heads,
            key_dim=key_dim,
            value_dim=self.value_dim,
            dropout=self.attention_dropout,
            use_bias=self.use_bias,
            output_shape=self.output_last_dim,
            attention_axes=self.attention_axes,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="attention",
            **self.attention_kwargs,
        )
        # Build now where the attention says how, so that a saved block restores its weights
        # without a call; others build on their first call.
        if isinstance(self.attention, keras.layers.MultiHeadAttention):
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
        if self._uses_layer_norms():
            self.attention_layer_norm = self._layer_norm(
                "attention_layer_norm", inputs_shape if self.norm_first else output_shape
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

    def call(self, inputs, attention_mask=None, key_value=None, output_range=None, training=None):
        query, key_value, source, attention_mask = self._attention_inputs(
            inputs, attention_mask, key_value, output_range
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
    def _attention_inputs(self, inputs, attention_mask, key_value, output_range):
        """(query, key_value, residual source, mask): pre-norm applied, queries cut to `output_range`."""
        if isinstance(inputs, (list, tuple)):
            inputs, key_value = inputs
        normed = self._pre_norm(inputs, self.attention_layer_norm)
        key_value = normed if key_value is None else key_value
        query, source, attention_mask = normed, inputs, self._standard_mask(attention_mask, inputs)
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

    def compute_output_spec(self, inputs, attention_mask=None, key_value=None, output_range=None, training=None):
        # Shapes are known without tracing `call`; tracing would run the softmax on placeholder
        # shapes with an unknown batch size, which keras.ops.softmax over a tuple of axes rejects.
        if isinstance(inputs, (list, tuple)):
            inputs, key_value = inputs
        query_shape = list(inputs.shape)
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
        config.update(
            num_attention_heads=self.num_attention_heads,
            inner_dim=self.inner_dim,
            inner_activation=keras.activations.serialize(self.inner_activation),
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            output_last_dim=self.output_last_dim,
            norm_first=self.norm_first,
            norm_epsilon=self.norm_epsilon,
            output_dropout=self.output_dropout,
            attention_dropout=self.attention_dropout,
            inner_dropout=self.inner_dropout,
            attention_axes=self.attention_axes,
            use_query_residual=self.use_query_residual,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            return_attention_scores=self.return_attention_scores,
            attention_type=self.attention_type,
            attention_kwargs=self.attention_kwargs,
            feedforward_type=self.feedforward_type,
        )
        return config


@keras.saving.register_keras_serializable(package="nlpkit")
class Transformer(TransformerEncoderBlock):
    """The older catalogue name of `TransformerEncoderBlock`; identical in every respect."""
