"""Where the time of one masked-LM training step goes (TensorFlow profiler trace, offline, on CPU).

The step is the one `benchmarks/pretrain_step.py` times (`nlpkit.bench.train_step`). After the
warm-up, `--steps` steps run under `tf.profiler`; its trace (the XSpace protobuf TensorFlow writes,
read here without TensorBoard) holds one event per executed TensorFlow op, named
"scope/op_name:OpType". Each op is put in one category by its type and name scope:

    optimizer update     ops of the AdamW update (scope of the optimizer)
    embedding gradient   gather gradients: UnsortedSegmentSum / scatter / Unique ops
    matmul               MatMul / BatchMatMul / Einsum (attention's two products included)
    attention / softmax  Softmax and its gradient, and the other ops in attention scopes (masking,
                         scaling, head transposes, dropout on probabilities)
    layer norm           ops in layer-normalisation scopes, forward and backward
    loss                 the masked-LM cross-entropy and its gradient
    other ops            the rest (GELU, dropout, residual adds, transposes, casts)
    host overhead        step wall time during which no op ran (Python, Keras' train_on_batch,
                         tf.function dispatch, executor scheduling)

Op shares are of the summed op time (ops of the inter-op threads overlap, so the sum can exceed
the wall time); host overhead is a share of the wall time. Run without XLA (the default here):
under `--jit on` the step is a few fused XLA clusters whose ops cannot be told apart.

    python -m benchmarks.profile_step --config bert_small --precision mixed_bfloat16
    python -m benchmarks.profile_step --config bert_base --batch 8 --steps 3

Prints a rich table and, last, one JSON line.
"""

import argparse
import glob
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

# The repository root replaces this script's folder on the path (see benchmarks/pretrain_step.py).
sys.path[0] = str(Path(__file__).resolve().parents[1])

CATEGORIES = ("matmul", "attention / softmax", "layer norm", "embedding gradient", "optimizer update", "loss",
              "other ops")
TOP_OPS = 12  # the heaviest single ops listed under the table
# A TensorFlow op's event in the trace: "scope/name:OpType".
OP_EVENT = re.compile(r"^(?P<scope>[^\s:]+):(?P<type>_?[A-Z][A-Za-z0-9_]*)$")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["tiny", "bert_small", "bert_base"], default="bert_small")
    parser.add_argument("--batch", type=int, help="override the config's batch size")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32")
    parser.add_argument("--jit", choices=["on", "off"], default="off", help="XLA (ops then fused: see above)")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2, choices=range(1, 100), metavar="N",
                        help="steps before the profile (tracing), at least 1")
    parser.add_argument("--trace-dir", help="keep the profiler trace here (default: a temporary folder)")
    return parser.parse_args()


def category(scope, op_type):
    """The category of one op (see the module docstring), from its name scope and type."""
    lowered = scope.lower()
    # The optimizer's name scope: "adam_w", or "adam_w_3" when several were made in one process.
    if re.match(r"^(adam_?w|adam|optimizer)(_\d+)?/", lowered) or op_type.startswith("ResourceApply"):
        return "optimizer update"
    if op_type in ("UnsortedSegmentSum", "Unique", "ScatterNd", "TensorScatterAdd") or "Scatter" in op_type:
        return "embedding gradient"
    if re.search(r"MatMul|Einsum", op_type):
        return "matmul"
    if "Softmax" in op_type and "CrossEntropy" not in op_type or "attention" in lowered:
        return "attention / softmax"
    if "norm" in lowered:
        return "layer norm"
    if "compile_loss" in lowered or "CrossEntropy" in op_type:
        return "loss"
    return "other ops"


def read_trace(trace_dir):
    """[(scope, op type, start ps, duration ps)] of every op event in the newest trace of `trace_dir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not files:
        raise SystemExit(f"no profiler trace was written under {trace_dir}")
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as handle:
        space.ParseFromString(handle.read())
    ops = []
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                match = OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match:
                    start = line.timestamp_ns * 1000 + event.offset_ps
                    ops.append((match["scope"], match["type"], start, event.duration_ps))
    return ops


def busy_ps(ops):
    """Picoseconds during which at least one op ran (the union of their intervals)."""
    total, end = 0, None
    for _, _, start, duration in sorted(ops, key=lambda op: op[2]):
        stop = start + duration
        if end is None or start > end:
            total += duration
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def breakdown(ops, wall_s, steps):
    """{category: ms per step, ...}, shares, and the host overhead, as one dict."""
    per_category = dict.fromkeys(CATEGORIES, 0)
    for scope, op_type, _, duration in ops:
        per_category[category(scope, op_type)] += duration
    op_total = sum(per_category.values()) or 1
    heaviest = {}
    for scope, op_type, _, duration in ops:
        heaviest[f"{scope}:{op_type}"] = heaviest.get(f"{scope}:{op_type}", 0) + duration
    host_ps = max(wall_s * 1e12 - busy_ps(ops), 0)
    return {
        "step_ms": round(wall_s * 1000 / steps, 2),
        "op_ms_per_step": {name: round(ps / 1e9 / steps, 2) for name, ps in per_category.items()},
        "op_share": {name: round(ps / op_total, 4) for name, ps in per_category.items()},
        "host_overhead_ms_per_step": round(host_ps / 1e9 / steps, 2),
        "host_overhead_share_of_wall": round(host_ps / (wall_s * 1e12), 4),
        "heaviest_ops_ms_per_step": {name: round(ps / 1e9 / steps, 2)
                                     for name, ps in sorted(heaviest.items(), key=lambda item: -item[1])[:TOP_OPS]},
    }


def profile(args, trace_dir):
    from nlpkit._tf import import_tensorflow

    tf = import_tensorflow()
    from nlpkit.bench import train_step

    batch = args.batch or train_step.CONFIGS[args.config]["batch"]
    model, features = train_step.build_step(
        train_step.config_encoder(args.config, args.vocab, args.seq), batch=batch, seq_length=args.seq,
        predictions=args.predictions, precision=args.precision, jit=args.jit == "on")
    train_step.time_steps(model, features, steps=args.warmup, warmup=0)  # tracing (and compiling) first
    tf.profiler.experimental.start(trace_dir)
    start = time.perf_counter()
    train_step.time_steps(model, features, steps=args.steps, warmup=0)
    wall_s = time.perf_counter() - start
    tf.profiler.experimental.stop()
    result = breakdown(read_trace(trace_dir), wall_s, args.steps)
    return {"config": args.config, "precision": args.precision, "jit": args.jit, "batch": batch, "seq": args.seq,
            "device": train_step.device_name(), **result}


def print_table(result):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"where a {result['config']} MLM step goes ({result['precision']}, XLA {result['jit']}, "
                        f"{result['device']}, batch {result['batch']}, seq {result['seq']}): {result['step_ms']} ms")
    for column, justify in (("category", "left"), ("ms / step", "right"), ("share", "right")):
        table.add_column(column, justify=justify)
    for name in CATEGORIES:
        table.add_row(name, f"{result['op_ms_per_step'][name]:,.2f}", f"{result['op_share'][name]:.1%} of op time")
    table.add_section()
    table.add_row("host overhead", f"{result['host_overhead_ms_per_step']:,.2f}",
                  f"{result['host_overhead_share_of_wall']:.1%} of wall time")
    heaviest = Table(title="heaviest ops")
    for column, justify in (("op", "left"), ("category", "left"), ("ms / step", "right")):
        heaviest.add_column(column, justify=justify, overflow="fold")
    for name, ms in result["heaviest_ops_ms_per_step"].items():
        scope, _, op_type = name.rpartition(":")
        heaviest.add_row(name, category(scope, op_type), f"{ms:,.2f}")
    console = Console(stderr=True)
    console.print(table)
    console.print(heaviest)


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.trace_dir:
        result = profile(args, args.trace_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="profile_step-") as trace_dir:
            result = profile(args, trace_dir)
    print_table(result)
    print(json.dumps({"benchmark": "profile_step", "results": [result]}))


if __name__ == "__main__":
    main()
