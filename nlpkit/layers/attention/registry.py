"""Attention by name: what blocks, encoders, configs and CLI flags use to pick an attention.

Every entry builds a layer with the `MultiHeadAttention` call signature
`layer(query, value, key=None, attention_mask=None, return_attention_scores=False, training=None)`
from the common keyword arguments (`num_heads`, `key_dim`, `value_dim`, `dropout`, `use_bias`,
`output_shape`, `attention_axes`, `kernel_initializer`, `bias_initializer`, ... ) plus any
attention-specific ones. Names compose with ':' where an entry takes another attention
(e.g. `conditional-full:linear`): the part after the first ':' is passed as `inner=`.
"""

from nlpkit.errors import NlpkitError

_REGISTRY = {}


def register_attention(name):
    """Decorator: register `factory(**kwargs) -> layer` under `name`."""

    def decorator(factory):
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_attentions():
    _load_catalogue()
    return sorted(_REGISTRY)


def _load_catalogue():
    """Import the attention modules so their `register_attention` calls run."""
    import importlib

    for module in ("multi_head", "talking_heads", "kernel", "bigbird", "inner", "relative"):
        try:
            importlib.import_module(f"nlpkit.layers.attention.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"nlpkit.layers.attention.{module}":
                raise


def make_attention(spec, **kwargs):
    """Build an attention layer from a registered name, a 'name:inner' composition or a factory."""
    if callable(spec):
        return spec(**kwargs)
    _load_catalogue()
    name, _, inner = str(spec).partition(":")
    if name not in _REGISTRY:
        raise NlpkitError(
            f"unknown attention '{spec}'", hint=f"choose one of: {', '.join(sorted(_REGISTRY))}"
        )
    if inner:
        kwargs["inner"] = inner
    return _REGISTRY[name](**kwargs)


@register_attention("multi_head")
def _multi_head(**kwargs):
    from nlpkit.layers.attention.multi_head import MultiHeadAttention

    return MultiHeadAttention(**kwargs)
