"""Tokens per second of the masked-LM training step (encoder + tied MaskedLM head + AdamW) on random ids.

The measurement itself is `nlpkit.bench.train_step` (also `nlpkit bench train-step`).
Runs under TensorFlow or JAX (`--backend jax` or KERAS_BACKEND=jax; no TensorFlow import then),
on CPU or GPU. Prints a rich table and, last, one JSON line with every measurement.

    python benchmarks/pretrain_step.py --config bert_small
    python benchmarks/pretrain_step.py --config bert_base --precision mixed_bfloat16
    KERAS_BACKEND=jax python benchmarks/pretrain_step.py --config bert_base --batch 256 --precision mixed_bfloat16

Targets (issue 7): bert_small >= 7,500 tokens/s and bert_base (batch 8) >= 500 tokens/s on the
2-core dev CPU; bert_base batch 256 bf16 under JAX on one H100 >= 560,000 tokens/s.
"""

import argparse
import json
import os
import sys
from pathlib import Path

# The repository root replaces this script's folder on the path, so that nlpkit imports and the
# folder's own modules (benchmarks/tokenize.py) cannot shadow the standard library.
sys.path[0] = str(Path(__file__).resolve().parents[1])
# The names of nlpkit.bench.train_step.CONFIGS, spelled out: importing it would import Keras
# before --backend has chosen the backend.
CONFIG_NAMES = ["tiny", "bert_small", "bert_base"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=CONFIG_NAMES, nargs="+", default=["bert_small"])
    parser.add_argument("--batch", type=int, help="override the config's batch size")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20, help="masked positions per sequence")
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32")
    parser.add_argument("--backend", choices=["tensorflow", "jax"], help="default: $KERAS_BACKEND or tensorflow")
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="on", help="XLA compilation of the step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    parser.add_argument("--stand-in-head", action="store_true", help="use the benchmark's own tied head")
    return parser.parse_args()


def _stand_in_head_class(keras):
    """A tied MLM head for when `nlpkit.layers.heads.MaskedLM` is not available: gather, dense,
    layer norm, logits against the word-embedding table (same work as BERT's head)."""

    class StandInMaskedLM(keras.layers.Layer):
        def __init__(self, embedding_layer, activation, **kwargs):
            super().__init__(**kwargs)
            self.embedding_layer = embedding_layer
            width = embedding_layer.embedding_width
            self.transform = keras.layers.Dense(width, activation=activation, dtype=self.dtype_policy)
            self.norm = keras.layers.LayerNormalization(epsilon=1e-12, dtype=self.dtype_policy)

        def build(self, sequence_shape, positions_shape=None):
            self.transform.build(sequence_shape)
            self.norm.build(sequence_shape[:-1] + (self.embedding_layer.embedding_width,))
            self.output_bias = self.add_weight(shape=(self.embedding_layer.vocab_size,), initializer="zeros")

        def call(self, sequence, positions):
            ops = keras.ops
            gathered = ops.take_along_axis(sequence, ops.expand_dims(ops.cast(positions, "int32"), -1), axis=1)
            hidden = self.norm(self.transform(gathered))
            table = ops.cast(self.embedding_layer.embeddings, hidden.dtype)
            return ops.matmul(hidden, ops.transpose(table)) + ops.cast(self.output_bias, hidden.dtype)

    return StandInMaskedLM


def measure(name, args):
    from nlpkit.bench.train_step import CONFIGS, config_encoder, measure

    jit = {"auto": "auto", "on": True, "off": False}[args.jit]
    head = _stand_in_head if args.stand_in_head else None
    row = measure(config_encoder(name, args.vocab, args.seq), batch=args.batch or CONFIGS[name]["batch"],
                  seq_length=args.seq, predictions=args.predictions, precision=args.precision, jit=jit,
                  steps=args.steps, warmup=args.warmup, head=head)
    return {"config": name, **row, "head": "stand-in" if head else "MaskedLM"}


def _stand_in_head(encoder):
    import keras

    return _stand_in_head_class(keras)(encoder.word_embeddings, "gelu", dtype=encoder.dtype_policy)


def main():
    args = parse_args()
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        from nlpkit._tf import import_tensorflow

        import_tensorflow()  # before Keras, so its import noise is filtered
    from rich.console import Console
    from rich.table import Table

    results = [measure(name, args) for name in args.config]
    table = Table(title="masked-LM training step")
    columns = ["config", "backend", "device", "precision", "jit", "head", "batch", "seq", "step_ms", "tokens_per_s"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("batch", "seq", "step_ms", "tokens_per_s") else "left")
    for row in results:
        table.add_row(*(f"{row[c]:,}" if c == "tokens_per_s" else str(row[c]) for c in columns))
    Console(stderr=True).print(table)
    print(json.dumps({"benchmark": "pretrain_step", "results": results}))


if __name__ == "__main__":
    main()
