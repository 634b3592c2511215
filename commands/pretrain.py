"""`nlpkit pretrain`: masked-LM pretraining; running it again on an interrupted RUN resumes it."""

from pathlib import Path

import typer
from rich.table import Table

from commands import common
from commands.common import STATE, console, info, progress

DATA_HELP = (
    "Text file or folder (one sentence per line, blank line between documents); a csv/tsv/json/jsonl/parquet "
    "file (one document per row of --text-column, a sentence per line); or a folder written by nlpkit tokenize."
)


def pretrain(
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    output: Path = typer.Option(..., "--output", help="Run directory; a model directory when training ends."),
    preset: str = typer.Option(None, "--preset", help="Encoder preset name or config file (JSON/YAML); `nlpkit build --list` lists them."),
    model: Path = typer.Option(None, "--model", help="Model directory to start from (e.g. converted weights)."),
    vocab: Path = typer.Option(None, "--vocab", help="WordPiece vocab.txt (default: the model directory's)."),
    text_column: str = typer.Option(None, "--text-column", help="Column of a csv/json/jsonl/parquet --data (default: text)."),
    max_steps: int = typer.Option(1000, "--max-steps", help="Optimizer updates in total."),
    batch_size: int = typer.Option(32, "--batch-size", help="Global batch (sequences per update, all replicas)."),
    seq_length: int = typer.Option(
        None, "--seq-length", help="Tokens per packed sequence (default: the tokenized folder's, else 128)."
    ),
    objective: str = typer.Option(
        "none", "--objective", help="Sentence-pair objective added to masked-LM: none|nsp (next sentence)|sop (order)."
    ),
    max_predictions: int = typer.Option(20, "--max-predictions", help="Masked positions per sequence at most."),
    whole_word: bool = typer.Option(False, "--whole-word/--no-whole-word", help="Mask whole words."),
    learning_rate: float = typer.Option(1e-4, "--learning-rate", help="Peak learning rate (AdamW)."),
    warmup_steps: int = typer.Option(None, "--warmup-steps", help="Linear warm-up (default 10% of --max-steps)."),
    accumulation_steps: int = typer.Option(1, "--accumulation-steps", help="Micro-batches per update."),
    checkpoint_every: int = typer.Option(1000, "--checkpoint-every", help="Checkpoint every K updates."),
    keep_checkpoints: int = typer.Option(3, "--keep-checkpoints", help="Checkpoints kept."),
    tpu: str = common.tpu_option(),
    strategy: str = common.strategy_option(),
    precision: str = common.precision_option(),
    jit: bool = common.jit_option(),
    seed: int = typer.Option(None, "--seed", help="Seed of the data order, masks and initialisation (default: nlpkit --seed, else 0)."),
    json_path: Path = typer.Option(None, "--json", help="Also write the closing summary (losses, MLM accuracy, tokens/s) to this JSON file."),
    overwrite: bool = typer.Option(
        False, "--overwrite", "--force",
        help="Start afresh even if --output holds a run (the old run stays until the new model is complete).",
    ),
):
    """Pretrain an encoder with masked-LM (+ optional next-sentence / sentence-order prediction).

    --data is raw text, a csv/json/jsonl/parquet table, or the TFRecord folder of `nlpkit tokenize`
    (already packed rows: masked-LM only).
    """
    from nlpkit.io import check_output_file
    from nlpkit.training.pretrain import PretrainConfig, run_pretraining

    if json_path is not None:
        check_output_file(json_path, overwrite, option="--json", flag="--overwrite")

    config = PretrainConfig(
        data=str(data),
        output=str(output),
        preset=preset,
        model=str(model) if model else None,
        vocab=str(vocab) if vocab else None,
        text_column=text_column,
        max_steps=max_steps,
        batch_size=batch_size,
        seq_length=seq_length,
        objective=objective,
        max_predictions_per_seq=max_predictions,
        whole_word=whole_word,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        accumulation_steps=accumulation_steps,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        strategy=strategy,
        tpu=tpu,
        precision=precision,
        jit=jit,
        seed=seed if seed is not None else (STATE["seed"] or 0),
    )
    bar, tasks = progress("tokens/s"), []

    def on_step(step, loss, tokens_per_s):
        if not tasks:  # the bar appears with the first update, after every check has passed
            bar.start()
            tasks.append(bar.add_task("pretrain", total=max_steps, completed=step - 1, rate=""))
        bar.update(tasks[0], completed=step, rate=f"loss {loss:.4f}  {tokens_per_s:,.0f} tokens/s")

    try:
        summary = run_pretraining(config, overwrite=overwrite, on_step=on_step)
    finally:
        if tasks:
            bar.stop()
    summary = {**summary, "precision": precision, "jit": jit}
    _print_summary(summary)
    if json_path is not None:
        _write_summary(summary, json_path)


def _closing_figures(summary):
    """{steps, first_loss, last_loss, mlm_accuracy, (sentence_accuracy), mean_tokens_per_s} of a run, or None."""
    history = summary["history"]
    if not history:
        return None
    speeds = [h["tokens_per_s"] for h in history[1:]] or [history[0]["tokens_per_s"]]
    figures = {"steps": summary["steps"], "first_loss": history[0]["loss"], "last_loss": history[-1]["loss"],
               "mlm_accuracy": history[-1]["mlm_accuracy"], "mean_tokens_per_s": sum(speeds) / len(speeds)}
    if "sentence_accuracy" in history[-1]:
        figures["sentence_accuracy"] = history[-1]["sentence_accuracy"]
    return figures


def _write_summary(summary, path):
    from nlpkit.io import atomic_file, json_text

    document = {"run": summary["run"], "start_step": summary["start_step"], "strategy": summary["strategy"],
                "precision": summary["precision"], "jit": summary["jit"],
                **(_closing_figures(summary) or {"steps": summary["steps"]})}
    with atomic_file(path) as tmp:
        tmp.write_text(json_text(document, indent=2) + "\n", encoding="utf-8")
    info(f"wrote {path}")


def _print_summary(summary):
    info(f"{summary['strategy']}; {common.precision_line(summary['precision'], summary['jit'])}")
    if summary["start_step"]:
        info(f"resumed at step {summary['start_step']}")
    table = Table(title=f"pretrain → {summary['run']}")
    figures = _closing_figures(summary)
    columns = ["steps", "first loss", "last loss", "last MLM accuracy", "mean tokens/s"]
    sentence = figures is not None and "sentence_accuracy" in figures
    if sentence:
        columns.insert(4, "last sentence accuracy")
    for column in columns:
        table.add_column(column, justify="right")
    if figures:
        row = [
            f"{summary['start_step']} → {summary['steps']}",
            f"{figures['first_loss']:.4f}",
            f"{figures['last_loss']:.4f}",
            f"{figures['mlm_accuracy']:.3f}",
            f"{figures['mean_tokens_per_s']:,.0f}",
        ]
        if sentence:
            row.insert(4, f"{figures['sentence_accuracy']:.3f}")
        table.add_row(*row)
    else:
        table.add_row(str(summary["steps"]), "-", "-", "-", "already complete")
    console.print(table)


def register(app):
    app.command()(pretrain)
