"""Efficient and long-sequence inner attentions behind one contract (after fast-transformers).

`AttentionLayer` projects `[B,T,D]` inputs to heads and calls an inner attention with
`[B,T,N,H]` tensors and mask objects; the registry adapters (`adapter`) make every inner
attention usable wherever a MultiHeadAttention is (blocks, encoders, configs, CLI names).
"""

from nlpkit.layers.attention.efficient.clustered import (
    ClusteredAttention,
    ImprovedClusteredAttention,
    ImprovedClusteredCausalAttention,
)
from nlpkit.layers.attention.efficient.conditional import ConditionalFullAttention
from nlpkit.layers.attention.efficient.full import FullAttention
from nlpkit.layers.attention.efficient.layer import AttentionLayer
from nlpkit.layers.attention.efficient.linear import CausalLinearAttention, LinearAttention
from nlpkit.layers.attention.efficient.local import LocalAttention
from nlpkit.layers.attention.efficient.masks import FullMask, LengthMask, TriangularMask
from nlpkit.layers.attention.efficient.reformer import ReformerAttention
from nlpkit.layers.attention.efficient.adapter import InnerAttentionAdapter  # noqa: E402,I001 - after the attentions

__all__ = [
    "AttentionLayer",
    "CausalLinearAttention",
    "ClusteredAttention",
    "ConditionalFullAttention",
    "FullAttention",
    "FullMask",
    "ImprovedClusteredAttention",
    "ImprovedClusteredCausalAttention",
    "InnerAttentionAdapter",
    "LengthMask",
    "LinearAttention",
    "LocalAttention",
    "ReformerAttention",
    "TriangularMask",
]
