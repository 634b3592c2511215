"""Training checkpoints keyed by variable path, not by creation order (the runtime's, see `runtime`).

A Keras variable path (`text_classifier_3/bert_encoder_3/word_embeddings/embeddings`) holds the
names of its layers, but a layer left unnamed gets a process-wide counter (`bert_encoder_3`), and
a random-seed state or an optimizer slot is named outside its layer. So the key of a variable is
its path with those counters dropped (`text_classifier/bert_encoder/word_embeddings/embeddings`),
an optimizer slot is keyed by the path of the variable it belongs to, and only variables whose keys
still collide (unnamed layers of one class side by side, seed states) are told apart by their order.
Two named layers with equal shapes created in the other order therefore restore correctly, and a
variable the checkpoint lacks, or has with another shape, is refused by name.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np

from nlpkit.errors import NlpkitError
from nlpkit.io import atomic_dir

CHECKPOINTS = "checkpoints"
_COUNTER = re.compile(r"^(.*)_\d+$")


def _auto_names(model):
    """The names Keras gives unnamed layers of `model` (and seed states), before their counters."""
    from keras.src.utils.naming import to_snake_case

    layers = model._flatten_layers(include_self=True) if hasattr(model, "_flatten_layers") else [model]
    return {to_snake_case(type(layer).__name__) for layer in layers} | {"seed_generator"}


def _stable(path, auto_names):
    parts = []
    for part in path.split("/"):
        match = _COUNTER.match(part)
        parts.append(match.group(1) if match and match.group(1) in auto_names else part)
    return "/".join(parts)


def _numbered(keys):
    """Keys made unique by order: the second `k` becomes `k#2`, and so on."""
    seen, unique = {}, []
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
        unique.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return unique


def model_keys(model):
    """[(key, variable)] of `model.variables`."""
    auto_names = _auto_names(model)
    keys = _numbered(f"model/{_stable(v.path, auto_names)}" for v in model.variables)
    return list(zip(keys, model.variables))


def optimizer_keys(model, optimizer):
    """[(key, variable)] of `optimizer.variables`: a slot (`<mangled path>_momentum`) by its model variable."""
    auto_names = _auto_names(model)
    owners = {v.path.replace("/", "_"): _stable(v.path, auto_names) for v in model.trainable_variables}
    keys = []
    for variable in optimizer.variables:
        name, key = variable.name, f"optimizer/{variable.name}"
        for cut in (i for i in range(len(name) - 1, 0, -1) if name[i] == "_"):
            if name[:cut] in owners:
                key = f"optimizer/{owners[name[:cut]]}:{name[cut + 1:]}"
                break
        keys.append(key)
    return list(zip(_numbered(keys), optimizer.variables))


def arrays_of(pairs):
    return {key: np.asarray(variable) for key, variable in pairs}


def assign(arrays, pairs, source):
    """Assign each variable the array saved under its key; a missing or misshapen one is refused by name."""
    hint = "it was written by another model: pass --overwrite or another --output"
    for key, variable in pairs:
        if key not in arrays:
            raise NlpkitError(f"{source} has no value for {key}", hint=hint)
        if tuple(arrays[key].shape) != tuple(variable.shape):
            raise NlpkitError(f"{source}: {key} has shape {tuple(arrays[key].shape)}, the model's is "
                              f"{tuple(variable.shape)}", hint=hint)
    for key, variable in pairs:  # only once all fit: a refused checkpoint leaves the model as it was
        variable.assign(arrays[key])


def load_arrays(path):
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files}


def latest_checkpoint(run):
    steps = sorted((Path(run) / CHECKPOINTS).glob("step-*"))
    return steps[-1] if steps else None


def save_checkpoint(run, step, model, optimizer, keep, state=None):
    """Write RUN/checkpoints/step-N atomically (variables + `state`), then drop all but the `keep` newest."""
    folder = Path(run) / CHECKPOINTS / f"step-{step:06d}"
    with atomic_dir(folder, overwrite=True) as tmp:
        np.savez(tmp / "variables.npz", **arrays_of(model_keys(model)), **arrays_of(optimizer_keys(model, optimizer)))
        (tmp / "state.json").write_text(json.dumps({**(state or {}), "step": step}) + "\n", encoding="utf-8")
    for old in sorted((Path(run) / CHECKPOINTS).glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def restore_checkpoint(folder, model, optimizer):
    """Load a checkpoint into a built model and optimizer; returns its state (with "step")."""
    arrays = load_arrays(Path(folder) / "variables.npz")
    assign(arrays, model_keys(model) + optimizer_keys(model, optimizer), folder)
    return json.loads((Path(folder) / "state.json").read_text(encoding="utf-8"))
