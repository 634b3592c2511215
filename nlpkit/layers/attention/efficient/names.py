"""Inner attentions by name ('linear', 'local', ...): the kind "inner_attention" of `nlpkit.registry`."""

from nlpkit import registry


def register_inner_attention(name, **options):
    """Decorator: register an inner-attention class under `name`; see `nlpkit.registry.register`."""
    return registry.register("inner_attention", name, stacklevel=2, **options)


def make_inner_attention(spec, **kwargs):
    """Build the inner attention `spec` ('linear', 'conditional-full:local', ...) from the keyword
    arguments its constructor (and, composed, each inner one) accepts; the others are ignored."""
    return registry.build("inner_attention", spec, inherited=kwargs)
