"""`nlpkit predict`: texts in, JSON lines out: classification label, probabilities (and uncertainty for
SNGP); multi-label labels and probabilities; regression value; token-classification tokens, tags and
entity spans with character offsets."""

import sys
import time
from pathlib import Path
from typing import List

import typer

from commands.common import err_console, info
from nlpkit.errors import NlpkitError

_NOT_UTF8_HINT = "save it as UTF-8, one text per line"


def _non_blank(lines):
    return [line.rstrip("\r\n") for line in lines if line.strip()]


def _stdin_lines():
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise NlpkitError(f"standard input holds bytes that are not UTF-8 (at byte {err.start})",
                          hint=_NOT_UTF8_HINT) from None
    return _non_blank(text.splitlines())


def _is_hub_name(input_file):
    """A missing --input without a file suffix that parses as `NAME[/CONFIG]:SPLIT` (`nlpkit.data.hub`)."""
    from nlpkit.data import hub

    return not input_file.exists() and not input_file.suffix and hub.parse(str(input_file)) is not None


def _file_lines(input_file):
    from nlpkit.data.sources import check_utf8

    if input_file.is_dir():
        raise NlpkitError(f"--input {input_file} is a folder", hint="pass a text file, one text per line")
    if not input_file.exists():
        raise NlpkitError(f"--input {input_file} does not exist",
                          hint="pass a text file, one text per line, or a cached dataset NAME:SPLIT or NAME/CONFIG:SPLIT")
    if not input_file.is_file():
        raise NlpkitError(f"--input {input_file} is not a regular file", hint="pass a text file, one text per line")
    check_utf8(input_file, hint=_NOT_UTF8_HINT)
    return _non_blank(input_file.read_text(encoding="utf-8").splitlines())


def _read_texts(texts, input_file, text_column, model):
    if texts and input_file:
        raise NlpkitError("give texts as arguments or --input FILE, not both")
    if input_file is not None and _is_hub_name(input_file):
        from nlpkit.data.sources import read_texts

        # no default split: the split to predict on is named (`:test`), never guessed
        column = text_column or _model_text_column(model)
        lines, where = read_texts(str(input_file), text_column=column, option="--input"), f"--input {input_file}"
    elif input_file is not None:
        lines = _stdin_lines() if str(input_file) == "-" else _file_lines(input_file)
        where = "standard input" if str(input_file) == "-" else f"--input {input_file}"
    elif texts:
        return list(texts)
    elif not sys.stdin.isatty():
        lines, where = _stdin_lines(), "standard input"
    else:
        raise NlpkitError("no texts to predict", hint="pass TEXT arguments, --input FILE, or pipe lines on stdin")
    if not lines:
        raise NlpkitError(f"{where} holds no texts", hint="give one text per line")
    return lines


def _model_text_column(model):
    """The text column a model directory was fine-tuned on ('text' for a SavedModel or none recorded)."""
    if model is None:
        return "text"
    from nlpkit.models.model_dir import read_config

    return (read_config(model).get("head") or {}).get("text_column") or "text"


def predict(
    texts: List[str] = typer.Argument(None, help="Texts to predict on."),
    model: Path = typer.Option(None, "--model", help="A fine-tuned model directory."),
    saved_model: Path = typer.Option(None, "--saved-model", help="A SavedModel written by nlpkit export."),
    input_file: Path = typer.Option(None, "--input", "-i", help="A file with one text per line ('-' = stdin), or "
                                    "a Hugging Face dataset in the local cache: NAME:SPLIT or NAME/CONFIG:SPLIT."),
    text_column: str = typer.Option(None, "--text-column", help="The text column of a dataset --input "
                                    "(default: the model's fine-tuning text column, else 'text')."),
    output: Path = typer.Option(None, "--output", "-o", help="Write JSON lines here instead of stdout."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    force: bool = typer.Option(False, "--force", help="Replace an existing --output."),
):
    """Run a fine-tuned model directory (any task) or an exported SavedModel on texts; print JSON lines."""
    from nlpkit.io import atomic_file, check_not_input, check_output_file, json_text

    if (model is None) == (saved_model is None):
        raise NlpkitError("pass exactly one of --model and --saved-model")
    if output is not None:
        check_not_input(output, {"--input": input_file, "--model": model, "--saved-model": saved_model})
        check_output_file(output, force)
    texts = _read_texts(texts, input_file, text_column, model)
    started = time.perf_counter()
    if model is not None:
        from nlpkit.models.inference import InferenceModel

        predictor = InferenceModel(model)
    else:
        from nlpkit.export.saved_model import ServedClassifier

        predictor = ServedClassifier(saved_model)
    rows = predictor.records(predictor.predict(texts, batch_size=batch_size))
    elapsed = time.perf_counter() - started
    lines = "".join(json_text({"text": text, **row}, ensure_ascii=False) + "\n" for text, row in zip(texts, rows))
    if output is not None:
        with atomic_file(output) as tmp:
            tmp.write_text(lines, encoding="utf-8")
        info(f"wrote {len(rows)} predictions to {output}")
    else:
        sys.stdout.write(lines)
    err_console.print(f"[dim]{len(rows)} texts in {elapsed:.2f} s ({len(rows) / max(elapsed, 1e-9):.1f} texts/s)[/]")


def register(app):
    app.command()(predict)
