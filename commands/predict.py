"""`nlpkit predict`: texts in, JSON lines out (label, probabilities, and uncertainty for SNGP)."""

import json
import sys
import time
from pathlib import Path
from typing import List

import typer

from commands.common import err_console, info
from nlpkit.errors import NlpkitError


def _read_texts(texts, input_file):
    if texts and input_file:
        raise NlpkitError("give texts as arguments or --input FILE, not both")
    if input_file is not None:
        if str(input_file) == "-":
            return [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not input_file.is_file():
            raise NlpkitError(f"--input {input_file} does not exist", hint="pass a text file, one text per line")
        return [line.rstrip("\n") for line in input_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if texts:
        return list(texts)
    if not sys.stdin.isatty():
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    raise NlpkitError("no texts to predict", hint="pass TEXT arguments, --input FILE, or pipe lines on stdin")


def predict(
    texts: List[str] = typer.Argument(None, help="Texts to classify."),
    model: Path = typer.Option(None, "--model", help="A fine-tuned model directory."),
    saved_model: Path = typer.Option(None, "--saved-model", help="A SavedModel written by nlpkit export."),
    input_file: Path = typer.Option(None, "--input", "-i", help="A file with one text per line ('-' = stdin)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write JSON lines here instead of stdout."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
):
    """Classify texts with a model directory or an exported SavedModel; print JSON lines."""
    if (model is None) == (saved_model is None):
        raise NlpkitError("pass exactly one of --model and --saved-model")
    texts = _read_texts(texts, input_file)
    from nlpkit._tf import import_tensorflow

    import_tensorflow()
    started = time.perf_counter()
    if model is not None:
        from nlpkit.training.evaluation import Classifier

        classifier = Classifier(model)
        rows = classifier.records(classifier.predict(texts, batch_size=batch_size))
    else:
        from nlpkit.export.saved_model import ServedClassifier

        rows = ServedClassifier(saved_model).predict(texts, batch_size=batch_size)
    elapsed = time.perf_counter() - started
    lines = "".join(json.dumps({"text": text, **row}, ensure_ascii=False) + "\n" for text, row in zip(texts, rows))
    if output is not None:
        from nlpkit.io import atomic_file

        with atomic_file(output) as tmp:
            tmp.write_text(lines, encoding="utf-8")
        info(f"wrote {len(rows)} predictions to {output}")
    else:
        sys.stdout.write(lines)
    err_console.print(f"[dim]{len(rows)} texts in {elapsed:.2f} s ({len(rows) / max(elapsed, 1e-9):.1f} texts/s)[/]")


def register(app):
    app.command()(predict)
