"""`nlpkit finetune`: train a task head (classification / SNGP, multi-label, regression, token tags) on labelled data."""

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
    task: str = typer.Option("classification", "--task",
                             help="classification | multi-label | regression | token-classification"),
    head: str = typer.Option(None, "--head", help="classification | sngp (classification); default: the task's head."),
    label_separator: str = typer.Option(None, "--label-separator",
                                        help="multi-label: split label cells on this (default: JSON lists or one label)."),
    tag_scheme: str = typer.Option("iob2", "--tag-scheme", help="token-classification tags: iob2 | iob1 | none."),
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
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate",
                                   help="Fit a temperature (classification) or mean-field factor (sngp) on the "
                                        "validation split, applied by evaluate, predict and export."),
    bucketing: bool = typer.Option(True, "--bucketing/--no-bucketing",
                                   help="Train on batches of similar lengths, each cut to the next multiple of 8 "
                                        "(of 4 lengths under XLA) instead of --seq-length; off on a TPU."),
):
    """Fine-tune an encoder for a task: classification (ClassificationHead or SNGP), multi-label, regression,
    token classification."""
    from nlpkit.training.finetune import FinetuneConfig, finetune as run

    config = FinetuneConfig(
        train=str(train), output=str(output), model=model and str(model), preset=preset, vocab=vocab and str(vocab),
        validation=validation and str(validation), validation_split=validation_split, task=task, head=head,
        label_separator=label_separator, tag_scheme=tag_scheme, pooling=pooling,
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, seq_length=seq_length, learning_rate=learning_rate,
        warmup_steps=warmup_steps, warmup_fraction=warmup_fraction, weight_decay=weight_decay,
        accumulation_steps=accumulation_steps, eval_every=eval_every, checkpoint_every=checkpoint_every,
        patience=patience, class_weights=class_weights, text_column=text_column, pair_column=pair_column,
        label_column=label_column, empty_rows=empty_rows, tpu=tpu, strategy=strategy, precision=precision, jit=jit,
        seed=seed if seed is not None else (STATE["seed"] or 0), overwrite=overwrite, calibrate=calibrate,
        bucketing=bucketing,
    )
    bar = progress("examples/s")
    bar_task = bar.add_task(f"fine-tuning ({task}{f', {head}' if head else ''})", total=None, rate="")

    def start(total, done):  # the bar appears once the data is read and packed, not before an input error
        bar.update(bar_task, total=total, completed=done)
        bar.start()

    def step(number, record):
        accuracy = f"  val acc {record['val_accuracy']:.3f}" if "val_accuracy" in record else ""
        bar.update(bar_task, completed=number,
                   rate=f"loss {record['loss']:.4f}  {record['examples_per_s']:,.0f} examples/s{accuracy}")

    try:
        summary = run(config, on_start=start, on_step=step)
    finally:
        bar.stop()
    _print_summary(summary, common.precision_line(precision, jit))


def _print_summary(summary, precision):
    info(f"{summary['strategy']}; {precision}")
    if summary["start_step"]:
        info(f"resumed at step {summary['start_step']}")
    table = Table(title=f"nlpkit finetune → {summary['output']}")
    columns = ("step", "loss", "accuracy", "val_loss", "val_accuracy")
    if summary["config"]["task"] != "classification":
        columns = ("step", "loss", "val_loss")
    for column in columns:
        table.add_column(column, justify="right")
    for row in summary["history"]:
        table.add_row(*(f"{row.get(c, float('nan')):.4g}" for c in columns))
    console.print(table)
    best = summary["best"]
    if best:
        monitor = "val_accuracy" if "val_accuracy" in best else "val_loss"
        info(f"kept step {best['step']} ({monitor.replace('_', ' ')} {best[monitor]:.4g})")
    labels = ", ".join(map(str, summary["labels"] or ())) or "none (regression)"
    info(f"labels: {labels}; train {summary['train_examples']}, validation "
         f"{summary['validation_examples']}, skipped empty rows {summary['skipped_empty']}")
    _print_calibration(summary["calibration"])


def _print_calibration(report):
    if not report:
        return
    if "skipped" in report:
        info(f"calibration skipped: {report['skipped']}")
        return
    if report["parameter"] == "thresholds":
        thresholds = ", ".join(f"{name} {value:.3g}" for name, value in report["value"].items())
        f1 = report["micro_f1"]
        info(f"calibration: thresholds {thresholds} (validation micro-F1 {f1['raw']:.4f} → {f1['calibrated']:.4f})")
        return
    nll, ece = report["nll"], report["ece"]
    info(f"calibration: {report['parameter']} = {report['value']:.4g} (validation NLL {nll['raw']:.4f} → "
         f"{nll['calibrated']:.4f}, ECE {ece['raw']:.4f} → {ece['calibrated']:.4f})")


def register(app):
    app.command()(finetune)
