"""`nlpkit bench`: speed and memory on this machine."""

import json
from pathlib import Path

import typer

from commands.common import console, info

bench_app = typer.Typer(help="Measure speed and memory on this machine.", no_args_is_help=True)


def _int_list(text):
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
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


def register(app):
    app.add_typer(bench_app, name="bench")
