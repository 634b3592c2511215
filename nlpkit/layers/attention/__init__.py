"""Attention layers of the catalogue; see `registry` for choosing one by name."""

from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import available_attentions, make_attention, register_attention

__all__ = ["MultiHeadAttention", "available_attentions", "make_attention", "register_attention"]
