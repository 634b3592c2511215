"""Encoder configs by name (the JSON files in `presets/`) or from a user's JSON/YAML file.

A config is a flat mapping: `kind` (which encoder class), an optional `description`, and the
encoder's constructor arguments, e.g. `{"kind": "bert", "hidden_size": 128, "num_layers": 2, ...}`.
Validation checks every key against the constructor of the encoder class (its type hints, or the
type of its default) so a typo or a wrong type fails with one line naming the key and the file.
"""

import difflib
import importlib
import inspect
import json
import types
import typing
from pathlib import Path

from nlpkit.errors import NlpkitError

PRESETS_DIR = Path(__file__).parent / "presets"

# kind -> "module:Class"; imported on demand so reading a config needs no backend.
ENCODER_KINDS = {
    "bert": "nlpkit.encoders.bert:BertEncoder",
    "mobilebert": "nlpkit.encoders.mobilebert:MobileBertEncoder",
    "transformer_xl": "nlpkit.encoders.transformer_xl:TransformerXLEncoder",
}

# Keys a config may hold besides constructor arguments.
_META_KEYS = ("kind", "description")
# Keras keyword arguments every encoder accepts through **kwargs.
_KERAS_KEYS = {"dtype": str, "name": str}


def available_presets():
    """Names of the bundled presets, sorted."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.json"))


def encoder_class(kind, source="config"):
    """The encoder class registered for `kind`."""
    if kind not in ENCODER_KINDS:
        raise NlpkitError(
            f"{source}: unknown kind '{kind}'", hint=f"'kind' must be one of: {', '.join(sorted(ENCODER_KINDS))}"
        )
    module_name, _, class_name = ENCODER_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def kind_of(encoder):
    """The `kind` of an encoder instance (inverse of `encoder_class`)."""
    for kind, target in ENCODER_KINDS.items():
        if target == f"{type(encoder).__module__}:{type(encoder).__name__}":
            return kind
    raise NlpkitError(f"{type(encoder).__name__} is not a registered encoder", hint="use one of nlpkit.encoders")


def load_preset(name):
    """The validated config of a bundled preset."""
    path = PRESETS_DIR / f"{name}.json"
    if not path.is_file():
        close = difflib.get_close_matches(str(name), available_presets(), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(available_presets())}"
        raise NlpkitError(f"unknown preset '{name}'", hint=hint)
    return validate_config(read_config_file(path), source=str(path))


def load_config(name_or_path):
    """A preset name or a JSON/YAML file path -> validated config."""
    if Path(str(name_or_path)).suffix.lower() in (".json", ".yaml", ".yml"):
        path = Path(name_or_path)
        return validate_config(read_config_file(path), source=str(path))
    return load_preset(name_or_path)


def read_config_file(path):
    """Parse a JSON or YAML file into a dict; syntax errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise NlpkitError(f"config file {path} does not exist", hint="check the --config path")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise NlpkitError(f"{where}: invalid YAML ({getattr(err, 'problem', err)})", hint="fix the syntax")
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise NlpkitError(f"{path}:{err.lineno}: invalid JSON ({err.msg})", hint="fix the syntax")
    if not isinstance(data, dict):
        raise NlpkitError(f"{path}: a config must be a mapping of keys to values", hint="see nlpkit/encoders/presets")
    return data


def validate_config(config, source="config"):
    """Check `config` against its encoder's constructor; return a copy.

    Raises NlpkitError naming `source` and the offending key for: a missing or unknown `kind`,
    an unknown key (with the closest valid key), a value of the wrong type, a missing required key.
    """
    if not isinstance(config, dict):
        raise NlpkitError(f"{source}: a config must be a mapping", hint="see nlpkit/encoders/presets")
    if "kind" not in config:
        raise NlpkitError(f"{source}: missing key 'kind'", hint=f"add \"kind\": one of {', '.join(ENCODER_KINDS)}")
    kind = config["kind"]
    expected = constructor_types(encoder_class(kind, source))
    for key, value in config.items():
        if key in _META_KEYS:
            continue
        if key not in expected:
            close = difflib.get_close_matches(key, list(expected), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(expected))}"
            raise NlpkitError(f"{source}: unknown key '{key}' for kind '{kind}'", hint=hint)
        if not _matches(value, expected[key]):
            raise NlpkitError(
                f"{source}: key '{key}' must be {_type_name(expected[key])}, got {type(value).__name__} {value!r}",
                hint="fix the value",
            )
    missing = [name for name in required_arguments(encoder_class(kind)) if name not in config]
    if missing:
        raise NlpkitError(f"{source}: missing key '{missing[0]}' for kind '{kind}'", hint="add it to the config")
    return dict(config)


def constructor_types(cls):
    """{argument name: expected type} for the constructor of `cls` (hints, else type of default)."""
    hints = typing.get_type_hints(cls.__init__)
    result = dict(_KERAS_KEYS)
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name in hints:
            result[name] = hints[name]
        elif param.default is not inspect.Parameter.empty and param.default is not None:
            result[name] = type(param.default)
        else:
            result[name] = typing.Any
    return result


def required_arguments(cls):
    return [
        name
        for name, param in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and param.default is inspect.Parameter.empty and param.kind == param.POSITIONAL_OR_KEYWORD
    ]


def build_encoder(config, **overrides):
    """Instantiate the encoder a (validated) config describes; `overrides` win over the config."""
    config = validate_config({**config, **overrides})
    arguments = {key: value for key, value in config.items() if key not in _META_KEYS}
    return encoder_class(config["kind"])(**arguments)


def encoder_config(encoder):
    """The config (kind + constructor arguments) that rebuilds `encoder`."""
    names = set(constructor_types(type(encoder))) - set(_KERAS_KEYS)
    arguments = {key: value for key, value in encoder.get_config().items() if key in names}
    return {"kind": kind_of(encoder), **arguments}


def _matches(value, expected):
    if expected is typing.Any:
        return True
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True  # a hint we cannot check (e.g. a callable); the constructor checks it


def _type_name(expected):
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(expected))
    if expected is type(None):
        return "null"
    return getattr(expected, "__name__", str(expected))
