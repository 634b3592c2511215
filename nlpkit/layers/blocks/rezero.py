"""ReZero transformer ("ReZero is All You Need: Fast Convergence at Large Depth")."""

import keras

from nlpkit.errors import NlpkitError
from nlpkit.layers.blocks.encoder import TransformerEncoderBlock


@keras.saving.register_keras_serializable(package="nlpkit")
class ReZeroTransformer(TransformerEncoderBlock):
    """Transformer encoder block whose residual branches are scaled by a learned weight that starts at 0.

    `a = x + alpha * dropout(Attn(x))`, `out = a + alpha_ffn * dropout(FFN(a))`, each optionally
    followed by a layer norm (`use_layer_norm`, computed in float32). With alpha = 0 at
    initialisation the block starts as the identity, which lets deep stacks train without warm-up.

    Args:
      num_attention_heads, inner_dim, inner_activation, and every other argument of
        `TransformerEncoderBlock` except `norm_first` (must stay False: ReZero has no pre-norm).
        As in Model Garden, inner_dim defaults to 768 and inner_activation to "gelu".
      use_layer_norm: apply a layer norm after each residual.
      share_rezero: one residual weight for both sub-layers (True) or one each (False).

    Call, inputs and outputs: as `TransformerEncoderBlock` (including `output_range`).
    Weights: `rezero_alpha` (and `rezero_alpha_ffn` when not shared), scalars initialised at 0.
    """

    def __init__(
        self, num_attention_heads, inner_dim=768, inner_activation="gelu", use_layer_norm=False, share_rezero=True, **kwargs
    ):
        if kwargs.get("norm_first"):
            raise NlpkitError(
                "ReZeroTransformer: norm_first=True is not supported", hint="use TransformerEncoderBlock for pre-norm"
            )
        super().__init__(num_attention_heads, inner_dim, inner_activation, **kwargs)
        self.use_layer_norm = use_layer_norm
        self.share_rezero = share_rezero

    def build(self, inputs_shape, attention_mask_shape=None, key_value_shape=None):
        super().build(inputs_shape, attention_mask_shape, key_value_shape)
        self.rezero_alpha = self.add_weight(name="rezero_alpha", shape=(), initializer="zeros")
        self.rezero_alpha_ffn = None
        if not self.share_rezero:
            self.rezero_alpha_ffn = self.add_weight(name="rezero_alpha_ffn", shape=(), initializer="zeros")

    def _uses_layer_norms(self):
        return self.use_layer_norm

    def _residual(self, source, update, sublayer):
        alpha = self.rezero_alpha
        if sublayer == "feedforward" and self.rezero_alpha_ffn is not None:
            alpha = self.rezero_alpha_ffn
        return source + keras.ops.cast(alpha, update.dtype) * update

    def _post_norm(self, x, norm):
        return norm(x) if self.use_layer_norm else x

    def get_config(self):
        config = super().get_config()
        config.update(use_layer_norm=self.use_layer_norm, share_rezero=self.share_rezero)
        return config
