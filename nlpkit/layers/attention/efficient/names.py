"""Inner attentions by name ('linear', 'local', ...), used by ConditionalFullAttention and the
registry adapters. A name's keyword arguments are filtered to those its constructor takes."""

import inspect

from nlpkit.errors import NlpkitError

INNER_ATTENTIONS = {}


def register_inner_attention(name):
    def decorator(cls):
        INNER_ATTENTIONS[name] = cls
        return cls

    return decorator


def inner_attention_class(name):
    import nlpkit.layers.attention.efficient  # noqa: F401 - registers every inner attention

    if name not in INNER_ATTENTIONS:
        raise NlpkitError(f"unknown inner attention '{name}'", hint=f"choose one of: {', '.join(sorted(INNER_ATTENTIONS))}")
    return INNER_ATTENTIONS[name]


def constructor_arguments(cls):
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")}
    return names


def make_inner_attention(name, **kwargs):
    """Build the inner attention `name` from the keyword arguments its constructor accepts."""
    cls = inner_attention_class(name)
    accepted = constructor_arguments(cls) - {"name", "dtype", "trainable", "autocast"}
    return cls(**{key: value for key, value in kwargs.items() if key in accepted})
