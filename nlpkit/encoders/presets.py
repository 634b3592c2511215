"""Encoder configs by name (the JSON files in `presets/`) or from a user's JSON/YAML file.

A config is a flat mapping: `kind` (which encoder class), an optional `description`, and the
encoder's constructor arguments, e.g. `{"kind": "bert", "hidden_size": 128, "num_layers": 2, ...}`.
Validation checks every key against the constructor of the encoder class (its type hints, or the
type of its default) so a typo or a wrong type fails with one line naming the key and the file.
"""

import difflib
import functools
import inspect
import json
import types
import typing
from pathlib import Path

from nlpkit import registry
from nlpkit.errors import NlpkitError

PRESETS_DIR = Path(__file__).parent / "presets"

# kind -> "module:Class", registered in nlpkit.registry (and read by model_dir to match a saved
# class); each is imported on first use so reading a config needs no backend.
ENCODER_KINDS = {
    "bert": "nlpkit.encoders.bert:BertEncoder",
    "mobilebert": "nlpkit.encoders.mobilebert:MobileBertEncoder",
    "transformer_xl": "nlpkit.encoders.transformer_xl:TransformerXLEncoder",
}
for _kind, _target in ENCODER_KINDS.items():
    registry.register("encoder", _kind, _target)

# Keys a config may hold besides constructor arguments.
_META_KEYS = ("kind", "description")
# Keras keyword arguments every encoder accepts through **kwargs.
_KERAS_KEYS = {"dtype": str, "name": str}


def available_presets():
    """Names of the bundled presets, sorted."""
    return registry.names("preset")


def encoder_class(kind, source="config"):
    """The encoder class registered for `kind`."""
    return registry.get("encoder", kind, source).constructor


def kind_of(encoder):
    """The `kind` of an encoder instance (inverse of `encoder_class`)."""
    for kind, entry in registry.entries("encoder").items():
        if entry.constructor is type(encoder):
            return kind
    raise NlpkitError(f"{type(encoder).__name__} is not a registered encoder", hint="use one of nlpkit.encoders")


def load_preset(name):
    """The validated config of a bundled preset."""
    path = PRESETS_DIR / f"{registry.get('preset', name).name}.json"
    return validate_config(read_config_file(path), source=str(path))


def _build_preset(name, **overrides):
    return build_encoder(load_preset(name), **overrides)


def _preset_encoder_class(name):
    return encoder_class(read_config_file(PRESETS_DIR / f"{name}.json").get("kind"), f"preset {name}")


# Every bundled preset in the registry: it builds its encoder and takes that encoder's arguments.
for _path in sorted(PRESETS_DIR.glob("*.json")):
    registry.register("preset", _path.stem, functools.partial(_build_preset, _path.stem),
                      parameters_of=functools.partial(_preset_encoder_class, _path.stem))


def load_config(name_or_path):
    """A preset name or a JSON/YAML file path -> validated config."""
    path = Path(str(name_or_path))
    if path.is_dir():
        raise NlpkitError(f"config {path} is a folder, not a config file", hint="pass a .json or .yaml encoder config")
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        return validate_config(read_config_file(path), source=str(path))
    return load_preset(name_or_path)


def read_config_file(path):
    """Parse a JSON or YAML file into a dict; syntax errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise NlpkitError(f"config file {path} does not exist", hint="check the --config path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise NlpkitError(f"{path}: not UTF-8 text (byte {err.start})", hint="a config is a JSON or YAML text file")
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


# Sane ranges of size-like arguments, by name, for every encoder (and head) that has them: a
# typo such as num_layers: 1000000 must fail here, not spin for hours building the model.
SIZE_BOUNDS = {
    "vocab_size": (1, 2_000_000),
    "hidden_size": (1, 16_384),
    "embedding_width": (1, 16_384),
    "inner_dim": (1, 65_536),
    "inner_size": (1, 65_536),
    "intra_bottleneck_size": (1, 16_384),
    "head_size": (1, 4_096),
    "num_layers": (1, 256),
    "num_attention_heads": (1, 256),
    "num_feedforward_networks": (1, 64),
    "max_sequence_length": (1, 65_536),
    "type_vocab_size": (1, 1_024),
    "output_range": (1, 65_536),
    "mem_len": (0, 65_536),
    "reuse_len": (0, 65_536),
    "clamp_len": (-1, 65_536),
    "num_classes": (2, 1_000_000),
}
# Probabilities.
RATE_KEYS = ("output_dropout", "attention_dropout", "dropout_rate", "attention_dropout_rate")


def validate_config(config, source="config", *, key_names=None):
    """Check `config` against its encoder's constructor; return a copy.

    Raises NlpkitError naming `source` and the offending key for: a missing or unknown `kind`,
    an unknown key (with the closest valid key), a value of the wrong type or out of its range
    (`SIZE_BOUNDS`), a missing required key. `key_names` maps a key to the name the user wrote
    (for configs translated from another format, e.g. HF `num_hidden_layers`).
    """
    if not isinstance(config, dict):
        raise NlpkitError(f"{source}: a config must be a mapping", hint="see nlpkit/encoders/presets")
    if "kind" not in config:
        raise NlpkitError(f"{source}: missing key 'kind'", hint=f"add \"kind\": one of {', '.join(ENCODER_KINDS)}")
    kind = config["kind"]
    if not isinstance(kind, str):
        raise NlpkitError(f"{source}: key 'kind' must be a string, got {kind!r:.60}", hint=f"one of {', '.join(ENCODER_KINDS)}")
    cls = encoder_class(kind, source)
    arguments = {key: value for key, value in config.items() if key not in _META_KEYS}
    check_arguments(arguments, constructor_types(cls), f"{source}", f"kind '{kind}'", key_names=key_names)
    missing = [name for name in required_arguments(cls) if name not in config]
    if missing:
        raise NlpkitError(f"{source}: missing key '{missing[0]}' for kind '{kind}'", hint="add it to the config")
    return dict(config)


def check_arguments(arguments, expected, source, owner, *, key_names=None):
    """Check constructor `arguments` against `expected` ({name: type}): known keys, types, ranges."""
    key_names = key_names or {}
    for key, value in arguments.items():
        shown = key_names.get(key, key)
        if not isinstance(key, str) or key not in expected:
            close = difflib.get_close_matches(str(key), list(expected), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(expected))}"
            raise NlpkitError(f"{source}: unknown key '{key}' for {owner}", hint=hint)
        if not _matches(value, expected[key]):
            raise NlpkitError(
                f"{source}: key '{shown}' must be {_type_name(expected[key])}, got {type(value).__name__} {value!r:.60}",
                hint="fix the value",
            )
        _check_range(shown, key, value, source)


def _check_range(shown, key, value, source):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if key in SIZE_BOUNDS:
        low, high = SIZE_BOUNDS[key]
        if not low <= value <= high:
            raise NlpkitError(
                f"{source}: key '{shown}' is {value}, outside the supported range {low}..{high}", hint="fix the value"
            )
    if key in RATE_KEYS and not 0 <= value < 1:
        raise NlpkitError(f"{source}: key '{shown}' is {value}, not a rate in [0, 1)", hint="fix the value")


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
