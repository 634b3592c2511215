"""What every command shares: global options, console output, progress bars, seeding."""

import random

import typer

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Modules of `commands/` that register sub-commands, in the order `nlpkit --help` lists them.
COMMAND_MODULES = [
    "doctor",
    "vocab",
    "tokenize",
    "build",
    "convert",
    "pretrain",
    "finetune",
    "evaluate",
    "predict",
    "export",
    "bench",
    "run_all",
]

STATE = {"quiet": False, "verbose": False, "seed": None, "debug": False}

console = Console()
err_console = Console(stderr=True)


def print_error(message):
    """One red line on stderr; the message is plain text (a file name like `a[/b]` is not rich markup)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def info(message):
    """A status line, suppressed by --quiet."""
    if not STATE["quiet"]:
        console.print(message, highlight=False)


def set_seed(seed):
    """Seed Python, NumPy and the Keras backend (which seeds TensorFlow or JAX)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    import keras

    keras.utils.set_random_seed(seed)


def progress(unit="items"):
    """A rich progress bar with count, throughput and ETA; hidden under --quiet.

    Use `task = bar.add_task(description, total=N)` then `bar.update(task, advance=k, rate=...)`;
    the `rate` field is shown as free text, so callers can print lines/s, tokens/s, loss...
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=STATE["quiet"],
        transient=False,
    )


# Options of the shared training runtime (nlpkit/training/runtime.py), declared once for every
# command that trains (`pretrain`, `finetune`): same names, defaults and help everywhere.
def tpu_option():
    return typer.Option(None, "--tpu", help="TPU name, grpc://HOST:PORT, or 'local'.")


def strategy_option():
    return typer.Option("auto", "--strategy", help="auto|cpu|gpu|mirrored|multi-worker|tpu.")


def precision_option():
    return typer.Option(
        "auto", "--precision",
        help="auto|float32|mixed_bfloat16|mixed_float16 (auto: bf16 where the CPU or accelerator has bf16 units; "
             "`nlpkit doctor` shows the choice).",
    )


def jit_option():
    return typer.Option(None, "--jit/--no-jit", help="Compile the training step with XLA (default: what is faster here).")


def resolve_auto_precision(options):
    """`options` (a training command's keyword arguments, once parsed) with `--precision auto` and an
    unset `--jit` replaced by this machine's choice, which is printed. Done after parsing, not in an
    option callback, because it imports TensorFlow (usage errors must not wait for it)."""
    if "precision" not in options or "jit" not in options:
        return options
    from nlpkit.training.runtime import resolve_precision_and_jit

    precision, jit, reason = resolve_precision_and_jit(options["precision"], options["jit"], options.get("tpu"),
                                                       options.get("strategy"))
    if reason:
        info(f"{precision_line(precision, jit)} (auto: {reason})")
    return {**options, "precision": precision, "jit": jit}


def precision_line(precision, jit):
    """How a training run's closing summary names its precision and XLA setting."""
    return f"precision {precision}, XLA {'on' if jit else 'off'}"
