"""Attention layers of the catalogue; `registry` picks one by name (what blocks, configs and the CLI use).

Efficient and long-sequence inner attentions (fast-transformers style) live in `efficient/`.
"""

from nlpkit.layers.attention.bigbird import BigBirdAttention, BigBirdMasks
from nlpkit.layers.attention.cached import CachedAttention
from nlpkit.layers.attention.grouped_query import GroupedQueryAttention
from nlpkit.layers.attention.kernel import KernelAttention
from nlpkit.layers.attention.multi_channel import MultiChannelAttention, VotingAttention
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import available_attentions, make_attention, register_attention
from nlpkit.layers.attention.relative import (
    MultiHeadRelativeAttention,
    SinusoidalRelativeAttention,
    TwoStreamRelativeAttention,
)
from nlpkit.layers.attention.reuse import ReuseMultiHeadAttention
from nlpkit.layers.attention.talking_heads import TalkingHeadsAttention

__all__ = [
    "BigBirdAttention",
    "BigBirdMasks",
    "CachedAttention",
    "GroupedQueryAttention",
    "KernelAttention",
    "MultiChannelAttention",
    "MultiHeadAttention",
    "MultiHeadRelativeAttention",
    "ReuseMultiHeadAttention",
    "SinusoidalRelativeAttention",
    "TalkingHeadsAttention",
    "TwoStreamRelativeAttention",
    "VotingAttention",
    "available_attentions",
    "make_attention",
    "register_attention",
]
