"""The layer catalogue: backend-agnostic Keras 3 layers (keras.ops only).

Mask convention everywhere: `[B, T, S]` (or broadcastable), 1 = may attend, 0 = may not.
Every layer is registered for saving under the package name "nlpkit".
"""

from nlpkit.layers.attention import (
    BigBirdAttention,
    BigBirdMasks,
    CachedAttention,
    GroupedQueryAttention,
    KernelAttention,
    MultiChannelAttention,
    MultiHeadAttention,
    MultiHeadRelativeAttention,
    ReuseMultiHeadAttention,
    SinusoidalRelativeAttention,
    TalkingHeadsAttention,
    TwoStreamRelativeAttention,
    VotingAttention,
    available_attentions,
    make_attention,
    register_attention,
)
from nlpkit.layers.attention.efficient import (
    AttentionLayer,
    CausalLinearAttention,
    ClusteredAttention,
    ConditionalFullAttention,
    FullAttention,
    FullMask,
    ImprovedClusteredAttention,
    ImprovedClusteredCausalAttention,
    LengthMask,
    LinearAttention,
    LocalAttention,
    ReformerAttention,
    TriangularMask,
)
from nlpkit.layers.blocks.decoder import TransformerDecoderBlock, TransformerDecoderLayer
from nlpkit.layers.blocks.encoder import Transformer, TransformerEncoderBlock
from nlpkit.layers.blocks.mobilebert import MobileBertEmbedding, MobileBertTransformer
from nlpkit.layers.blocks.reuse import _FIXED_ARGUMENTS as _REUSE_FIXED_ARGUMENTS
from nlpkit.layers.blocks.reuse import ReuseTransformer
from nlpkit.layers.blocks.rezero import ReZeroTransformer
from nlpkit.layers.blocks.xl import TransformerXL, TransformerXLBlock
from nlpkit.layers.embeddings import OnDeviceEmbedding, PositionEmbedding
from nlpkit.layers.feedforward import GatedFeedforward, PositionwiseFeedforward
from nlpkit.layers.gaussian_process import (
    GaussianProcessClassificationHead,
    LaplaceRandomFeatureCovariance,
    RandomFeatureGaussianProcess,
    ResetCovarianceCallback,
    mean_field_logits,
)
from nlpkit.layers.normalization import RMSNorm
from nlpkit.layers.heads import ClassificationHead, MaskedLM, MatMulWithMargin
from nlpkit.layers.masks import (
    MaskedSoftmax,
    SelfAttentionMask,
    attention_mask_from_padding,
    causal_mask,
    combine_masks,
    masked_softmax,
)
from nlpkit.layers.relative_position import RelativePositionEncoding
from nlpkit.layers.spectral_norm import SpectralNormalization
from nlpkit.registry import register

# Blocks by name; "encoder:linear" gives a block whose attention_type is "linear".
_COMPOSES_ATTENTION = dict(inner="attention_type", inner_kind="attention", pass_name=True)
register("block", "encoder", TransformerEncoderBlock, **_COMPOSES_ATTENTION)
register("block", "decoder", TransformerDecoderBlock, **_COMPOSES_ATTENTION)
register("block", "rezero", ReZeroTransformer, **_COMPOSES_ATTENTION)
register("block", "mobilebert", MobileBertTransformer, **_COMPOSES_ATTENTION)
register("block", "reuse", ReuseTransformer, fixed=_REUSE_FIXED_ARGUMENTS)
register("block", "xl", TransformerXLBlock)

__all__ = [name for name in dir() if not name.startswith("_") and name[0].isupper() or name in (
    "attention_mask_from_padding", "available_attentions", "causal_mask", "combine_masks", "make_attention",
    "masked_softmax", "mean_field_logits", "register_attention",
)]
