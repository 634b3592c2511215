"""One registry of named constructors: attentions (outer and inner), blocks, encoder kinds, presets.

Kinds:
  "attention": layers with the MultiHeadAttention constructor and call (what blocks, encoders,
    configs' `attention_type` and `nlpkit bench attention` take);
  "inner_attention": fast-transformers style cores (`[B,T,N,H]` tensors and mask objects);
  "block": transformer blocks; "encoder": encoder networks by config `kind`; "preset": bundled configs.

A name is unique within its kind: registering it a second time from another place is an error
naming both places. Each entry records its constructor's parameters (`Entry.parameters`), which
config validation, `--help` listings and error hints read.

Names compose with ':' where an entry takes an inner object: the part after the first ':' is built
(recursively, so to any depth) as the entry's `inner` argument, e.g. `conditional-full:linear` or
`conditional-full:conditional-full:local`; for a block, `encoder:linear` passes the attention name on.
"""

import dataclasses
import difflib
import importlib
import inspect
import sys
import typing

from nlpkit.errors import NlpkitError

# The modules whose imports register each kind (named here, so no package walk is needed).
_CATALOGUES = {
    "attention": "nlpkit.layers",
    "inner_attention": "nlpkit.layers",
    "block": "nlpkit.layers",
    "encoder": "nlpkit.encoders.presets",
    "preset": "nlpkit.encoders.presets",
}
_LABELS = {"inner_attention": "inner attention", "encoder": "kind"}  # "kind", the config key
_ENTRIES = {kind: {} for kind in _CATALOGUES}


@dataclasses.dataclass
class Entry:
    """One registered name.

    target: the constructor (a class or function), or "module:attribute" imported on first use.
    where: "file:line" of the registration.
    inner: the constructor argument that takes the part of a composed name after ':' (None: the
      entry does not compose); inner_kind: the kind that part names; pass_name: hand the inner
      part on as a name (the target builds it) instead of building it here.
    default_inner: the inner name used when none is composed (an entry that always wraps one).
    forward: keyword arguments the constructor does not take go to the inner object.
    inherit: own arguments -> arguments every inner level gets where its constructor takes them.
    parameters_of: the callable whose signature is recorded, when it is not `target` (presets).
    fixed: parameters of a base class that this constructor sets itself and refuses.
    """

    kind: str
    name: str
    target: typing.Any
    where: str
    inner: str | None = None
    inner_kind: str | None = None
    pass_name: bool = False
    default_inner: str | None = None
    forward: bool = False
    inherit: typing.Callable | None = None
    parameters_of: typing.Callable | None = None
    fixed: tuple = ()

    @property
    def constructor(self):
        if isinstance(self.target, str):
            module_name, _, attribute = self.target.partition(":")
            self.target = getattr(importlib.import_module(module_name), attribute)
        return self.target

    @property
    def parameters(self):
        """{name: inspect.Parameter} of every keyword argument the constructor accepts."""
        parameters = signature_parameters(self.parameters_of() if self.parameters_of else self.constructor)
        return {name: parameter for name, parameter in parameters.items() if name not in self.fixed}


def signature_parameters(constructor):
    """Keyword parameters of `constructor`; for a class, of `__init__` along the MRO while each passes **kwargs on."""
    functions = [constructor]
    if inspect.isclass(constructor):
        functions = [vars(klass)["__init__"] for klass in constructor.__mro__ if "__init__" in vars(klass) and klass is not object]
    result = {}
    for function in functions:
        parameters = list(inspect.signature(function).parameters.values())
        for parameter in parameters:
            if parameter.name != "self" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                result.setdefault(parameter.name, parameter)
        takes_nothing = [parameter.name for parameter in parameters] == ["self"]  # a mixin, e.g. Keras' Trainer
        if not takes_nothing and not any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters):
            break  # arguments stop here; base classes see only what this one passes them
    return result


def register(kind, name, target=None, *, stacklevel=1, **options):
    """Register `target` as `name` of `kind`; without `target`, return a decorator that does.

    Raises NlpkitError if `name` is already registered for `kind` from another place.
    `options` are the composition fields of `Entry` (inner, inner_kind, pass_name, default_inner,
    forward, inherit, parameters_of, fixed).
    """
    frame = sys._getframe(stacklevel)
    where = f"{frame.f_code.co_filename}:{frame.f_lineno}"

    _check_kind(kind)

    def add(target):
        previous = _ENTRIES[kind].get(name)
        if previous is not None and previous.where != where:  # the same place again is a module reload
            raise NlpkitError(
                f"{_label(kind)} '{name}' is registered twice: at {previous.where} and at {where}",
                hint="give one of them another name",
            )
        _ENTRIES[kind][name] = Entry(kind, name, target, where, **options)
        return target

    return add if target is None else add(target)


def entries(kind):
    """{name: Entry} of `kind`, the whole catalogue loaded."""
    _check_kind(kind)
    importlib.import_module(_CATALOGUES[kind])
    return dict(_ENTRIES[kind])


def names(kind):
    return sorted(entries(kind))


def get(kind, name, source=None):
    """The Entry of `name`; an unknown name is an error listing close matches, else every name."""
    known = entries(kind)
    if name not in known:
        close = difflib.get_close_matches(str(name), list(known), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(sorted(known))}"
        raise NlpkitError(f"{source + ': ' if source else ''}unknown {_label(kind)} '{name}'", hint=hint)
    return known[name]


def build(kind, spec, *, inherited=None, **kwargs):
    """Build `spec` (a registered name, an 'a:b[:c...]' composition, or a factory) with `kwargs`.

    `kwargs` must be arguments of the named entry (or, for a `forward` entry, of its inner object);
    `inherited` arguments are given to each level whose constructor takes them.
    """
    if callable(spec):
        return spec(**kwargs)
    name, _, rest = str(spec).partition(":")
    entry = get(kind, name)
    if rest and entry.inner is None:
        raise NlpkitError(f"{_label(kind)} '{name}' does not compose with ':{rest}'", hint="drop the ':' part")
    accepted = entry.parameters
    inner_spec = ":".join(part for part in (entry.default_inner, rest) if part)
    own = {key: value for key, value in kwargs.items() if key in accepted}
    extra = {key: value for key, value in kwargs.items() if key not in accepted}
    if extra and not (entry.forward and inner_spec and not entry.pass_name):
        raise NlpkitError(
            f"{_label(kind)} '{name}' takes no argument {', '.join(sorted(extra))}",
            hint=f"its arguments are: {', '.join(sorted(accepted))}",
        )
    own.update({key: value for key, value in (inherited or {}).items() if key in accepted and key not in own})
    if inner_spec and entry.pass_name:
        own[entry.inner] = inner_spec
    elif inner_spec:
        inner_inherited = {**(inherited or {}), **(entry.inherit(own) if entry.inherit else {})}
        own[entry.inner] = build(entry.inner_kind, inner_spec, inherited=inner_inherited, **extra)
    return entry.constructor(**own)


def _check_kind(kind):
    if kind not in _ENTRIES:
        raise NlpkitError(f"unknown registry kind '{kind}'", hint=f"one of: {', '.join(_ENTRIES)}")


def _label(kind):
    return _LABELS.get(kind, kind.replace("_", " "))
