"""Every read or write of Keras MultiHeadAttention's private internals, in one module.

The catalogue's attentions subclass `keras.layers.MultiHeadAttention` for its projections,
arguments and config. Where its public API does the job it is used directly (`num_heads`,
`key_dim`, `value_dim`, `dropout`, `use_bias`, `attention_axes`, `query_dense`, `key_dense`,
`value_dense`, `output_dense`, `ops.dot_product_attention`). What it does not expose is read
here, and tests/layers/attention/test_keras_mha.py pins the behaviour relied on, so that a
Keras release that changes it fails in one test instead of deep inside an attention.

Two hooks are method overrides and so cannot move here: `_compute_attention(query, key, value,
attention_mask, training, return_attention_scores)`, which Keras' `call` invokes between the
projections and the output projection (with any causal mask already folded into
`attention_mask` for a subclass), and `_build_attention(rank)`, which `build` invokes.
"""

import math


def logit_scale(layer):
    """1/sqrt(key_dim): the factor on queries before the dot product (as Keras applies it)."""
    return 1.0 / math.sqrt(float(layer.key_dim))


def score_equation(layer):
    """einsum equation `(key, query) -> scores [B, N, <T axes>, <S axes>]` (after build)."""
    return layer._dot_product_equation


def combine_equation(layer):
    """einsum equation `(probabilities, value) -> [B, <T axes>, N, H]` (after build)."""
    return layer._combine_equation


def probability_dropout(layer):
    """The Dropout layer Keras applies to the attention probabilities (after build)."""
    return layer._dropout_layer


def set_probability_dropout(layer, dropout_layer):
    layer._dropout_layer = dropout_layer


def build_attention(layer, rank):
    """Keras' `_build_attention`: equations, softmax and probability dropout for inputs of `rank`."""
    layer._build_attention(rank)


def sublayer_kwargs(layer):
    """Initializers, regularizers, constraints and dtype that Keras gives its projections."""
    return layer._get_common_kwargs_for_sublayer()


def kernel_settings(layer):
    """(fresh copy of the kernel initializer, kernel regularizer, kernel constraint)."""
    initializer = layer._kernel_initializer
    return initializer.__class__.from_config(initializer.get_config()), layer._kernel_regularizer, layer._kernel_constraint


def bias_initializer(layer):
    return layer._bias_initializer


def output_shape(layer):
    """The `output_shape` constructor argument (None = the query's last dim)."""
    return layer._output_shape


def make_output_dense(layer, query_shape, name):
    """The output projection `[B, T, N, H] -> [B, T, D]` Keras would build for `query_shape`."""
    return layer._make_output_dense(query_shape, sublayer_kwargs(layer), name)


def replace_projections(layer, query, key, value, output):
    """Install other projection layers (None: that projection is not used)."""
    layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense = query, key, value, output


def gate_projection(layer):
    """The gate projection of `use_gate=True` (multiplied into the heads), else None."""
    return layer._gate_dense if layer._use_gate else None


def sliding_window(layer):
    """The `sliding_window` constructor argument (None = no window)."""
    return layer._sliding_window
