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

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
FORMAT = "nlpkit-model"
FORMAT_VERSION = 1


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
    from nlpkit import __version__

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
    """The parsed config.json of a model directory (checked to be one)."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise NlpkitError(f"{path} is not a model directory (no {CONFIG_FILE})", hint="pass a folder made by build/convert")
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise NlpkitError(f"{config_path}:{err.lineno}: invalid JSON ({err.msg})", hint="the model directory is damaged")
    if document.get("format") != FORMAT:
        raise NlpkitError(f"{config_path} is not an nlpkit model config", hint="convert it first: nlpkit convert")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise NlpkitError(f"{config_path} was written by a newer nlpkit", hint="upgrade nlpkit")
    return document


def load_model(path):
    """Rebuild the Keras model of a model directory, weights included."""
    path = Path(path)
    from nlpkit.encoders.base import weights_to_be_loaded
    from nlpkit.encoders.presets import build_encoder

    document = read_config(path)
    with weights_to_be_loaded():
        if document.get("keras_model"):
            _import_defining_modules(document["keras_model"])
            model = keras.saving.deserialize_keras_object(document["keras_model"])
        else:  # a hand-written directory: the encoder config alone
            model = build_encoder(document["encoder"])
        _ensure_built(model)
    weights = path / document.get("weights", WEIGHTS_FILE)
    if not weights.is_file():
        raise NlpkitError(f"{path}: weights file {weights.name} is missing", hint="the model directory is incomplete")
    try:
        model.load_weights(str(weights))
    except ValueError as err:
        raise NlpkitError(f"{weights}: weights do not fit the model in {CONFIG_FILE} ({err})", hint="rebuild the directory")
    return model


def tokenizer_assets(path):
    """{'type': 'wordpiece'|'sentencepiece', 'path': Path, 'lower_case': bool}, or None."""
    entry = read_config(path).get("tokenizer")
    if not entry:
        return None
    asset = Path(path) / entry["file"]
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
    vocab_path = Path(vocab_path)
    if not vocab_path.is_file():
        raise NlpkitError(f"vocabulary file {vocab_path} does not exist", hint="check the --vocab path")
    if vocab_path.suffix == ".model":
        return {"type": "sentencepiece", "file": vocab_path.name}
    with open(vocab_path, encoding="utf-8") as file:
        size = sum(1 for _ in file)
    vocab_size = config.get("vocab_size")
    if vocab_size is not None and size > vocab_size:
        raise NlpkitError(
            f"{vocab_path} has {size} tokens but the model's vocab_size is {vocab_size}",
            hint="set vocab_size to the vocabulary's size",
        )
    return {"type": "wordpiece", "file": "vocab.txt", "lower_case": bool(lower_case)}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to config.json")
