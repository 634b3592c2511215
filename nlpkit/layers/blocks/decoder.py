"""The transformer decoder block: causal self-attention (with a decoding cache), cross-attention
to an encoder's output, and a feed-forward network, each with residual and layer norm."""

import keras

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.cached import CachedAttention
from nlpkit.layers.blocks.encoder import TransformerEncoderBlock
from nlpkit.layers.feedforward import clone_initializer


@keras.saving.register_keras_serializable(package="nlpkit")
class TransformerDecoderBlock(TransformerEncoderBlock):
    """One transformer decoder layer ("Attention Is All You Need"), post- or pre-norm.

    A causal self-attention sub-layer in front of an encoder block whose attention is the
    cross-attention to `memory`. Post-norm (`norm_first=False`): for each sub-layer f in
    (causal self-attention, cross-attention, feed-forward) `x = LN(x + dropout(f(x)))`;
    pre-norm (`norm_first=True`): `x = x + dropout(f(LN(x)))` (memory is used as given).
    The self-attention is always causal (query t sees positions <= t). With a cache the block
    decodes: only the new positions are computed, and the self-attention keys/values of earlier
    positions come from the cache (see `CachedAttention` for the growing and fixed-size layouts).
    Layer norms compute in float32 under mixed precision.

    Args: those of `TransformerEncoderBlock` (num_attention_heads, inner_dim, inner_activation,
    key_dim, value_dim, output_last_dim, norm_first, norm_epsilon, output_dropout,
    attention_dropout, inner_dropout, use_query_residual, use_bias, kernel_initializer,
    bias_initializer, feedforward_type); `attention_type`/`attention_kwargs` choose the
    cross-attention (the self-attention is always `CachedAttention`). `attention_axes` and
    `return_attention_scores` are not supported.

    Call: `block(inputs, memory, self_attention_mask=None, cross_attention_mask=None, cache=None,
    decode_loop_step=None, training=None)`.
      inputs: `[B, T, D]` decoder states; memory: `[B, S, D_m]` encoder output.
      self_attention_mask: `[B, T, T]` (with a cache `[B, T, S_cache]`) or a `[B, T]` padding
        mask, combined with causality; cross_attention_mask: `[B, T, S]` or a `[B, S]` padding mask.
      cache: `{"key": [B, S_prev or S_max, N, H], "value": ...}`; decode_loop_step: the write
        position in a fixed-size cache, None to grow the cache.
    Output: `[B, T, D]`; with a cache `(output, updated_cache)`.
    Sub-layers: `self_attention`, `self_attention_layer_norm`, `cross_attention` (= `attention`),
    `cross_attention_layer_norm` (= `attention_layer_norm`), `feedforward`, `output_layer_norm`.
    """

    def __init__(self, num_attention_heads, inner_dim, inner_activation, **kwargs):
        if kwargs.get("attention_axes") is not None or kwargs.get("return_attention_scores"):
            raise NlpkitError(
                f"{type(self).__name__} does not support attention_axes or return_attention_scores",
                hint="leave them unset; call block.cross_attention directly for its scores",
            )
        super().__init__(num_attention_heads, inner_dim, inner_activation, **kwargs)
        self.self_attention = None
        self.self_attention_layer_norm = None

    @property
    def cross_attention(self):
        return self.attention

    @property
    def cross_attention_layer_norm(self):
        return self.attention_layer_norm

    def build(self, inputs_shape, memory_shape):
        super().build(inputs_shape, key_value_shape=memory_shape)
        self.self_attention = CachedAttention(
            num_heads=self.num_attention_heads,
            key_dim=self.key_dim or self._default_key_dim(inputs_shape[-1]),
            value_dim=self.value_dim,
            dropout=self.attention_dropout,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="self_attention",
        )
        self.self_attention.build(inputs_shape, inputs_shape)
        # Keras' LayerNormalization computes in float32 and returns the compute dtype.
        self.self_attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.norm_epsilon, dtype=self.dtype_policy, name="self_attention_layer_norm"
        )
        self.self_attention_layer_norm.build(inputs_shape)

    def call(
        self,
        inputs,
        memory,
        self_attention_mask=None,
        cross_attention_mask=None,
        cache=None,
        decode_loop_step=None,
        training=None,
    ):
        normed = self.self_attention_layer_norm(inputs) if self.norm_first else inputs
        mask = self._standard_mask(self_attention_mask, inputs)
        if cache is None:
            attended = self.self_attention(normed, normed, attention_mask=mask, use_causal_mask=True, training=training)
        else:
            attended, cache = self.self_attention(
                normed, normed, attention_mask=mask, cache=cache, decode_loop_step=decode_loop_step, training=training
            )
        hidden = inputs + self.output_dropout_layer(attended, training=training)
        if not self.norm_first:
            hidden = self.self_attention_layer_norm(hidden)
        # The rest is the encoder block with the memory as keys/values: cross-attention, then FFN.
        outputs = super().call(hidden, attention_mask=cross_attention_mask, key_value=memory, training=training)
        return outputs if cache is None else (outputs, cache)

    def compute_output_spec(self, inputs, memory, cache=None, decode_loop_step=None, **kwargs):
        # Shapes are known without tracing `call` (a trace would run keras.ops.softmax over a
        # tuple of axes on an unknown batch size, which the TensorFlow backend rejects).
        width = self.output_last_dim or inputs.shape[-1]
        outputs = keras.KerasTensor((*inputs.shape[:-1], width), dtype=self.compute_dtype)
        if cache is None:
            return outputs
        _, new_cache = self.self_attention.compute_output_spec(
            inputs, inputs, cache=cache, decode_loop_step=decode_loop_step
        )
        return outputs, new_cache


@keras.saving.register_keras_serializable(package="nlpkit")
class TransformerDecoderLayer(TransformerDecoderBlock):
    """The older catalogue name of `TransformerDecoderBlock`; identical in every respect."""
