"""Encoder inference speed on this machine: latency at batch 1, throughput at batch 32.

    python -m benchmarks.encoder [--preset bert_base] [--seq-len 128] [--repeats 5]

Prints a rich table and, last, one JSON line with the figures. Weights are random (speed does
not depend on their values); every call goes through the model's compiled predict function.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from nlpkit.encoders.presets import build_encoder, load_preset  # noqa: E402


def _inputs(batch, length, vocab_size, rng):
    ids = rng.integers(1000, vocab_size, size=(batch, length)).astype("int32")
    return dict(input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=np.zeros_like(ids))


def _timed(model, inputs, repeats):
    model.predict_on_batch(inputs)  # compile
    model.predict_on_batch(inputs)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(preset, policy, seq_len, repeats, rng):
    keras.config.set_dtype_policy(policy)
    try:
        model = build_encoder(load_preset(preset), dtype=policy)
        config = model.get_config()
        latency = _timed(model, _inputs(1, seq_len, config["vocab_size"], rng), repeats)
        batch_seconds = _timed(model, _inputs(32, seq_len, config["vocab_size"], rng), max(repeats // 2, 2))
    finally:
        keras.config.set_dtype_policy("float32")
    return {
        "preset": preset,
        "dtype": policy,
        "seq_len": seq_len,
        "latency_ms_batch1": round(latency * 1000, 2),
        "throughput_seq_per_s_batch32": round(32 / batch_seconds, 2),
        "throughput_tokens_per_s_batch32": round(32 * seq_len / batch_seconds, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="bert_base")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "mixed_bfloat16"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = [measure(args.preset, policy, args.seq_len, args.repeats, rng) for policy in args.dtypes]
    table = Table(title=f"{args.preset} inference, T={args.seq_len}, backend {keras.backend.backend()}, {os.cpu_count()} CPUs")
    for column in ("dtype", "latency (ms, batch 1)", "sequences/s (batch 32)", "tokens/s (batch 32)"):
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(
            row["dtype"],
            f"{row['latency_ms_batch1']:.1f}",
            f"{row['throughput_seq_per_s_batch32']:.1f}",
            f"{row['throughput_tokens_per_s_batch32']:,.0f}",
        )
    Console().print(table)
    print(json.dumps({"benchmark": "encoder", "backend": keras.backend.backend(), "results": results}))


if __name__ == "__main__":
    main()
