"""The layer catalogue: backend-agnostic Keras 3 layers (keras.ops only).

Mask convention everywhere: `[B, T, S]` (or broadcastable), 1 = may attend, 0 = may not.
"""

from nlpkit.layers.attention import MultiHeadAttention, available_attentions, make_attention, register_attention
from nlpkit.layers.masks import (
    MaskedSoftmax,
    SelfAttentionMask,
    attention_mask_from_padding,
    causal_mask,
    combine_masks,
    masked_softmax,
)

__all__ = [
    "MaskedSoftmax",
    "MultiHeadAttention",
    "SelfAttentionMask",
    "attention_mask_from_padding",
    "available_attentions",
    "causal_mask",
    "combine_masks",
    "make_attention",
    "masked_softmax",
    "register_attention",
]
