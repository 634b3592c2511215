"""Forward+backward time (ms per step) of one TransformerEncoderBlock, per dtype policy.

Each step is a compiled Keras train step (`train_on_batch`: forward, loss, gradients, SGD update)
on random inputs with a full attention mask, so it runs the same under TensorFlow (tf.function,
XLA when `--jit on`) and JAX (jax.jit). Prints a rich table and, last, one JSON line.

    python -m benchmarks.layers                          # hidden 768, 12 heads, seq 128, batch 8
    KERAS_BACKEND=jax python -m benchmarks.layers --steps 5
    python -m benchmarks.layers --policies float32 --hidden 256 --heads 4 --inner 1024
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--inner", type=int, default=3072)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--norm-first", action="store_true", help="pre-norm block")
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto", help="XLA compilation of the step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    return parser.parse_args()


def build_model(keras, args, policy):
    from nlpkit.layers.blocks.encoder import TransformerEncoderBlock

    x = keras.Input(shape=(args.seq, args.hidden))
    mask = keras.Input(shape=(args.seq, args.seq))
    block = TransformerEncoderBlock(
        args.heads, args.inner, "gelu", norm_first=args.norm_first, output_dropout=0.1, dtype=policy
    )
    y = keras.ops.cast(block(x, attention_mask=mask), "float32")
    model = keras.Model([x, mask], y)
    jit = {"auto": "auto", "on": True, "off": False}[args.jit]
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=jit)
    return model


def time_policy(keras, args, policy):
    """Median and min ms per train step for one dtype policy."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.seq, args.hidden)).astype("float32")
    mask = np.ones((args.batch, args.seq, args.seq), "float32")
    target = rng.normal(size=x.shape).astype("float32")
    model = build_model(keras, args, policy)
    for _ in range(args.warmup):
        model.train_on_batch([x, mask], target)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model.train_on_batch([x, mask], target)
        float(np.asarray(loss))  # wait for the result
        times.append((time.perf_counter() - start) * 1000.0)
    median, fastest = statistics.median(times), min(times)
    return {"policy": policy, "median_ms": median, "min_ms": fastest, "jit_compile": model.jit_compile}


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from rich.console import Console
    from rich.table import Table

    results = [time_policy(keras, args, policy) for policy in args.policies]
    shape = f"hidden {args.hidden}, {args.heads} heads, inner {args.inner}, seq {args.seq}, batch {args.batch}"
    table = Table(title=f"TransformerEncoderBlock train step ({keras.backend.backend()}; {shape})")
    for column in ("policy", "median ms/step", "min ms/step", "jit"):
        table.add_column(column)
    for r in results:
        table.add_row(r["policy"], f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}", str(r["jit_compile"]))
    Console().print(table)
    print(
        json.dumps(
            {
                "benchmark": "layers.transformer_encoder_block",
                "backend": keras.backend.backend(),
                "hidden": args.hidden,
                "heads": args.heads,
                "inner": args.inner,
                "seq": args.seq,
                "batch": args.batch,
                "norm_first": args.norm_first,
                "steps": args.steps,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
