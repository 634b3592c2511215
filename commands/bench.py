"""`nlpkit bench`: speed and memory on this machine."""

import json
import types
from pathlib import Path

import typer

from commands.common import console, info, progress

bench_app = typer.Typer(help="Measure speed and memory on this machine.", no_args_is_help=True)


def _comma_list(text):
    return [part for part in text.replace(" ", "").split(",") if part]


def _int_list(text):
    try:
        return [int(part) for part in _comma_list(text)]
    except ValueError:
        from nlpkit.errors import NlpkitError

        raise NlpkitError(f"--lengths must be comma-separated integers, got '{text}'", hint="e.g. --lengths 512,1024,2048")


@bench_app.command("attention")
def attention(
    attentions: str = typer.Option(
        ",".join(("multi_head", "linear", "causal-linear", "local", "clustered", "improved-clustered", "reformer", "kernel", "bigbird")),
        "--attentions",
        help="Comma-separated registered attention names (multi_head is the full-softmax baseline).",
    ),
    lengths: str = typer.Option("512,1024,2048,4096,8192,16384,32768,65536", "--lengths", help="Comma-separated sequence lengths."),
    batch: int = typer.Option(1, "--batch", min=1),
    hidden: int = typer.Option(256, "--hidden", min=1, help="Model width D."),
    heads: int = typer.Option(4, "--heads", min=1),
    time_budget: float = typer.Option(60.0, "--time-budget", help="Seconds per forward+backward step before a row stops."),
    memory_budget: float = typer.Option(None, "--memory-budget", help="GiB before a row stops (default: min(24, 80% of free memory))."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Timed steps per cell (the fastest is kept)."),
    plot: Path = typer.Option(Path("attention_bench.png"), "--plot", help="Where to save the PNG plot."),
    json_out: Path = typer.Option(None, "--json", help="Also write the results as JSON here."),
):
    """Forward+backward time and peak memory of each attention against sequence length."""
    import keras

    from nlpkit.bench import attention as bench
    from nlpkit.io import atomic_file

    names = [name for name in attentions.split(",") if name]

    def report(result):
        status = f"{result.seconds:.3g} s, {result.peak_bytes / bench.GIB:.2f} GiB" if result.ok else result.note
        info(f"{result.attention:>28} @ {result.length:>6}: {status}")

    results = bench.run(
        names, _int_list(lengths), batch=batch, hidden=hidden, heads=heads, time_budget=time_budget,
        memory_budget=None if memory_budget is None else memory_budget * bench.GIB, repeats=repeats, on_result=report,
    )
    title = f"attention forward+backward ({keras.backend.backend()}, batch {batch}, hidden {hidden}, {heads} heads, float32)"
    console.print(bench.table(results, title))
    bench.plot(results, plot, title)
    info(f"plot saved to {plot}")
    if json_out is not None:
        summary = bench.to_json(results, backend=keras.backend.backend(), batch=batch, hidden=hidden, heads=heads)
        with atomic_file(json_out) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))


@bench_app.command("train-step")
def train_step(
    preset: str = typer.Option(None, "--preset", help="Encoder preset name or config file (JSON/YAML)."),
    model: Path = typer.Option(None, "--model", help="Model directory (its encoder is rebuilt; weights do not change speed)."),
    batch: int = typer.Option(32, "--batch", help="Sequences per step."),
    seq_length: int = typer.Option(128, "--seq-length", help="Tokens per sequence."),
    predictions: int = typer.Option(20, "--predictions", help="Masked positions per sequence."),
    precisions: str = typer.Option(
        None, "--precisions",
        help="Comma-separated: float32, mixed_bfloat16, mixed_float16 (default: float32, and mixed_bfloat16 "
             "where --precision auto would pick it).",
    ),
    xla: str = typer.Option(None, "--xla", help="Comma-separated on,off (default: both; JAX: on)."),
    steps: int = typer.Option(10, "--steps", help="Timed steps per row (the median is reported)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed steps first (tracing, XLA compilation)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the results as JSON here."),
):
    """Masked-LM training-step speed of a preset or model directory at each precision, with and without XLA."""
    import keras

    from nlpkit.bench import train_step as bench
    from nlpkit.io import atomic_file, check_at_least, check_writable

    check_at_least(1, **{"--batch": batch, "--seq-length": seq_length, "--predictions": predictions, "--steps": steps})
    check_at_least(0, **{"--warmup": warmup})
    if json_out is not None:
        check_writable(json_out)  # now, not after minutes of timing
    rows = [(p, x) for p in _precisions(precisions) for x in _xla_modes(xla, keras.backend.backend())]
    make_encoder, name = _encoder_factory(preset, model, seq_length, predictions)
    bar = progress("steps")
    results = []
    with bar:
        task = bar.add_task("train-step", total=len(rows) * (warmup + steps), rate="")
        for precision, jit in rows:
            bar.update(task, rate=f"{precision}, XLA {bench.JIT_NAMES[jit]}")
            row = bench.measure(make_encoder, batch=batch, seq_length=seq_length, predictions=predictions,
                                precision=precision, jit=jit, steps=steps, warmup=warmup,
                                on_step=lambda: bar.advance(task))
            results.append({"preset": name, **row})
    console.print(_train_step_table(results, title=f"masked-LM training step ({results[0]['backend']}, "
                                                   f"{results[0]['device']}, batch {batch}, seq {seq_length})"))
    if json_out is not None:
        with atomic_file(json_out) as tmp:
            tmp.write_text(json.dumps({"benchmark": "train_step", "results": results}, indent=2))
        info(f"results written to {json_out}")


def _precisions(text):
    """The --precisions list, or float32 plus bf16 where `--precision auto` would use it."""
    from nlpkit.errors import NlpkitError
    from nlpkit.training.runtime import PRECISIONS, auto_choice

    if text is None:
        return ["float32"] + (["mixed_bfloat16"] if auto_choice().precision == "mixed_bfloat16" else [])
    names = _comma_list(text)
    unknown = [name for name in names if name not in PRECISIONS]
    if unknown or not names:
        raise NlpkitError(f"--precisions {text!r}: unknown precision {', '.join(unknown) or '(none given)'}",
                          hint=f"use a comma-separated list of {', '.join(PRECISIONS)}")
    return names


def _xla_modes(text, backend):
    from nlpkit.errors import NlpkitError

    if text is None:
        return [True] if backend == "jax" else [True, False]
    modes = {"on": True, "off": False}
    names = _comma_list(text)
    if not names or any(name not in modes for name in names):
        raise NlpkitError(f"--xla {text!r}: use on, off or on,off")
    return [modes[name] for name in names]


def _encoder_factory(preset, model, seq_length, predictions):
    """(a function building the encoder to time, its name); checked here, before any timing starts."""
    from nlpkit.encoders.presets import build_encoder, load_config
    from nlpkit.errors import NlpkitError
    from nlpkit.models.model_dir import read_config
    from nlpkit.training.runtime import check_seq_length_fits

    if (preset is None) == (model is None):
        raise NlpkitError("pass exactly one of --preset NAME and --model DIR", hint="e.g. --preset bert_small")
    config = load_config(preset) if preset is not None else read_config(model)["encoder"]
    # The config's arguments stand in for the encoder's attributes (the one check nlpkit pretrain makes).
    check_seq_length_fits(seq_length, types.SimpleNamespace(**config))
    if predictions >= seq_length:
        raise NlpkitError(f"--predictions {predictions} must be below --seq-length {seq_length}")
    return (lambda: build_encoder(config)), preset if preset is not None else Path(model).name


def _train_step_table(results, title):
    from rich.table import Table

    table = Table(title=title)
    columns = [("preset", "left"), ("precision", "left"), ("XLA", "left"), ("tokens/s", "right"),
               ("step ms", "right"), ("GFLOP/s", "right")]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for row in results:
        table.add_row(row["preset"], row["precision"], row["jit"], f"{row['tokens_per_s']:,.0f}",
                      f"{row['step_ms']:,.1f}", f"{row['gflops_per_s']:,.1f}")
    return table


def register(app):
    app.add_typer(bench_app, name="bench")
