"""The transformer decoder block: causal self-attention (with a decoding cache), cross-attention
to an encoder's output, and a feed-forward network, each with residual and layer norm."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.cached import CachedAttention
from nlpkit.layers.attention.multi_channel import MultiChannelAttention
from nlpkit.layers.blocks.encoder import TransformerEncoderBlock
from nlpkit.layers.feedforward import clone_initializer
from nlpkit.errors import one_of_names

# Model Garden's TransformerDecoderBlock names of the arguments nlpkit names otherwise: nlpkit's -> theirs.
_MODEL_GARDEN_NAMES = {"inner_dim": "intermediate_size", "inner_activation": "intermediate_activation",
                       "output_dropout": "dropout_rate", "attention_dropout": "attention_dropout_rate",
                       "inner_dropout": "intermediate_dropout"}


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
    `return_attention_scores` are not supported. Model Garden's names are accepted too (the config
    keeps nlpkit's): `intermediate_size` = inner_dim, `intermediate_activation` = inner_activation,
    `dropout_rate` = output_dropout, `attention_dropout_rate` = attention_dropout,
    `intermediate_dropout` = inner_dropout; inner_dim and inner_activation are required under one name.
      multi_channel_cross_attention: the cross-attention is `MultiChannelAttention` (Model
        Garden's option, default False): memory holds C context streams `[B, C, S, D_m]`, the
        query attends into each separately and the C results are merged with the call's
        `context_attention_weights`. Leaves `attention_type` at its default.

    Call: `block(inputs, memory, self_attention_mask=None, cross_attention_mask=None, cache=None,
    decode_loop_step=None, training=None, context_attention_weights=None)`, or Model Garden's
    `block([inputs, memory, cross_attention_mask, self_attention_mask], cache=...)` (a fifth
    element: the context weights, with `multi_channel_cross_attention`).
      inputs: `[B, T, D]` decoder states; memory: `[B, S, D_m]` encoder output (`[B, C, S, D_m]`
        with multi-channel cross-attention).
      self_attention_mask: `[B, T, T]` (with a cache `[B, T, S_cache]`) or a `[B, T]` padding
        mask, combined with causality; cross_attention_mask: `[B, T, S]` or a `[B, S]` padding
        mask (multi-channel: `[B, C, T, S]` or a `[B, C, S]` padding mask per context).
      context_attention_weights: multi-channel only, required there: `[B, C]` or `[B, N, T, C]`
        weights of the contexts (e.g. from `VotingAttention`).
      cache: `{"key": [B, S_prev or S_max, N, H], "value": ...}`; decode_loop_step: the write
        position in a fixed-size cache, None to grow the cache.
    Output: `[B, T, D]`; with a cache `(output, updated_cache)`.
    Sub-layers: `self_attention`, `self_attention_layer_norm`, `cross_attention` (= `attention`),
    `cross_attention_layer_norm` (= `attention_layer_norm`), `feedforward`, `output_layer_norm`.
    """

    def __init__(self, num_attention_heads, inner_dim=None, inner_activation=None, multi_channel_cross_attention=False,
                 **kwargs):
        name = type(self).__name__
        kwargs.update(inner_dim=inner_dim, inner_activation=inner_activation)
        for ours, theirs in _MODEL_GARDEN_NAMES.items():
            value = one_of_names(name, (ours, theirs), (kwargs.pop(ours, None), kwargs.pop(theirs, None)))
            if value is not None:
                kwargs[ours] = value
        missing = [f"{ours} (Model Garden: {_MODEL_GARDEN_NAMES[ours]})" for ours in ("inner_dim", "inner_activation")
                   if ours not in kwargs]
        if missing:
            raise NlpkitError(f"{name} needs {' and '.join(missing)}", hint="e.g. inner_dim=3072, inner_activation='gelu'")
        if kwargs.get("attention_axes") is not None or kwargs.get("return_attention_scores"):
            raise NlpkitError(
                f"{name} does not support attention_axes or return_attention_scores",
                hint="leave them unset; call block.cross_attention directly for its scores",
            )
        if multi_channel_cross_attention:
            if kwargs.get("attention_type", "multi_head") != "multi_head":
                raise NlpkitError(
                    f"{name}: multi_channel_cross_attention=True sets the cross-attention, "
                    f"attention_type={kwargs['attention_type']!r} would replace it",
                    hint="leave attention_type unset, or set multi_channel_cross_attention=False",
                )
            kwargs["attention_type"] = MultiChannelAttention
        super().__init__(num_attention_heads, **kwargs)
        self.multi_channel_cross_attention = multi_channel_cross_attention
        self.self_attention = None
        self.self_attention_layer_norm = None

    @property
    def cross_attention(self):
        return self.attention

    @property
    def cross_attention_layer_norm(self):
        return self.attention_layer_norm

    def build(self, inputs_shape, memory_shape=None):
        if memory_shape is None and isinstance(inputs_shape[0], (list, tuple)):  # Model Garden's list
            inputs_shape, memory_shape = inputs_shape[0], inputs_shape[1]
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
        memory=None,
        self_attention_mask=None,
        cross_attention_mask=None,
        cache=None,
        decode_loop_step=None,
        training=None,
        context_attention_weights=None,
    ):
        if isinstance(inputs, (list, tuple)):
            inputs, memory, cross_attention_mask, self_attention_mask, context_attention_weights = (
                self._model_garden_inputs(inputs, memory)
            )
        if context_attention_weights is not None and not self.multi_channel_cross_attention:
            raise NlpkitError(
                f"{self.name}: context_attention_weights need multi_channel_cross_attention=True",
                hint="drop the context weights, or build the block with multi_channel_cross_attention=True",
            )
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
        outputs = self._cross_attention_and_feedforward(
            hidden, memory, cross_attention_mask, context_attention_weights, training
        )
        return outputs if cache is None else (outputs, cache)

    def _model_garden_inputs(self, inputs, memory):
        """`[inputs, memory, cross mask, self mask(, context weights)]` -> those five (None-padded)."""
        expected = 5 if self.multi_channel_cross_attention else 4
        if memory is not None or len(inputs) != expected:
            raise NlpkitError(
                f"{self.name}: a list input must be [inputs, memory, cross_attention_mask, self_attention_mask"
                f"{', context_attention_weights' if expected == 5 else ''}] with nothing else positional, "
                f"got {len(inputs)} elements",
                hint="or call block(inputs, memory, ...) with keyword masks",
            )
        return (*inputs, None) if expected == 4 else tuple(inputs)

    def _cross_attention_and_feedforward(self, hidden, memory, cross_attention_mask, context_weights, training):
        """The encoder block with the memory as keys/values: cross-attention, then FFN."""
        if not self.multi_channel_cross_attention:
            return super().call(hidden, attention_mask=cross_attention_mask, key_value=memory, training=training)
        query, memory, source, mask = self._attention_inputs(hidden, cross_attention_mask, memory, None)
        if mask is not None and len(mask.shape) == 3:  # [B, C, S] key padding per context
            mask = ops.expand_dims(mask, 2)
        attended = self.attention(
            query, memory, context_attention_weights=context_weights, attention_mask=mask, training=training
        )
        return self._after_attention(attended, source, training)

    def compute_output_spec(self, inputs, memory=None, cache=None, decode_loop_step=None, **kwargs):
        # Shapes are known without tracing `call` (a trace would run keras.ops.softmax over a
        # tuple of axes on an unknown batch size, which the TensorFlow backend rejects).
        if isinstance(inputs, (list, tuple)):
            inputs = inputs[0]
        width = self.output_last_dim or inputs.shape[-1]
        outputs = keras.KerasTensor((*inputs.shape[:-1], width), dtype=self.compute_dtype)
        if cache is None:
            return outputs
        _, new_cache = self.self_attention.compute_output_spec(
            inputs, inputs, cache=cache, decode_loop_step=decode_loop_step
        )
        return outputs, new_cache

    def get_config(self):
        config = super().get_config()
        if self.multi_channel_cross_attention:
            config["attention_type"] = "multi_head"  # the constructor's default; the flag sets the class
        config["multi_channel_cross_attention"] = self.multi_channel_cross_attention
        return config


@keras.saving.register_keras_serializable(package="nlpkit")
class TransformerDecoderLayer(TransformerDecoderBlock):
    """The older catalogue name of `TransformerDecoderBlock`; identical in every respect."""
