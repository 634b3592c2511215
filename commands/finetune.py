"""`nlpkit finetune`: train a classification or SNGP head on labelled data."""

from pathlib import Path

import typer
from rich.table import Table

from commands import common
from commands.common import STATE, console, info, progress


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
    max_steps: int = typer.Option(None, "--max-steps", help="Optimizer updates in total (default: --epochs of them)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Global batch (examples per update, all replicas)."),
    seq_length: int = typer.Option(128, "--seq-length"),
    learning_rate: float = typer.Option(5e-5, "--learning-rate", help="Peak learning rate (AdamW)."),
    warmup_steps: int = typer.Option(None, "--warmup-steps", help="Linear warm-up updates (default: --warmup-fraction)."),
    warmup_fraction: float = typer.Option(0.1, "--warmup-fraction", help="Warm-up as a fraction of the updates."),
    weight_decay: float = typer.Option(0.01, "--weight-decay", help="AdamW weight decay (never on norms and biases)."),
    accumulation_steps: int = typer.Option(1, "--accumulation-steps", help="Micro-batches per update."),
    eval_every: int = typer.Option(None, "--eval-every", help="Evaluate every N updates (default: once per epoch)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Checkpoint every N updates (default: at each evaluation)."),
    patience: int = typer.Option(2, help="Early stopping: evaluations without validation-accuracy gain."),
    class_weights: bool = typer.Option(False, help="Weight the loss by inverse class frequency."),
    text_column: str = typer.Option("text", "--text-column"),
    pair_column: str = typer.Option(None, "--pair-column"),
    label_column: str = typer.Option("label", "--label-column"),
    empty_rows: str = typer.Option("skip", help="skip | fail: what to do with rows of empty text."),
    tpu: str = common.tpu_option(),
    strategy: str = common.strategy_option(),
    precision: str = common.precision_option(),
    jit: bool = common.jit_option(),
    seed: int = typer.Option(None, "--seed", help="Seed of the split, data order and initialisation (default: nlpkit --seed, else 0)."),
    overwrite: bool = typer.Option(False, "--overwrite", "--force",
                                   help="Replace an existing --output model directory, once the new one is saved."),
):
    """Fine-tune an encoder with a ClassificationHead or an SNGP uncertainty head."""
    from nlpkit.training.finetune import FinetuneConfig, finetune as run

    config = FinetuneConfig(
        train=str(train), output=str(output), model=model and str(model), preset=preset, vocab=vocab and str(vocab),
        validation=validation and str(validation), validation_split=validation_split, head=head, pooling=pooling,
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, seq_length=seq_length, learning_rate=learning_rate,
        warmup_steps=warmup_steps, warmup_fraction=warmup_fraction, weight_decay=weight_decay,
        accumulation_steps=accumulation_steps, eval_every=eval_every, checkpoint_every=checkpoint_every,
        patience=patience, class_weights=class_weights, text_column=text_column, pair_column=pair_column,
        label_column=label_column, empty_rows=empty_rows, tpu=tpu, strategy=strategy, precision=precision, jit=jit,
        seed=seed if seed is not None else (STATE["seed"] or 0), overwrite=overwrite,
    )
    bar = progress("examples/s")
    task = bar.add_task(f"fine-tuning ({head})", total=None, rate="")

    def start(total, done):  # the bar appears once the data is read and packed, not before an input error
        bar.update(task, total=total, completed=done)
        bar.start()

    def step(number, record):
        accuracy = f"  val acc {record['val_accuracy']:.3f}" if "val_accuracy" in record else ""
        bar.update(task, completed=number,
                   rate=f"loss {record['loss']:.4f}  {record['examples_per_s']:,.0f} examples/s{accuracy}")

    try:
        summary = run(config, on_start=start, on_step=step)
    finally:
        bar.stop()
    _print_summary(summary)


def _print_summary(summary):
    info(summary["strategy"])
    if summary["start_step"]:
        info(f"resumed at step {summary['start_step']}")
    table = Table(title=f"nlpkit finetune → {summary['output']}")
    columns = ("step", "loss", "accuracy", "val_loss", "val_accuracy")
    for column in columns:
        table.add_column(column, justify="right")
    for row in summary["history"]:
        table.add_row(*(f"{row.get(c, float('nan')):.4g}" for c in columns))
    console.print(table)
    best = summary["best"]
    if best:
        info(f"kept step {best['step']} (val accuracy {best['val_accuracy']:.4g})")
    info(f"labels: {', '.join(summary['labels'])}; train {summary['train_examples']}, validation "
         f"{summary['validation_examples']}, skipped empty rows {summary['skipped_empty']}")


def register(app):
    app.command()(finetune)
