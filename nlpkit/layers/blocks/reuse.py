"""The reuse transformer block: an encoder block whose attention reuses heads of a lower layer
("Leveraging redundancy in attention with Reuse Transformers", Bhojanapalli et al. 2021)."""

import keras

from nlpkit.errors import NlpkitError
from nlpkit.layers.blocks.encoder import TransformerEncoderBlock
from nlpkit.errors import one_of_names

# Fixed by this block: the attention is always ReuseMultiHeadAttention and the scores are
# always returned (the next block needs them).
_FIXED_ARGUMENTS = ("attention_type", "attention_kwargs", "return_attention_scores")


@keras.saving.register_keras_serializable(package="nlpkit")
class ReuseTransformer(TransformerEncoderBlock):
    """`TransformerEncoderBlock` with `ReuseMultiHeadAttention`, passing attention scores upward.

    The block takes the attention probabilities of the block below, reuses the first
    `reuse_attention` heads of them, computes the other heads afresh, and returns its own
    `[B, N, T, S]` probabilities for the block above. Stack them as
    `x, scores = block_1(x, mask)`, `x, scores = block_2(x, mask, reuse_attention_scores=scores)`.

    Args:
      reuse_attention: number of heads to reuse (0 = none, -1 = all); see `ReuseMultiHeadAttention`.
      use_relative_pe, pe_max_seq_length: the fresh heads' learned relative position bias (default
        False, 512); see `ReuseMultiHeadAttention`.
      layer_idx: this block's index in the stack (Model Garden's; default None). Block 0 reuses
        nothing, whatever `reuse_attention` says.
      max_reuse_layer_idx: blocks with `layer_idx` above it reuse nothing (default None: no limit).
        Where reuse is off the block computes every head and ignores `reuse_attention_scores`, so
        a stack can pass each block the scores of the one below unconditionally.
      head_size: Model Garden's name of `key_dim` (give one of them, or both equal); the config
        keeps `key_dim`.
      attention_axes: as for `TransformerEncoderBlock` (axes attended over).
      Everything else as `TransformerEncoderBlock` (num_attention_heads, inner_dim,
      inner_activation, key_dim, value_dim, output_last_dim, norm_first, norm_epsilon,
      output_dropout, attention_dropout, inner_dropout, use_query_residual, use_bias,
      kernel_initializer, bias_initializer, feedforward_type), except `attention_type`,
      `attention_kwargs` and `return_attention_scores`, which this block fixes.

    Call: `block(inputs, attention_mask=None, reuse_attention_scores=None, key_value=None,
    output_range=None, training=None, padding_mask=None)`; inputs `[B, T, D]`, attention_mask
    `[B, T, S]` or a `[B, S]` padding mask, padding_mask `[B, S]` (as for `TransformerEncoderBlock`),
    reuse_attention_scores `[B, N', T, S]` (required when this block reuses heads),
    key_value `[B, S, D]` for cross-attention, output_range k computes the first k positions only.
    Output: `(outputs [B, T, D], scores [B, N, T, S])`.
    """

    def __init__(
        self,
        num_attention_heads,
        inner_dim,
        inner_activation,
        reuse_attention=0,
        use_relative_pe=False,
        pe_max_seq_length=512,
        layer_idx=None,
        max_reuse_layer_idx=None,
        head_size=None,
        **kwargs,
    ):
        fixed = [name for name in _FIXED_ARGUMENTS if name in kwargs]
        if fixed:
            raise NlpkitError(
                f"ReuseTransformer fixes {', '.join(fixed)}",
                hint="use TransformerEncoderBlock for another attention or without returned scores",
            )
        key_dim = one_of_names("ReuseTransformer", ("key_dim", "head_size"), (kwargs.pop("key_dim", None), head_size))
        self.reuse_attention = reuse_attention
        self.layer_idx = layer_idx
        self.max_reuse_layer_idx = max_reuse_layer_idx
        attention_kwargs = dict(
            reuse_attention=self.effective_reuse_attention,
            use_relative_pe=use_relative_pe,
            pe_max_seq_length=pe_max_seq_length,
        )
        super().__init__(
            num_attention_heads,
            inner_dim,
            inner_activation,
            key_dim=key_dim,
            attention_type="reuse",
            attention_kwargs=attention_kwargs,
            return_attention_scores=True,
            **kwargs,
        )
        self.use_relative_pe = use_relative_pe
        self.pe_max_seq_length = pe_max_seq_length

    @property
    def effective_reuse_attention(self):
        """`reuse_attention`, or 0 for the first block and blocks above `max_reuse_layer_idx`
        (as Model Garden overrides it)."""
        if self.layer_idx is None:
            return self.reuse_attention
        beyond = self.max_reuse_layer_idx is not None and self.layer_idx > self.max_reuse_layer_idx
        return 0 if self.layer_idx == 0 or beyond else self.reuse_attention

    def call(
        self,
        inputs,
        attention_mask=None,
        reuse_attention_scores=None,
        key_value=None,
        output_range=None,
        training=None,
        padding_mask=None,
    ):
        query, key_value, source, attention_mask = self._attention_inputs(
            inputs, attention_mask, key_value, output_range, padding_mask
        )
        output_range = self.output_range if output_range is None else output_range
        if output_range is not None and reuse_attention_scores is not None:
            reuse_attention_scores = reuse_attention_scores[:, :, :output_range]
        attention_output, scores = self.attention(
            query,
            key_value,
            attention_mask=attention_mask,
            reuse_attention_scores=reuse_attention_scores,
            return_attention_scores=True,
            training=training,
        )
        return self._after_attention(attention_output, source, training), scores

    def compute_output_spec(self, inputs, reuse_attention_scores=None, **kwargs):
        return super().compute_output_spec(inputs, **kwargs)

    def get_config(self):
        config = super().get_config()
        for name in _FIXED_ARGUMENTS:
            config.pop(name)
        config.update(
            reuse_attention=self.reuse_attention,
            use_relative_pe=self.use_relative_pe,
            pe_max_seq_length=self.pe_max_seq_length,
            layer_idx=self.layer_idx,
            max_reuse_layer_idx=self.max_reuse_layer_idx,
        )
        return config
