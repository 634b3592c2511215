"""Position-wise feed-forward networks, plain and gated ("GLU Variants Improve Transformer")."""

import keras

from nlpkit.errors import NlpkitError

_DROPOUT_POSITIONS = ("before_residual", "after_residual")


def clone_initializer(initializer):
    """A fresh initializer with the same config, so sub-layers never share one seeded object."""
    return keras.initializers.get(keras.initializers.serialize(keras.initializers.get(initializer)))


@keras.saving.register_keras_serializable(package="nlpkit")
class PositionwiseFeedforward(keras.layers.Layer):
    """The feed-forward transform alone: `out(dropout(act(x W) [* (x V)]))`, no residual, no norm.

    With `use_gate=True` it is a gated linear unit: the activated projection is multiplied by a
    second, linear projection (GEGLU with "gelu", ReGLU with "relu", SwiGLU with "silu").
    Transformer blocks use it as their FFN; `GatedFeedforward` stacks it with residuals.

    Args:
      inner_dim: size of the inner projection.
      inner_activation: activation of the inner projection (name or callable).
      use_gate: multiply by a linear gate projection (GLU variants).
      inner_dropout: dropout rate on the inner activations.
      output_dim: width of the output (default: the input width D).
      use_bias: whether the projections have biases.
      kernel_initializer, bias_initializer: initializers of the projections.

    Call: `layer(x, training=None)`; x `[..., D]`. Output `[..., output_dim or D]`.
    Sub-layers: `inner_dense`, `gate_dense` (None without gate), `output_dense`.
    """

    def __init__(
        self,
        inner_dim,
        inner_activation,
        use_gate=False,
        inner_dropout=0.0,
        output_dim=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.inner_dim = inner_dim
        self.inner_activation = keras.activations.get(inner_activation)
        self.use_gate = use_gate
        self.inner_dropout = inner_dropout
        self.output_dim = output_dim
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.inner_dense = self._dense(inner_dim, "inner_dense", activation=self.inner_activation)
        self.gate_dense = self._dense(inner_dim, "gate_dense") if use_gate else None
        self.inner_dropout_layer = keras.layers.Dropout(inner_dropout, dtype=self.dtype_policy)
        self.output_dense = None

    def _dense(self, units, name, activation=None):
        return keras.layers.Dense(
            units,
            activation=activation,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        self.output_dense = self._dense(self.output_dim or input_shape[-1], "output_dense")
        self.inner_dense.build(input_shape)
        if self.gate_dense is not None:
            self.gate_dense.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.inner_dim))

    def call(self, inputs, training=None):
        hidden = self.inner_dense(inputs)
        if self.gate_dense is not None:
            hidden = hidden * self.gate_dense(inputs)
        hidden = self.inner_dropout_layer(hidden, training=training)
        return self.output_dense(hidden)

    def regularize(self, kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                   kernel_constraint=None, bias_constraint=None):
        """Give the built projections these regularizers and constraints (a containing block's)."""
        for dense in (self.inner_dense, self.gate_dense, self.output_dense):
            if dense is None:
                continue
            dense.activity_regularizer = activity_regularizer
            for variable, regularizer, constraint in (
                (dense.kernel, kernel_regularizer, kernel_constraint),
                (dense.bias, bias_regularizer, bias_constraint),
            ):
                if variable is not None:
                    variable.regularizer, variable.constraint = regularizer, constraint

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim or input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            inner_dim=self.inner_dim,
            inner_activation=keras.activations.serialize(self.inner_activation),
            use_gate=self.use_gate,
            inner_dropout=self.inner_dropout,
            output_dim=self.output_dim,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="nlpkit")
class GatedFeedforward(keras.layers.Layer):
    """`num_blocks` stacked feed-forward sub-layers, each with a residual and optional layer norm.

    Each block computes `y = PositionwiseFeedforward(x)` (gated when `use_gate`), then
    `x = LayerNorm(x + dropout(y))` for `dropout_position="before_residual"`, or
    `x = dropout(LayerNorm(x + y))` for `"after_residual"`; without `apply_output_layer_norm`
    the norm is skipped. The layer norm computes in float32 under mixed precision.

    Args:
      inner_dim: size of each block's inner projection (default 768, as in Model Garden).
      inner_activation: activation of the inner projection ("gelu" + gate = GEGLU, the
        default; "relu" + gate = ReGLU, "silu" + gate = SwiGLU).
      dropout: dropout rate of each block's output (see `dropout_position`).
      use_gate: gated linear unit (True) or a plain two-layer FFN (False).
      num_blocks: number of stacked blocks (each with its own weights).
      dropout_position: "before_residual" or "after_residual".
      apply_output_layer_norm: layer-normalise each block's output.
      inner_dropout: dropout rate on the inner activations.
      norm_epsilon: epsilon of the layer norms.
      use_bias, kernel_initializer, bias_initializer: of the projections.

    Call: `layer(x, training=None)`; x `[B, T, D]` (any `[..., D]`). Output: same shape as x.
    """

    def __init__(
        self,
        inner_dim=768,
        inner_activation="gelu",
        dropout=0.0,
        use_gate=True,
        num_blocks=1,
        dropout_position="before_residual",
        apply_output_layer_norm=True,
        inner_dropout=0.0,
        norm_epsilon=1e-12,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if dropout_position not in _DROPOUT_POSITIONS:
            raise NlpkitError(
                f"GatedFeedforward: dropout_position={dropout_position!r} is not supported",
                hint=f"use one of {', '.join(_DROPOUT_POSITIONS)}",
            )
        self.inner_dim = inner_dim
        self.inner_activation = keras.activations.get(inner_activation)
        self.dropout = dropout
        self.use_gate = use_gate
        self.num_blocks = num_blocks
        self.dropout_position = dropout_position
        self.apply_output_layer_norm = apply_output_layer_norm
        self.inner_dropout = inner_dropout
        self.norm_epsilon = norm_epsilon
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.blocks = [
            PositionwiseFeedforward(
                inner_dim,
                self.inner_activation,
                use_gate=use_gate,
                inner_dropout=inner_dropout,
                use_bias=use_bias,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name=f"feedforward_{i}",
            )
            for i in range(num_blocks)
        ]
        self.layer_norms = [
            keras.layers.LayerNormalization(
                epsilon=norm_epsilon, dtype=self.dtype_policy, name=f"output_layer_norm_{i}"
            )
            for i in range(num_blocks if apply_output_layer_norm else 0)
        ]
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)
        for norm in self.layer_norms:
            norm.build(input_shape)

    def call(self, inputs, training=None):
        outputs = inputs
        for i, block in enumerate(self.blocks):
            update = block(outputs, training=training)
            if self.dropout_position == "before_residual":
                update = self.dropout_layer(update, training=training)
            outputs = outputs + update
            if self.apply_output_layer_norm:
                outputs = self.layer_norms[i](outputs)
            if self.dropout_position == "after_residual":
                outputs = self.dropout_layer(outputs, training=training)
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            inner_dim=self.inner_dim,
            inner_activation=keras.activations.serialize(self.inner_activation),
            dropout=self.dropout,
            use_gate=self.use_gate,
            num_blocks=self.num_blocks,
            dropout_position=self.dropout_position,
            apply_output_layer_norm=self.apply_output_layer_norm,
            inner_dropout=self.inner_dropout,
            norm_epsilon=self.norm_epsilon,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
