"""Attention by name: what blocks, encoders, configs and CLI flags use to pick an attention.

The names live in the one registry, `nlpkit.registry` (kind "attention"). Every entry builds a
layer with the `MultiHeadAttention` call signature
`layer(query, value, key=None, attention_mask=None, return_attention_scores=False, training=None)`
from the common keyword arguments (`num_heads`, `key_dim`, `value_dim`, `dropout`, `use_bias`,
`output_shape`, `attention_axes`, `kernel_initializer`, `bias_initializer`, ... ) plus any
attention-specific ones. Names compose with ':' where an entry takes another attention
(e.g. `conditional-full:linear`, `conditional-full:conditional-full:linear`).
"""

from nlpkit import registry


def register_attention(name, **options):
    """Decorator: register a layer class (or factory) under `name`; see `nlpkit.registry.register`."""
    return registry.register("attention", name, stacklevel=2, **options)


def available_attentions():
    return registry.names("attention")


def make_attention(spec, **kwargs):
    """Build an attention layer from a registered name, an 'a:b' composition or a factory."""
    return registry.build("attention", spec, **kwargs)
