"""`nlpkit export`: a SavedModel that takes raw text (tokenizer, packer and model inside)."""

import os
import subprocess
import sys
from pathlib import Path

import typer
from rich.table import Table

from commands.common import console


def export(
    model: Path = typer.Option(..., "--model", help="Model directory (fine-tuned classifier or encoder)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the SavedModel."),
    no_preprocessing: bool = typer.Option(False, "--no-preprocessing", help="Take token ids instead of text."),
    seq_length: int = typer.Option(None, "--seq-length", help="Default: the fine-tuning sequence length."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --output."),
):
    """Export a model directory as a TensorFlow SavedModel for serving."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        # The weights of any backend load into a TensorFlow-backend model: export runs there.
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        raise typer.Exit(subprocess.call([sys.executable, "-m", "commands.main", *sys.argv[1:]], env=env))
    from nlpkit.export.saved_model import export_saved_model

    metadata = export_saved_model(model, output, preprocessing=not no_preprocessing, force=force,
                                  seq_length=seq_length)
    table = Table(title=f"nlpkit export → {output}")
    table.add_column("signature")
    table.add_column("inputs")
    inputs = "input_word_ids, input_mask, input_type_ids" if no_preprocessing else "text"
    for name in metadata["signatures"]:
        table.add_row(name, {"serving_pair": "text, text_pair", "serve_examples": "examples"}.get(name, inputs))
    console.print(table)


def register(app):
    app.command()(export)
