"""`nlpkit finetune`: train a classification or SNGP head on labelled data."""

from pathlib import Path

import typer
from rich.table import Table

from commands.common import console, info, progress


def finetune(
    train: Path = typer.Option(..., "--train", help="Labelled csv / json(l) / parquet file or folder."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the fine-tuned model directory."),
    model: Path = typer.Option(None, "--model", help="Model directory: build/convert/pretrain output."),
    preset: str = typer.Option(None, "--preset", help="Start from a preset with random weights instead."),
    vocab: Path = typer.Option(None, "--vocab", help="Vocabulary for --preset (default: the bundled BERT vocab)."),
    validation: Path = typer.Option(None, "--validation", help="Labelled validation data."),
    validation_split: float = typer.Option(0.1, help="Fraction of --train held out when --validation is absent."),
    head: str = typer.Option("classification", "--head", help="classification | sngp"),
    pooling: str = typer.Option(None, "--pooling",
                                help="cls | mean: what the head reads (default: cls for classification, mean for sngp)."),
    epochs: int = typer.Option(3, "--epochs", min=1),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    seq_length: int = typer.Option(128, "--seq-length"),
    learning_rate: float = typer.Option(5e-5, "--learning-rate"),
    patience: int = typer.Option(2, help="Early stopping: epochs without validation-accuracy gain."),
    class_weights: bool = typer.Option(False, help="Weight the loss by inverse class frequency."),
    text_column: str = typer.Option("text", "--text-column"),
    pair_column: str = typer.Option(None, "--pair-column"),
    label_column: str = typer.Option("label", "--label-column"),
    empty_rows: str = typer.Option("skip", help="skip | fail: what to do with rows of empty text."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output."),
):
    """Fine-tune an encoder with a ClassificationHead or an SNGP uncertainty head."""
    from nlpkit._tf import import_tensorflow

    import_tensorflow()
    from nlpkit.training.finetune import FinetuneConfig, finetune as run

    config = FinetuneConfig(
        train=str(train), output=str(output), model=model and str(model), preset=preset, vocab=vocab and str(vocab),
        validation=validation and str(validation), validation_split=validation_split, head=head, pooling=pooling,
        epochs=epochs,
        batch_size=batch_size, seq_length=seq_length, learning_rate=learning_rate, patience=patience,
        class_weights=class_weights, text_column=text_column, pair_column=pair_column, label_column=label_column,
        empty_rows=empty_rows, seed=seed, overwrite=overwrite,
    )
    bar = progress()
    task = bar.add_task(f"fine-tuning ({head})", total=None, rate="")

    def start(total):  # the bar appears once the data is read and packed, not before an input error
        bar.update(task, total=total)
        bar.start()

    try:
        summary = run(
            config,
            on_start=start,
            on_epoch=lambda row: bar.update(task, description=f"epoch {row['epoch']}/{epochs}",
                                            rate=f"val acc {row.get('val_accuracy', float('nan')):.3f}"),
            on_batch=lambda logs: bar.update(task, advance=1, rate=f"loss {float(logs.get('loss', 0)):.4f}"),
        )
    finally:
        bar.stop()
    table = Table(title=f"nlpkit finetune → {summary['output']}")
    for column in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"):
        table.add_column(column, justify="right")
    for row in summary["history"]:
        table.add_row(*(f"{row.get(c, float('nan')):.4g}" for c in ("epoch", "loss", "accuracy", "val_loss",
                                                                      "val_accuracy", "seconds")))
    console.print(table)
    info(f"labels: {', '.join(summary['labels'])}; train {summary['train_examples']}, validation "
         f"{summary['validation_examples']}, skipped empty rows {summary['skipped_empty']}")


def register(app):
    app.command()(finetune)
