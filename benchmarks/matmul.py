"""The machine's matrix-product peak (GFLOPS): float32 in NumPy and TensorFlow, bf16 in TensorFlow.

The ceiling for every training-step benchmark: a step cannot run faster than its FLOPs divided by
this, at its precision (a mixed_bfloat16 step's products run in bf16; on a CPU with AMX or
AVX512_BF16 units TensorFlow's oneDNN kernel computes them natively, elsewhere it converts them).
The bf16 product returns bf16, as the layers' products do. Prints a rich table and a final JSON line.

    python -m benchmarks.matmul            # 2048 x 2048
    python -m benchmarks.matmul --size 4096
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def gflops(product, size, repeats):
    """GFLOPS of `product()` (an n x n x n matrix product), best of `repeats` after one warm-up call."""
    product()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    a, b = (rng.random((args.size, args.size), dtype=np.float32) for _ in range(2))
    results = {"numpy": gflops(lambda: a @ b, args.size, args.repeats)}

    from nlpkit._tf import import_tensorflow

    tf = import_tensorflow()
    x, y = tf.constant(a), tf.constant(b)
    results["tensorflow"] = gflops(lambda: tf.matmul(x, y).numpy(), args.size, args.repeats)
    x16, y16 = tf.cast(x, tf.bfloat16), tf.cast(y, tf.bfloat16)
    results["tensorflow_bf16"] = gflops(lambda: tf.matmul(x16, y16).numpy(), args.size, args.repeats)

    table = Table(title=f"{args.size}² matrix product, {os.cpu_count()} CPUs")
    table.add_column("library (precision)")
    table.add_column("GFLOPS", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:.1f}")
    Console().print(table)
    print(json.dumps({"benchmark": "matmul", "size": args.size, **{k: round(v, 1) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
