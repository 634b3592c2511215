"""Attention scaling: forward+backward seconds and peak memory against sequence length.

The same measurement as `nlpkit bench attention` (nlpkit/bench/attention.py). Prints a rich
table, saves a PNG plot and, last, one JSON line.

    python benchmarks/attention.py                                    # 512 ... 65,536 tokens
    python benchmarks/attention.py --lengths 512 1024 --attentions multi_head linear
    KERAS_BACKEND=jax python benchmarks/attention.py --memory-budget 8
    python benchmarks/attention.py --attentions --encoder-hidden 128   # only the BertEncoder rows

After the bare layers, linear and causal-linear are measured inside a full BertEncoder at 65,536
tokens (`--encoder-*` options; nlpkit/bench/encoder_attention.py).
"""

import argparse
import json
import sys
from pathlib import Path

# Scripts here are named after what they measure (tokenize.py ...): keep this folder off the
# import path so such names cannot shadow standard-library modules.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlpkit.bench import attention as bench  # noqa: E402
from nlpkit.bench import encoder_attention  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attentions", nargs="*", default=list(bench.DEFAULT_ATTENTIONS), help="none: skip the bare layers")
    parser.add_argument("--lengths", nargs="+", type=int, default=list(bench.DEFAULT_LENGTHS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--time-budget", type=float, default=60.0, help="seconds per step before a row stops")
    parser.add_argument("--memory-budget", type=float, default=None, help="GiB (default: min(24, 80%% of free memory))")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--plot", default="attention_bench.png")
    parser.add_argument("--encoder-attentions", nargs="*", default=list(encoder_attention.DEFAULT_ENCODER_ATTENTIONS))
    parser.add_argument("--encoder-lengths", nargs="+", type=int, default=list(encoder_attention.DEFAULT_ENCODER_LENGTHS))
    parser.add_argument("--encoder-hidden", type=int, default=128)
    parser.add_argument("--encoder-layers", type=int, default=2)
    return parser.parse_args()


def main():
    args = parse_args()
    import keras
    from rich.console import Console

    def report(result):
        status = f"{result.seconds:.3g} s, {result.peak_bytes / bench.GIB:.2f} GiB" if result.ok else result.note
        print(f"{result.attention:>28} @ {result.length:>6}: {status}", file=sys.stderr, flush=True)

    budget = None if args.memory_budget is None else args.memory_budget * bench.GIB
    results = {}
    if args.attentions:
        results = bench.run(
            args.attentions, args.lengths, batch=args.batch, hidden=args.hidden, heads=args.heads,
            time_budget=args.time_budget, memory_budget=budget, repeats=args.repeats, on_result=report,
        )
        title = f"attention forward+backward ({keras.backend.backend()}, batch {args.batch}, hidden {args.hidden}, {args.heads} heads)"
        Console().print(bench.table(results, title))
        bench.plot(results, args.plot, title)
    in_encoder = _encoder_rows(args, report)
    if in_encoder:
        title = (f"in a BertEncoder ({keras.backend.backend()}, batch {args.batch}, hidden {args.encoder_hidden}, "
                 f"{args.heads} heads, {args.encoder_layers} layers)")
        Console().print(bench.table(in_encoder, title))
    summary = bench.to_json(results, benchmark="attention.scaling", backend=keras.backend.backend(), batch=args.batch, hidden=args.hidden, heads=args.heads)
    summary["in_bert_encoder"] = {
        "hidden": args.encoder_hidden, "layers": args.encoder_layers, "heads": args.heads, "batch": args.batch,
        "results": {name: [vars(m) for m in row] for name, row in in_encoder.items()},
    }
    print(json.dumps(summary))


def _encoder_rows(args, report):
    """{name: [Measurement]} of each --encoder-attentions inside a BertEncoder at each --encoder-lengths."""
    rows = {}
    for name in args.encoder_attentions:
        rows[name] = []
        for length in args.encoder_lengths:
            result = encoder_attention.measure_in_encoder(
                name, length, batch=args.batch, hidden=args.encoder_hidden, heads=args.heads, layers=args.encoder_layers
            )
            report(result)
            if result.process_peak_bytes is not None:
                print(f"{'':>28}   process peak resident {result.process_peak_bytes / bench.GIB:.2f} GiB", file=sys.stderr)
            rows[name].append(result)
    return rows


if __name__ == "__main__":
    main()
