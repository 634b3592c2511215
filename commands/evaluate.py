"""`nlpkit evaluate`: accuracy, macro-F1, NLL, ECE, confusion matrix, reliability diagram, OOD AUROC."""

from pathlib import Path

import typer
from rich.table import Table

from commands.common import console


def evaluate(
    model: Path = typer.Option(..., "--model", help="A fine-tuned model directory (nlpkit finetune --output)."),
    data: Path = typer.Option(..., "--data", help="Labelled data with the columns used for fine-tuning."),
    json_path: Path = typer.Option(None, "--json", help="Write the metrics to this JSON file."),
    diagram: Path = typer.Option(None, "--diagram", help="Reliability diagram PNG (default: beside --json)."),
    ood: Path = typer.Option(None, "--ood", help="Out-of-distribution texts: report AUROC of uncertainty."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json / --diagram file."),
):
    """Evaluate a classifier: metrics as a table (and JSON), a reliability diagram PNG."""
    from nlpkit.io import check_not_input, check_output_file
    from nlpkit.training.evaluation import evaluate as run

    if diagram is None and json_path is not None:
        diagram = json_path.with_suffix(".reliability.png")
    for option, path in (("--json", json_path), ("--diagram", diagram)):
        if path is not None:
            check_not_input(path, {"--model": model, "--data": data, "--ood": ood}, option=option)
            check_output_file(path, force, option=option)
    result = run(model, data, json_path=json_path, diagram_path=diagram, ood_path=ood, batch_size=batch_size)
    table = Table(title=f"nlpkit evaluate: {model} on {data} ({result['examples']} examples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("accuracy", "macro_f1", "nll", "ece", "ood_auroc", "ood_auroc_max_probability"):
        if name in result:
            table.add_row(name, f"{result[name]:.4f}")
    console.print(table)
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for label in result["labels"]:
        matrix.add_column(label, justify="right")
    for label, row in zip(result["labels"], result["confusion_matrix"]):
        matrix.add_row(label, *map(str, row))
    console.print(matrix)
    for name in ("reliability_diagram",):
        if name in result:
            console.print(f"{name}: {result[name]}")
    if json_path:
        console.print(f"metrics: {json_path}")


def register(app):
    app.command()(evaluate)
