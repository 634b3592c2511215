"""Fine-tuning speed: `nlpkit finetune` against HF transformers (the anchor) on the same data and budget.

Writes train / validation / test CSVs of Rotten Tomatoes snippets (`examples/prepare_data.py reviews`,
bundled data), converts the bundled all-MiniLM-L6-v2 once, then runs each nlpkit variant (a real
`nlpkit finetune` process, then `nlpkit evaluate` on the test split) and, with --hf-venv, the HF anchor
(`../shared/anchors/finetune_hf.py`), ALTERNATELY, --repeats times. Prints a table and one JSON line.

    python benchmarks/finetune.py --hf-venv /tmp/venv-hf --repeats 2
    python benchmarks/finetune.py --variant bucketed= --variant padded=--no-bucketing --repeats 1

Training loop: nlpkit's is the sum of its per-update times (TensorBoard `examples_per_s`; tracing and the
per-epoch validation included), HF's the epochs' time without validation (`train_s`, the stricter
figure) and with it (`train_plus_val_s`). Whole command: the process' wall time (HF's less its
test-set scoring, which nlpkit does in `nlpkit evaluate`, not timed).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository root, not benchmarks/

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-venv", type=Path, help="venv with torch + transformers (the anchor); none: nlpkit only")
    parser.add_argument("--anchors", type=Path, default=ANCHORS, help="folder of finetune_hf.py")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--train", type=int, default=2400)
    parser.add_argument("--validation", type=int, default=400)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=48)
    parser.add_argument("--variant", action="append", metavar="NAME=ARGS",
                        help="an nlpkit run: NAME=extra finetune options (default: nlpkit=)")
    parser.add_argument("--work", type=Path, help="folder for data and runs (default: a temporary one)")
    return parser.parse_args()


def cpu_line():
    from nlpkit.training.precision import BF16_CPU_FLAGS, cpu_flags

    flags = cpu_flags()
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    wide = [flag for flag in ("avx2", "avx512f", *BF16_CPU_FLAGS, "amx_tile") if flag in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(wide)}; load {os.getloadavg()[0]:.1f}"


def prepare(work, args):
    """The three CSVs and the converted model directory (once per work folder)."""
    from examples.prepare_data import review_splits
    from nlpkit.data.bundled import minilm_dir

    if not (work / "test.csv").is_file():
        review_splits(work, args.train, args.validation, args.test, ood=1)
    if not (work / "minilm" / "config.json").is_file():
        _check([sys.executable, "-m", "commands.main", "--quiet", "convert", minilm_dir(), "-o", work / "minilm"])
    return minilm_dir()


def _check(command, **options):
    done = subprocess.run([str(part) for part in command], cwd=options.pop("cwd", ROOT), capture_output=True,
                          text=True, **options)
    if done.returncode:
        raise SystemExit(f"{command[:4]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def loop_seconds(run, batch):
    """Sum of the per-update times nlpkit logged (TensorBoard examples_per_s = batch / seconds)."""
    from nlpkit._tf import import_tensorflow

    tf = import_tensorflow()
    from tensorflow.core.util import event_pb2

    seconds = {}
    for events in (run / "logs").glob("events.*"):
        for record in tf.data.TFRecordDataset(str(events)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == "examples_per_s":
                    seconds[event.step] = batch / float(tf.make_ndarray(value.tensor))
    return sum(seconds.values())


def ours(work, args, name, extra, index):
    run = work / f"{name}-{index}"
    command = [sys.executable, "-m", "commands.main", "--quiet", "finetune", "--train", work / "train.csv",
               "--validation", work / "validation.csv", "--model", work / "minilm", "-o", run, "--overwrite",
               "--epochs", args.epochs, "--batch-size", args.batch, "--seq-length", args.seq_length, *shlex.split(extra)]
    started = time.perf_counter()
    _check(command)
    wall = time.perf_counter() - started
    metrics = work / f"{name}-{index}.json"
    _check([sys.executable, "-m", "commands.main", "--quiet", "evaluate", "--model", run, "--data", work / "test.csv",
            "--json", metrics])
    examples = args.epochs * args.train
    loop = loop_seconds(run, args.batch)
    return {"tool": name, "options": extra, "loop_s": round(loop, 1), "loop_examples_per_s": round(examples / loop, 2),
            "wall_s": round(wall, 1), "wall_examples_per_s": round(examples / wall, 2),
            "test_accuracy": json.loads(metrics.read_text())["accuracy"]}


def theirs(work, args, model):
    command = [args.hf_venv / "bin" / "python", "finetune_hf.py", "--model", model, "--train", work / "train.csv",
               "--validation", work / "validation.csv", "--test", work / "test.csv", "--epochs", args.epochs,
               "--batch", args.batch, "--max-len", args.seq_length, "--clip", 1.0, "--threads", os.cpu_count()]
    started = time.perf_counter()
    out = _check(command, cwd=args.anchors)
    result = json.loads(out.strip().splitlines()[-1])["results"][0]
    wall = time.perf_counter() - started - result["test_eval_s"]
    examples = args.epochs * args.train
    return {"tool": "hf", "options": "", "loop_s": result["train_s"], "loop_examples_per_s": result["train_ex_per_s"],
            "loop_with_validation_examples_per_s": round(examples / result["train_plus_val_s"], 2), "wall_s": round(wall, 1),
            "wall_examples_per_s": round(examples / wall, 2), "test_accuracy": result["test_acc"]}


def best_ratios(rows):
    """Per nlpkit variant: its best over HF's best, for the loop (strict and with validation) and the command."""
    hf = [row for row in rows if row["tool"] == "hf"]
    if not hf:
        return {}
    top = lambda chosen, key: max(row[key] for row in chosen)  # noqa: E731
    ratios = {}
    for name in dict.fromkeys(row["tool"] for row in rows if row["tool"] != "hf"):
        mine = [row for row in rows if row["tool"] == name]
        ratios[name] = {"loop_vs_hf_train": round(top(mine, "loop_examples_per_s") / top(hf, "loop_examples_per_s"), 3),
                        "loop_vs_hf_train_plus_val": round(top(mine, "loop_examples_per_s") / top(hf, "loop_with_validation_examples_per_s"), 3),
                        "wall": round(top(mine, "wall_examples_per_s") / top(hf, "wall_examples_per_s"), 3)}
    return ratios


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    variants = [item.partition("=")[::2] for item in (args.variant or ["nlpkit="])]
    if args.hf_venv and not (args.anchors / "finetune_hf.py").is_file():
        raise SystemExit(f"no finetune_hf.py in {args.anchors} (pass --anchors)")
    work = args.work or Path(tempfile.mkdtemp(prefix="nlpkit-finetune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = prepare(work, args)
    machine, rows = cpu_line(), []
    for index in range(args.repeats):
        for name, extra in variants:
            rows.append({**ours(work, args, name, extra, index), "load": round(os.getloadavg()[0], 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.hf_venv:
            rows.append({**theirs(work, args, model), "load": round(os.getloadavg()[0], 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    _print_table(rows, machine, args)
    print(json.dumps({"benchmark": "finetune", "cpu": machine, "train": args.train, "epochs": args.epochs,
                      "batch": args.batch, "seq_length": args.seq_length, "results": rows, "ratios": best_ratios(rows)}))


def _print_table(rows, machine, args):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fine-tuning all-MiniLM-L6-v2: {args.train} reviews x {args.epochs} epochs, batch "
                        f"{args.batch}, length {args.seq_length}", caption=machine)
    columns = ("tool", "options", "loop_s", "loop_examples_per_s", "wall_s", "wall_examples_per_s", "test_accuracy", "load")
    for column in columns:
        table.add_column(column, justify="left" if column in ("tool", "options") else "right")
    for row in rows:
        table.add_row(*(str(row[column]) for column in columns))
    Console(stderr=True).print(table)


if __name__ == "__main__":
    main()
