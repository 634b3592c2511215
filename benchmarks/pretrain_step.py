"""Tokens per second of the masked-LM training step (encoder + tied MaskedLM head + AdamW) on random ids.

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
import statistics
import sys
import time
from pathlib import Path

# The repository root replaces this script's folder on the path, so that nlpkit imports and the
# folder's own modules (benchmarks/tokenize.py) cannot shadow the standard library.
sys.path[0] = str(Path(__file__).resolve().parents[1])

CONFIGS = {
    # name: encoder sizes and the default batch of the benchmark
    "tiny": dict(hidden_size=64, num_layers=2, num_attention_heads=2, inner_dim=256, batch=8),
    "bert_small": dict(hidden_size=256, num_layers=4, num_attention_heads=4, inner_dim=1024, batch=32),
    "bert_base": dict(hidden_size=768, num_layers=12, num_attention_heads=12, inner_dim=3072, batch=8),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), nargs="+", default=["bert_small"])
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


def build_model(keras, sizes, args):
    from nlpkit.encoders.bert import BertEncoder
    from nlpkit.models.pretrainer import MaskedLMPretrainer, masked_lm_head, masked_lm_loss
    from nlpkit.training.optimization import create_optimizer

    encoder = BertEncoder(
        vocab_size=args.vocab,
        max_sequence_length=max(512, args.seq),
        **{k: v for k, v in sizes.items() if k != "batch"},
    )
    head_name = "MaskedLM"
    try:
        head = None if args.stand_in_head else masked_lm_head(encoder)
    except ImportError:
        head = None
    if head is None:
        head_name = "stand-in"
        head = _stand_in_head_class(keras)(encoder.word_embeddings, "gelu", dtype=encoder.dtype_policy)
    model = MaskedLMPretrainer(encoder, head)
    batch = args.batch or sizes["batch"]
    features = random_features(keras, batch, args)
    model(features)  # build, so the optimizer sees every variable
    optimizer = create_optimizer(
        model.trainable_variables,
        learning_rate=1e-4,
        total_steps=10_000,
        warmup_steps=100,
        loss_scaling=args.precision == "mixed_float16",
    )
    jit = {"auto": "auto", "on": True, "off": False}[args.jit]
    model.compile(optimizer=optimizer, loss=masked_lm_loss(), jit_compile=jit)
    return model, features, batch, head_name


def random_features(keras, batch, args):
    import numpy as np

    rng = np.random.default_rng(0)
    positions = np.sort(np.argsort(rng.random((batch, args.seq - 1)), axis=1)[:, : args.predictions] + 1, axis=1)
    ids = rng.integers(1000, args.vocab, (batch, args.seq))
    features = {
        "input_word_ids": ids,
        "input_mask": np.ones((batch, args.seq)),
        "input_type_ids": np.zeros((batch, args.seq)),
        "masked_lm_positions": positions,
        "masked_lm_ids": np.take_along_axis(ids, positions, axis=1),
    }
    tensors = {k: keras.ops.convert_to_tensor(v.astype("int32")) for k, v in features.items()}
    tensors["masked_lm_weights"] = keras.ops.ones((batch, args.predictions), "float32")
    return tensors


def measure(keras, name, args):
    keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(0)
    model, features, batch, head_name = build_model(keras, CONFIGS[name], args)
    targets, weights = features["masked_lm_ids"], features["masked_lm_weights"]

    def step():
        return model.train_on_batch(features, targets, sample_weight=weights, return_dict=True)["loss"]

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()  # returns a Python float: the step has finished
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {
        "config": name,
        "backend": keras.backend.backend(),
        "device": _device(keras),
        "precision": args.precision,
        "jit": args.jit,
        "head": head_name,
        "batch": batch,
        "seq": args.seq,
        "predictions": args.predictions,
        "parameters": model.count_params(),
        "step_ms": round(step_s * 1000, 2),
        "tokens_per_s": round(batch * args.seq / step_s, 1),
        "warmup_s": round(compile_s, 1),
        "loss": round(float(loss), 4),
    }


def _device(keras):
    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    import tensorflow as tf

    return "GPU" if tf.config.list_physical_devices("GPU") else f"CPU x{os.cpu_count()}"


def main():
    args = parse_args()
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        from nlpkit._tf import import_tensorflow

        import_tensorflow()  # before Keras, so its import noise is filtered
    import keras
    from rich.console import Console
    from rich.table import Table

    results = [measure(keras, name, args) for name in args.config]
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
