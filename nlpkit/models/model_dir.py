"""The model directory: what every command's `--model` takes.

    DIR/config.json        what the model is: encoder kind and config, head info, how to rebuild it
    DIR/model.weights.h5   the weights (Keras weights file)
    DIR/vocab.txt          tokenizer assets: a WordPiece vocab, or a SentencePiece `*.model`

`save_model_dir(model, config, vocab_path, path)` writes one atomically (nothing is left behind
if it fails); `load_model(path)` rebuilds the Keras model, which called on the three int32 inputs
returns the output dict; `tokenizer_assets(path)` says how to rebuild its tokenizer.
"""

import json
import shutil
from pathlib import Path

import keras
import numpy as np

from nlpkit.errors import NlpkitError
from nlpkit.io import atomic_dir
from nlpkit.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
FORMAT = "nlpkit-model"
FORMAT_VERSION = 1
TOKENIZER_TYPES = ("wordpiece", "sentencepiece")
CLASSIFIER = "nlpkit.models.classifier:TextClassifier"
TASK_MODELS = tuple(f"nlpkit.models.tasks:{name}" for name in ("MultiLabelClassifier", "TextRegressor", "TokenTagger"))


def save_model_dir(model, config, vocab_path, path, *, head=None, lower_case=True, overwrite=False):
    """Write `model` as a model directory at `path`.

    Args:
      model: a built Keras model taking the input dict (an encoder, or an encoder with a head).
      config: the encoder config, with its `kind` (see `nlpkit.encoders.presets`).
      vocab_path: WordPiece `vocab.txt` or SentencePiece `*.model` to copy in; None for none.
      path: the directory to create.
      head: optional dict describing a task head (kept in config.json for the commands).
      lower_case: whether the WordPiece tokenizer lower-cases (ignored for SentencePiece).
      overwrite: replace an existing directory.
    """
    if "kind" not in config:
        raise NlpkitError("save_model_dir: the config has no 'kind'", hint="pass the encoder config from presets")
    tokenizer = _tokenizer_entry(vocab_path, config, lower_case)
    _ensure_built(model)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nlpkit_version": __version__,
        "kind": config["kind"],
        "encoder": dict(config),
        "head": head,
        "tokenizer": tokenizer,
        "weights": WEIGHTS_FILE,
        "keras_model": keras.saving.serialize_keras_object(model),
    }
    with atomic_dir(path, overwrite=overwrite) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2, default=_json_default) + "\n", encoding="utf-8")
        model.save_weights(str(tmp / WEIGHTS_FILE))
        if tokenizer:
            shutil.copyfile(vocab_path, tmp / tokenizer["file"])
    return Path(path)


def read_config(path):
    """The parsed config.json of a model directory, checked to be one (see `check_document`)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise NlpkitError(f"{path} is not a model directory (no {CONFIG_FILE})", hint="pass a folder made by build/convert")
    config_path = inside_model_dir(path, CONFIG_FILE, "config")
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise NlpkitError(f"{config_path}:{err.lineno}: invalid JSON ({err.msg})", hint="the model directory is damaged")
    except UnicodeDecodeError as err:
        raise NlpkitError(f"{config_path}: not UTF-8 text (byte {err.start})", hint="the model directory is damaged")
    check_document(document, config_path)
    return document


def inside_model_dir(directory, name, what):
    """`directory / name`, refused unless it stays inside `directory`.

    Every file a model directory's config.json names goes through here: the name must be
    relative, without `..`, and must not resolve (through symlinks) to a place outside the
    directory, so a downloaded model cannot make nlpkit read (and copy out) any other file.
    """
    directory = Path(directory)
    if not isinstance(name, str) or not name:
        raise NlpkitError(f"{directory}/{CONFIG_FILE}: the {what} file name must be a string, got {name!r:.60}",
                          hint="the model directory is damaged")
    relative = Path(name)
    if relative.is_absolute() or relative.anchor or ".." in relative.parts:
        raise NlpkitError(f"{directory}/{CONFIG_FILE}: the {what} file '{name}' is outside the model directory",
                          hint="a model directory may only name files inside itself")
    target = directory / relative
    if not target.resolve().is_relative_to(directory.resolve()):
        raise NlpkitError(f"{directory}: the {what} file '{name}' links outside the model directory",
                          hint="a model directory may only name files inside itself")
    return target


def check_document(document, source):
    """Check a model directory's config.json before anything is built from it."""
    if not isinstance(document, dict):
        raise NlpkitError(f"{source}: expected a JSON object, got a {type(document).__name__}",
                          hint="the model directory is damaged")
    if document.get("format") != FORMAT:
        raise NlpkitError(f"{source} is not an nlpkit model config", hint="convert it first: nlpkit convert")
    version = document.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise NlpkitError(f"{source}: 'format_version' must be an integer, got {version!r:.60}", hint="the model directory is damaged")
    if version > FORMAT_VERSION:
        raise NlpkitError(f"{source} was written by a newer nlpkit", hint="upgrade nlpkit")
    from nlpkit.encoders.presets import validate_config

    if "encoder" not in document:
        raise NlpkitError(f"{source}: missing key 'encoder'", hint="the model directory is damaged")
    validate_config(document["encoder"], source=f"{source} 'encoder'")
    for key, types in (("head", (dict,)), ("tokenizer", (dict,)), ("keras_model", (dict,)), ("weights", (str,))):
        value = document.get(key)
        if value is not None and not isinstance(value, types):
            expected = "an object" if types == (dict,) else "a string"
            raise NlpkitError(f"{source}: '{key}' must be {expected} or null, got {type(value).__name__} {value!r:.60}",
                              hint="the model directory is damaged")
    _check_tokenizer_entry(document.get("tokenizer"), source)
    _check_classifier_head(document.get("head"), source)
    if document.get("keras_model"):
        check_keras_model(document["keras_model"], f"{source} 'keras_model'")


def _check_tokenizer_entry(entry, source):
    if not entry:
        return
    if entry.get("type") not in TOKENIZER_TYPES:
        raise NlpkitError(f"{source}: tokenizer type {entry.get('type')!r:.60} is not one of {', '.join(TOKENIZER_TYPES)}",
                          hint="the model directory is damaged")
    if not isinstance(entry.get("lower_case", True), bool):
        raise NlpkitError(f"{source}: tokenizer 'lower_case' must be true or false", hint="the model directory is damaged")


def _check_classifier_head(head, source):
    """What evaluate / predict / export read from a classifier's head entry."""
    if not head or head.get("task") != "classification":
        return
    from nlpkit.encoders.presets import SIZE_BOUNDS

    labels, length = head.get("labels"), head.get("seq_length")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(label, (str, int)) for label in labels):
        raise NlpkitError(f"{source}: head 'labels' must be a list of at least 2 labels, got {labels!r:.60}",
                          hint="the model directory is damaged")
    low, high = SIZE_BOUNDS["max_sequence_length"]
    if not isinstance(length, int) or isinstance(length, bool) or not low <= length <= high:
        raise NlpkitError(f"{source}: head 'seq_length' must be an integer in {low}..{high}, got {length!r:.60}",
                          hint="the model directory is damaged")


def check_keras_model(serialized, source):
    """Check the serialized Keras model of config.json: an nlpkit encoder or classifier with valid arguments.

    Keras would otherwise rebuild any class it can find, and unknown keys or wrong types would
    surface as errors deep inside a constructor.
    """
    from nlpkit.encoders.presets import ENCODER_KINDS, check_arguments, constructor_types, validate_config

    if not isinstance(serialized, dict) or not isinstance(serialized.get("config"), dict):
        raise NlpkitError(f"{source}: expected a serialized Keras object", hint="the model directory is damaged")
    target = f"{serialized.get('module')}:{serialized.get('class_name')}"
    if serialized.get("registered_name") not in (None, f"nlpkit>{serialized.get('class_name')}"):
        target = str(serialized.get("registered_name"))  # what Keras would look up and rebuild
    arguments = dict(serialized["config"])
    for key, check in (("name", lambda v: isinstance(v, str)), ("trainable", lambda v: isinstance(v, bool)),
                       ("dtype", _is_dtype_policy)):
        if key in arguments and not check(arguments.pop(key)):
            raise NlpkitError(f"{source}: key '{key}' has a wrong value", hint="the model directory is damaged")
    kinds = {path: kind for kind, path in ENCODER_KINDS.items()}
    if target in kinds:
        validate_config({"kind": kinds[target], **arguments}, source=source)
    elif target == CLASSIFIER or target in TASK_MODELS:
        import importlib

        module, name = target.split(":")
        model_class = getattr(importlib.import_module(module), name)
        encoder = arguments.pop("encoder", None)
        check_arguments(arguments, constructor_types(model_class), source, name)
        check_keras_model(encoder, f"{source} 'encoder'")
    else:
        raise NlpkitError(f"{source}: refusing to rebuild '{target}': only nlpkit encoders and classifiers are "
                          f"rebuilt from a model directory (other objects could run code)",
                          hint="use a model directory written by nlpkit")


def _is_dtype_policy(value):
    if isinstance(value, str):
        return True
    return (isinstance(value, dict) and value.get("module") == "keras" and isinstance(value.get("config"), dict)
            and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"))


def load_model(path):
    """Rebuild the Keras model of a model directory, weights included."""
    path = Path(path)
    from nlpkit.encoders.base import weights_to_be_loaded
    from nlpkit.encoders.presets import build_encoder

    document = read_config(path)
    weights = inside_model_dir(path, document.get("weights") or WEIGHTS_FILE, "weights")
    if not weights.is_file():
        raise NlpkitError(f"{path}: weights file {weights.name} is missing", hint="the model directory is incomplete")
    with weights_to_be_loaded():
        if document.get("keras_model"):
            model = _deserialize(document["keras_model"], path / CONFIG_FILE)
        else:  # a hand-written directory: the encoder config alone
            model = build_encoder(document["encoder"])
        _ensure_built(model)
    try:
        model.load_weights(str(weights))
    except ValueError as err:
        raise NlpkitError(f"{weights}: weights do not fit the model in {CONFIG_FILE} ({_first_line(err)})",
                          hint="rebuild the directory")
    except (OSError, KeyError, TypeError) as err:  # h5py: not HDF5, truncated, or missing groups
        raise NlpkitError(f"{path}: the model directory is damaged: {weights.name} cannot be read ({_first_line(err)})",
                          hint="rebuild or download the directory again")
    return model


def _deserialize(serialized, source):
    """Keras deserialization in safe mode, its refusals turned into one line."""
    _import_defining_modules(serialized)
    try:
        return keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    except ValueError as err:
        if "safe_mode" in str(err) or "arbitrary code" in str(err):
            raise NlpkitError(
                f"{source}: Keras safe mode refused to rebuild 'keras_model': it holds a Python lambda or function, "
                f"which could run code",
                hint="an nlpkit model directory holds no code; do not load this one",
            ) from None
        raise NlpkitError(f"{source}: cannot rebuild 'keras_model' ({_first_line(err)})", hint="the model directory is damaged")
    except TypeError as err:
        raise NlpkitError(f"{source}: cannot rebuild 'keras_model' ({_first_line(err)})", hint="the model directory is damaged")


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def tokenizer_assets(path):
    """{'type': 'wordpiece'|'sentencepiece', 'path': Path, 'lower_case': bool}, or None."""
    entry = read_config(path).get("tokenizer")
    if not entry:
        return None
    asset = inside_model_dir(path, entry.get("file"), "tokenizer")
    if not asset.is_file():
        raise NlpkitError(f"{path}: tokenizer file {entry['file']} is missing", hint="the model directory is incomplete")
    return {**entry, "path": asset}


def dummy_inputs(batch_size=1, length=2):
    """The three int32 inputs, all zeros except the mask; enough to build a model's weights."""
    ids = np.zeros((batch_size, length), "int32")
    return dict(input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=ids)


def _import_defining_modules(serialized):
    """Import every nlpkit module named in a serialized model, so its classes are registered."""
    import importlib

    if isinstance(serialized, dict):
        module = serialized.get("module")
        if isinstance(module, str) and module.startswith("nlpkit."):
            importlib.import_module(module)
        for value in serialized.values():
            _import_defining_modules(value)
    elif isinstance(serialized, list):
        for value in serialized:
            _import_defining_modules(value)


def _ensure_built(model):
    if not model.built or not model.weights:
        model(dummy_inputs(), training=False)


def _tokenizer_entry(vocab_path, config, lower_case):
    if vocab_path is None:
        return None
    from nlpkit.text.vocab import check_vocab_fits, is_sentencepiece

    vocab_path = Path(vocab_path)
    if not vocab_path.is_file():
        raise NlpkitError(f"vocabulary file {vocab_path} does not exist", hint="check the --vocab path")
    check_vocab_fits(vocab_path, config.get("vocab_size"))
    if is_sentencepiece(vocab_path):
        return {"type": "sentencepiece", "file": vocab_path.name}
    return {"type": "wordpiece", "file": "vocab.txt", "lower_case": bool(lower_case)}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to config.json")
