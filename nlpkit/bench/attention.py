"""Attention scaling: forward+backward time and peak memory against sequence length.

Each measurement is one compiled Keras train step (`train_on_batch`: forward, loss, gradients,
SGD update) of a single attention layer, built by registry name, on random `[B, L, D]` inputs,
so it runs the same under TensorFlow (tf.function) and JAX (jax.jit). Peak memory is the rise of
the process's resident memory (sampled every 2 ms) during the timed step above what it was
before it. A row stops at the first length that exceeds the time budget, fails, or is predicted
(from the growth between the last two lengths) to exceed the time or memory budget. A failure
is recorded in its row and the other rows still run, so one broken attention never loses the table.
"""

import dataclasses
import gc
import os
import threading
import time

import numpy as np

from nlpkit.errors import NlpkitError

DEFAULT_ATTENTIONS = (
    "multi_head",
    "linear",
    "causal-linear",
    "local",
    "clustered",
    "improved-clustered",
    "reformer",
    "kernel",
    "bigbird",
)
DEFAULT_LENGTHS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
GIB = 1024**3


@dataclasses.dataclass
class Measurement:
    attention: str
    length: int
    seconds: float | None = None
    peak_bytes: int | None = None
    note: str = ""

    @property
    def ok(self):
        return self.seconds is not None


def _resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Context manager: highest resident memory above the level at entry (`.peak` bytes)."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.peak = 0

    def __enter__(self):
        self._base = _resident_bytes()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, _resident_bytes() - self._base)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _resident_bytes() - self._base)


def available_memory_bytes():
    """MemAvailable of /proc/meminfo (what can be allocated without swapping)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise NlpkitError("cannot read /proc/meminfo", hint="pass --memory-budget explicitly")


def _train_step(name, length, batch, hidden, heads, seed):
    """A compiled one-layer model and its inputs: returns `step()` that runs one train step."""
    import keras

    from nlpkit.layers.attention.registry import make_attention

    x = keras.Input(shape=(length, hidden), batch_size=batch)
    layer = make_attention(name, num_heads=heads, key_dim=hidden // heads)
    model = keras.Model(x, layer(x, x))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=keras.backend.backend() == "jax")
    data = np.random.default_rng(seed).normal(size=(batch, length, hidden)).astype("float32")
    target = np.zeros_like(data)
    return lambda: model.train_on_batch(data, target)


def measure(name, length, batch=1, hidden=256, heads=4, repeats=1, seed=0):
    """(seconds of the fastest of `repeats` timed steps, peak resident bytes) after one warm-up step."""
    step = _train_step(name, length, batch, hidden, heads, seed)
    step()  # builds, traces and compiles
    best, peak = float("inf"), 0
    for _ in range(repeats):
        with PeakMemory() as memory:
            start = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - start)
        peak = max(peak, memory.peak)
    return best, peak


def _predict(done, length, attribute):
    """Extrapolate seconds or bytes to `length` from the last two measurements (exponent in [1, 2])."""
    if not done:
        return 0.0
    last = done[-1]
    value = getattr(last, attribute)
    exponent = 2.0
    if len(done) >= 2 and getattr(done[-2], attribute) > 0 and value > 0:
        previous = done[-2]
        exponent = np.log(value / getattr(previous, attribute)) / np.log(last.length / previous.length)
        exponent = float(np.clip(exponent, 1.0, 2.0))
    return value * (length / last.length) ** exponent


def bench_row(name, lengths, *, batch, hidden, heads, time_budget, memory_budget, repeats=1, on_result=None):
    """Measurements of one attention over increasing lengths; after the first length that is
    over a budget (measured or predicted) or fails, the rest are marked 'stopped'."""
    import keras

    done, row, stopped = [], [], False
    for length in sorted(lengths):
        result = Measurement(name, length)
        predicted_time = _predict(done, length, "seconds")
        predicted_memory = _predict(done, length, "peak_bytes")
        if stopped:
            result.note = "stopped"
        elif predicted_memory > memory_budget:
            result.note = f"over memory budget (~{predicted_memory / GIB:.1f} GiB predicted)"
        elif predicted_time > time_budget:
            result.note = f"over time budget (~{predicted_time:.0f} s predicted)"
        else:
            try:
                result.seconds, result.peak_bytes = measure(name, length, batch, hidden, heads, repeats)
                done.append(result)
                if result.seconds > time_budget:
                    result.note = "over time budget"
                elif result.peak_bytes > memory_budget:
                    result.note = "over memory budget"
            except Exception as err:  # noqa: BLE001 - any failure (out of memory, a kernel error) ends this row only
                result.note = _failure_note(err)
            finally:
                keras.backend.clear_session()
                gc.collect()
        stopped = stopped or bool(result.note)
        row.append(result)
        if on_result is not None:
            on_result(result)
    return row


def _failure_note(err):
    """'failed: Type: the message's gist', one line: a TensorFlow "Graph execution error:" carries
    the traced Python stack first and its real message last (before a "[[{{node ...}}]]" line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0] == "Graph execution error:":
        lines = [line for line in lines if not line.startswith("[[")][-1:]
    gist = lines[0][:160] if lines else ""
    return f"failed: {type(err).__name__}: {gist}" if gist else f"failed: {type(err).__name__}"


def run(attentions=DEFAULT_ATTENTIONS, lengths=DEFAULT_LENGTHS, *, batch=1, hidden=256, heads=4, time_budget=60.0,
        memory_budget=None, repeats=1, on_result=None):
    """Measure every attention at every length (within budgets). Returns {name: [Measurement]}."""
    from nlpkit.layers.attention.registry import available_attentions

    if hidden % heads:
        raise NlpkitError(f"hidden={hidden} is not divisible by heads={heads}", hint="choose --hidden a multiple of --heads")
    unknown = [name for name in attentions if name.partition(":")[0] not in available_attentions()]
    if unknown:
        raise NlpkitError(f"unknown attention {', '.join(unknown)}", hint=f"choose from: {', '.join(available_attentions())}")
    if memory_budget is None:
        memory_budget = min(24 * GIB, 0.8 * available_memory_bytes())
    return {
        name: bench_row(
            name, lengths, batch=batch, hidden=hidden, heads=heads, time_budget=time_budget,
            memory_budget=memory_budget, repeats=repeats, on_result=on_result,
        )
        for name in attentions
    }


def speedups(results, baseline="multi_head"):
    """{name: {length: baseline seconds / seconds}} where both were measured."""
    base = {m.length: m.seconds for m in results.get(baseline, []) if m.ok}
    return {
        name: {m.length: base[m.length] / m.seconds for m in row if m.ok and m.length in base}
        for name, row in results.items()
        if name != baseline
    }


def table(results, title):
    """A rich Table: one row per attention, one column per length, 'seconds / GiB' cells."""
    from rich.table import Table

    lengths = sorted({m.length for row in results.values() for m in row})
    out = Table(title=title)
    out.add_column("attention")
    for length in lengths:
        out.add_column(f"{length:,}", justify="right")
    for name, row in results.items():
        cells = {m.length: m for m in row}
        out.add_row(name, *(_cell(cells.get(length)) for length in lengths))
    out.caption = "cell: forward+backward seconds / peak GiB; '-' not run (budget or earlier stop)"
    return out


def _cell(measurement):
    if measurement is None or not measurement.ok:
        note = "" if measurement is None else measurement.note
        if note.startswith("failed"):
            return f"[red]- {note.split(':')[0]}[/]"  # the reason is in the progress lines and the JSON
        return "[dim]-[/]" if not note.startswith("over") else f"[yellow]- {note.split(' (')[0]}[/]"
    text = f"{measurement.seconds:.3g} s / {measurement.peak_bytes / GIB:.2f}"
    return f"[yellow]{text}[/]" if measurement.note else text


def plot(results, path, title):
    """Save a two-panel log-log PNG (time and peak memory against length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlpkit.io import atomic_file

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, row in results.items():
        done = [m for m in row if m.ok]
        if not done:
            continue
        lengths = [m.length for m in done]
        time_axis.plot(lengths, [m.seconds for m in done], marker="o", label=name)
        memory_axis.plot(lengths, [max(m.peak_bytes, 1) / GIB for m in done], marker="o", label=name)
    for axis, label in ((time_axis, "forward+backward seconds"), (memory_axis, "peak memory (GiB)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("sequence length")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def to_json(results, **settings):
    """A JSON-ready summary (settings, every measurement, speed-ups over multi_head)."""
    return {
        **settings,
        "results": {name: [dataclasses.asdict(m) for m in row] for name, row in results.items()},
        "speedup_vs_multi_head": {name: {str(k): round(v, 2) for k, v in by_length.items()} for name, by_length in speedups(results).items()},
    }
