"""Speed of the masked-LM training step (encoder + tied MaskedLM head + AdamW) on random ids.

The one measurement behind `nlpkit bench train-step` and `benchmarks/pretrain_step.py`:
`warmup` untimed steps (tracing, XLA compilation), then the median of `steps` timed ones, each
`train_on_batch` call returning its loss as a Python float, so the step has finished when the
clock stops. Backend-agnostic Keras 3: no TensorFlow import under `KERAS_BACKEND=jax`.
"""

import math
import os
import statistics
import time

import keras

# The benchmark sizes of issue #7 / #19 (bert_small-like and bert_base) and a tiny one for tests:
# encoder arguments and the default batch.
CONFIGS = {
    "tiny": dict(hidden_size=64, num_layers=2, num_attention_heads=2, inner_dim=256, batch=8),
    "bert_small": dict(hidden_size=256, num_layers=4, num_attention_heads=4, inner_dim=1024, batch=32),
    "bert_base": dict(hidden_size=768, num_layers=12, num_attention_heads=12, inner_dim=3072, batch=8),
}
JIT_NAMES = {True: "on", False: "off", "auto": "auto"}


def random_features(batch, seq_length, predictions, vocab_size, seed=0):
    """Random MLM features: ids in [1000, vocab) (or [0, vocab) for a small vocab), `predictions`
    distinct sorted masked positions per row (never the first, [CLS]), their ids as targets."""
    import numpy as np

    rng = np.random.default_rng(seed)
    positions = np.sort(np.argsort(rng.random((batch, seq_length - 1)), axis=1)[:, :predictions] + 1, axis=1)
    ids = rng.integers(1000 if vocab_size > 2000 else 0, vocab_size, (batch, seq_length))
    features = {
        "input_word_ids": ids,
        "input_mask": np.ones((batch, seq_length)),
        "input_type_ids": np.zeros((batch, seq_length)),
        "masked_lm_positions": positions,
        "masked_lm_ids": np.take_along_axis(ids, positions, axis=1),
    }
    tensors = {k: keras.ops.convert_to_tensor(v.astype("int32")) for k, v in features.items()}
    tensors["masked_lm_weights"] = keras.ops.ones((batch, predictions), "float32")
    return tensors


def step_model(encoder, features, *, precision, jit, head=None):
    """The pretraining model of `nlpkit pretrain` (MaskedLMPretrainer + its AdamW), compiled."""
    from nlpkit.models.pretrainer import MaskedLMPretrainer, masked_lm_loss
    from nlpkit.training.optimization import create_optimizer

    model = MaskedLMPretrainer(encoder, head)
    model(features)  # build, so the optimizer sees every variable
    optimizer = create_optimizer(model.trainable_variables, learning_rate=1e-4, total_steps=10_000, warmup_steps=100,
                                 loss_scaling=precision == "mixed_float16")
    optimizer.build(model.trainable_variables)  # as the runtime does: slots made in the trace would re-trace
    model.compile(optimizer=optimizer, loss=masked_lm_loss(), jit_compile=jit)
    return model


def step_flops_per_token(model, seq_length, predictions):
    """FLOPs of one training step per input token: 3x the forward pass (the backward pass costs
    twice the forward), the forward being the encoder's FLOPs per token (`nlpkit build`'s summary)
    plus the MLM head, which runs on the `predictions` gathered positions of each sequence only."""
    from nlpkit.encoders.summary import flops_per_token

    head_kernels = sum(math.prod(w.shape) for w in model.head.weights if w.path.endswith("kernel"))
    tied_table = math.prod(model.encoder.word_embeddings.embeddings.shape)
    head = 2 * (head_kernels + tied_table) * predictions / seq_length
    return 3 * (flops_per_token(model.encoder, seq_length) + head)


def config_encoder(name, vocab_size=30522, seq_length=128):
    """A function building the BertEncoder of benchmark config `name` (see CONFIGS)."""
    from nlpkit.encoders.bert import BertEncoder

    sizes = {k: v for k, v in CONFIGS[name].items() if k != "batch"}
    return lambda: BertEncoder(vocab_size=vocab_size, max_sequence_length=max(512, seq_length), **sizes)


def build_step(make_encoder, *, batch, seq_length, predictions, precision, jit, head=None):
    """(compiled model, features): `make_encoder()` built under the `precision` policy, seeded.

    `jit`: True / False / "auto" (Keras' choice); `head(encoder)` replaces the MaskedLM head.
    """
    keras.config.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        encoder = make_encoder()
        features = random_features(batch, seq_length, predictions, encoder.vocab_size)
        model = step_model(encoder, features, precision=precision, jit=jit,
                           head=head(encoder) if head is not None else None)
    finally:
        keras.config.set_dtype_policy("float32")  # the layers keep their policy; the next build starts clean
    return model, features


def measure(make_encoder, *, batch, seq_length, predictions, precision, jit, steps, warmup, head=None, on_step=None):
    """One row: the training step of `build_step(...)` timed; `on_step()` is called after every
    step, warm-up included (a progress bar).

    Returns a dict: backend, device, precision, jit ("on"/"off"/"auto"), batch, seq, predictions,
    parameters, step_ms, tokens_per_s, flops_per_token, gflops_per_s, warmup_s, loss.
    """
    model, features = build_step(make_encoder, batch=batch, seq_length=seq_length, predictions=predictions,
                                 precision=precision, jit=jit, head=head)
    with _as_training_runs(model):
        step_s, warmup_s, loss = time_steps(model, features, steps=steps, warmup=warmup, on_step=on_step)
    flops = step_flops_per_token(model, seq_length, predictions)
    tokens_per_s = batch * seq_length / step_s
    return {
        "backend": keras.backend.backend(), "device": device_name(), "precision": precision,
        "jit": JIT_NAMES[jit], "batch": batch, "seq": seq_length, "predictions": predictions,
        "parameters": model.count_params(), "step_ms": round(step_s * 1000, 2), "tokens_per_s": round(tokens_per_s, 1),
        "flops_per_token": round(flops), "gflops_per_s": round(tokens_per_s * flops / 1e9, 1),
        "warmup_s": round(warmup_s, 1), "loss": round(loss, 4),
    }


def _as_training_runs(model):
    """The step as `nlpkit pretrain` runs it: under TensorFlow, with the runtime's elementwise fusion."""
    if keras.backend.backend() != "tensorflow":
        import contextlib

        return contextlib.nullcontext()
    from nlpkit.training.precision import elementwise_fusion

    return elementwise_fusion(model)


def time_steps(model, features, *, steps, warmup, on_step=None):
    """(median seconds of the `steps` timed steps, seconds of the `warmup` ones, last loss);
    `on_step()` runs after each step, outside the timed span."""
    targets, weights = features["masked_lm_ids"], features["masked_lm_weights"]
    times, loss = [], math.nan
    for _ in range(warmup + steps):
        start = time.perf_counter()
        # A Python float: the step has finished when the clock stops.
        loss = float(model.train_on_batch(features, targets, sample_weight=weights, return_dict=True)["loss"])
        times.append(time.perf_counter() - start)
        if on_step is not None:
            on_step()
    return statistics.median(times[warmup:]), sum(times[:warmup]), loss


def device_name():
    """The device the step runs on, in words (JAX's device kind; under TensorFlow GPU or CPU xN)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU x{len(gpus)}" if gpus else f"CPU x{os.cpu_count()}"
