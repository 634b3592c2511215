"""`nlpkit convert`: pretrained BERT weights (HF or Google TF format) into a model directory, or back to HF."""

from pathlib import Path

import typer
from rich.table import Table

from commands.common import STATE, console, info

_STATUS_STYLE = {"set": "green", "unused": "red", "missing": "red"}


def convert(
    src: Path = typer.Argument(..., help="HF BERT folder, Google BERT folder / checkpoint prefix, or (with --to hf) a model directory."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    allow_unused: list[str] = typer.Option([], "--allow-unused", help="Glob of source tensors that may stay unused (e.g. 'cls.*')."),
    allow_missing: list[str] = typer.Option([], "--allow-missing", help="Glob of model variables the source may not set."),
    to: str = typer.Option("nlpkit", "--to", help="'nlpkit' (import into a model directory) or 'hf' (export SRC model directory)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
):
    """Import pretrained weights with strict accounting (every tensor used, every variable set), or export to HF."""
    from nlpkit.models import convert as conversion
    from nlpkit.errors import NlpkitError

    if to == "hf":
        names = conversion.export_hf(src, output, overwrite=force)
        info(f"wrote {len(names)} tensors in Hugging Face BERT format to [bold]{output}[/]")
        return
    if to != "nlpkit":
        raise NlpkitError(f"--to {to!r} is not supported", hint="use --to nlpkit or --to hf")
    try:
        accounting = conversion.convert(src, output, allow_unused=allow_unused, allow_missing=allow_missing, overwrite=force)
    except NlpkitError as err:
        if getattr(err, "accounting", None) is not None:
            _print_accounting(err.accounting, only_problems=True)
        raise
    _print_accounting(accounting, only_problems=STATE["quiet"])
    info(
        f"set {accounting.count('set')} variables, skipped {accounting.count('skipped')} non-weight tensors, "
        f"{accounting.count('unused (allowed)')} allowed unused, {accounting.count('missing (allowed)')} allowed missing; "
        f"wrote model directory [bold]{output}[/]"
    )


def _print_accounting(accounting, only_problems):
    rows = [row for row in accounting.rows if not only_problems or row.status != "set"]
    if not rows:
        return
    table = Table(title="weight accounting")
    for column in ("source tensor", "shape", "model variable", "shape", "status"):
        table.add_column(column)
    for row in rows:
        style = _STATUS_STYLE.get(row.status, "yellow")
        shapes = [str(list(shape)) if shape else "" for shape in (row.source_shape, row.target_shape)]
        table.add_row(row.source, shapes[0], row.target, shapes[1], row.status, style=style)
    console.print(table)


def register(app):
    app.command()(convert)
