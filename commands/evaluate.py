"""`nlpkit evaluate`: accuracy, macro-F1, NLL, ECE, confusion matrix, reliability diagram, OOD AUROC."""

from pathlib import Path

import typer
from rich.table import Table

from commands.common import console


# "raw": the head's uncalibrated outputs; the plain names are the model's (calibrated) outputs.
_ROW_NAMES = {"nll_raw": "nll (raw)", "nll": "nll (calibrated)", "ece_raw": "ece (raw)", "ece": "ece (calibrated)"}


def evaluate(
    model: Path = typer.Option(..., "--model", help="A fine-tuned model directory (nlpkit finetune --output)."),
    data: Path = typer.Option(..., "--data", help="Labelled data with the columns used for fine-tuning."),
    json_path: Path = typer.Option(None, "--json", help="Write the metrics to this JSON file."),
    diagram: Path = typer.Option(None, "--diagram", help="Reliability diagram PNG (default: beside --json)."),
    ood: Path = typer.Option(None, "--ood", help="Out-of-distribution texts: report AUROC of uncertainty."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json / --diagram file."),
):
    """Evaluate a fine-tuned model: metrics as a table (and JSON); for classifiers a reliability diagram PNG."""
    from nlpkit.io import check_not_input, check_output_file
    from nlpkit.training.evaluation import evaluate as run

    if diagram is None and json_path is not None and _is_classifier(model):
        diagram = json_path.with_suffix(".reliability.png")
    for option, path in (("--json", json_path), ("--diagram", diagram)):
        if path is not None:
            check_not_input(path, {"--model": model, "--data": data, "--ood": ood}, option=option)
            check_output_file(path, force, option=option)
    result = run(model, data, json_path=json_path, diagram_path=diagram, ood_path=ood, batch_size=batch_size)
    if result.get("task", "classification") != "classification":
        _print_task_report(model, data, result)
    else:
        _print_classification(model, data, result)
    if json_path:
        console.print(f"metrics: {json_path}")


def _is_classifier(model):
    """Whether --model is a single-label classifier (the other tasks have no reliability diagram)."""
    from nlpkit.models.model_dir import read_config

    return ((read_config(model).get("head") or {}).get("task") or "classification") == "classification"


def _print_classification(model, data, result):
    table = Table(title=f"nlpkit evaluate: {model} on {data} ({result['examples']} examples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    (parameter, value), = result["calibration"].items()
    for name in ("accuracy", "macro_f1", "nll_raw", "nll", "ece_raw", "ece", "ood_auroc", "ood_auroc_max_probability"):
        if name in result:
            table.add_row(_ROW_NAMES.get(name, name), f"{result[name]:.4f}")
    table.add_row(f"calibration: {parameter}", f"{value:.4g}")
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


# The headline numbers of each task's report, in table order.
_TASK_ROWS = {"multi-label": ("micro_f1", "macro_f1", "subset_accuracy"),
              "regression": ("rmse", "mae", "pearson", "spearman"),
              "token-classification": ("precision", "recall", "f1", "token_accuracy")}


def _print_task_report(model, data, result):
    table = Table(title=f"nlpkit evaluate ({result['task']}): {model} on {data} ({result['examples']} examples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in _TASK_ROWS[result["task"]]:
        if name in result:
            table.add_row(name if result["task"] != "token-classification" or name == "token_accuracy"
                          else f"entity {name}", f"{result[name]:.4f}")
    console.print(table)
    if result.get("per_label"):
        per_label = Table(title="per label")
        columns = list(result["per_label"][0])
        for column in columns:
            per_label.add_column(column, justify="left" if column == "label" else "right")
        for row in result["per_label"]:
            per_label.add_row(*(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
        console.print(per_label)
    if result.get("per_type"):
        per_type = Table(title="entities per type")
        per_type.add_column("type")
        for column in ("precision", "recall", "f1", "true_entities", "predicted_entities"):
            per_type.add_column(column, justify="right")
        for kind, row in result["per_type"].items():
            per_type.add_row(kind, *(f"{row[c]:.4f}" for c in ("precision", "recall", "f1")),
                             str(row["true_entities"]), str(row["predicted_entities"]))
        console.print(per_type)


def register(app):
    app.command()(evaluate)
