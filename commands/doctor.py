"""`nlpkit doctor`: versions of everything nlpkit stands on, and known-bad combinations."""

import importlib.metadata
import platform

import typer
from rich.table import Table

from commands.common import console


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _minor(version):
    return ".".join(version.split(".")[:2]) if version else None


def collect():
    """Rows of (component, version, note); a note starting with '!' is a problem."""
    from nlpkit._tf import import_tensorflow

    import_tensorflow()  # before Keras, so TensorFlow's import noise is filtered
    import keras

    tf_version = _version("tensorflow") or _version("tensorflow-cpu")
    text_version = _version("tensorflow-text")
    rows = [
        ("python", platform.python_version(), platform.platform()),
        ("nlpkit", _version("nlpkit") or "(not installed)", ""),
        ("tensorflow", tf_version or "missing", ""),
        ("tensorflow-text", text_version or "missing", ""),
        ("keras", keras.__version__, f"backend: {keras.backend.backend()}"),
        ("datasets", _version("datasets") or "missing", ""),
        ("sentencepiece", _version("sentencepiece") or "missing", ""),
        ("jax", _version("jax") or "not installed", "optional backend"),
        _auto_precision_row(),
    ]
    if tf_version and text_version and _minor(tf_version) != _minor(text_version):
        rows.append(
            (
                "tf / tf-text",
                f"{tf_version} / {text_version}",
                "! mismatch: install tensorflow-text of the same minor version as tensorflow",
            )
        )
    return rows


def _auto_precision_row():
    """What `--precision auto` picks for pretrain / finetune on this machine, and why."""
    from nlpkit.training.runtime import auto_choice

    choice = auto_choice()
    return ("--precision auto", choice.describe(), choice.reason)


def doctor():
    """Print Python, TensorFlow, tensorflow-text, Keras (and backend) and datasets versions, and what
    `--precision auto` picks here."""
    rows = collect()
    table = Table(title="nlpkit doctor")
    for column in ("component", "version", "note"):
        table.add_column(column)
    problems = 0
    for name, version, note in rows:
        style = "red" if note.startswith("!") else None
        problems += note.startswith("!")
        table.add_row(name, version, note.lstrip("! "), style=style)
    console.print(table)
    if problems:
        raise typer.Exit(1)


def register(app):
    app.command()(doctor)
