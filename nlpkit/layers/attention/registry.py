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
    """Import every module of the attention package so their `register_attention` calls run."""
    import importlib
    import pkgutil

    import nlpkit.layers.attention as package

    for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        importlib.import_module(module.name)


def make_attention(spec, **kwargs):
    """Build an attention layer from a registered name, a 'name:inner' composition or a factory."""
    if callable(spec):
        return spec(**kwargs)
    name, _, inner = str(spec).partition(":")
    if name not in _REGISTRY:
        _load_catalogue()
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
