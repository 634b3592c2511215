"""Peak memory (and time) of an attention inside a full `BertEncoder`, not only the bare layer.

What the encoder adds around the attention - embeddings, the padding mask and how it reaches
each block, feed-forward layers - is where an O(n) attention can lose its O(n) memory (a dense
`[B, T, S]` mask built from the padding). Each measurement is one compiled train step
(`train_on_batch`) of a small BertEncoder whose last 1/8 of every sequence is padding, measured
like `nlpkit.bench.attention.measure`: resident memory sampled by `PeakMemory` during the step
after a warm-up step; each in its own process, whose resident high-water mark (build, compile,
warm-up and timed step) is recorded too.
"""

import concurrent.futures
import dataclasses
import gc
import multiprocessing
import time

import numpy as np

from nlpkit.bench.attention import Measurement, PeakMemory

DEFAULT_ENCODER_ATTENTIONS = ("linear", "causal-linear")
DEFAULT_ENCODER_LENGTHS = (65536,)


@dataclasses.dataclass
class EncoderMeasurement(Measurement):
    process_peak_bytes: int | None = None  # the measuring process's resident high-water mark


def _encoder_train_step(name, length, batch, hidden, heads, layers, seed):
    """`step()` running one train step of a BertEncoder with attention `name` on `[batch, length]` ids."""
    import keras

    from nlpkit.encoders.bert import BertEncoder

    encoder = BertEncoder(
        vocab_size=1000, hidden_size=hidden, num_layers=layers, num_attention_heads=heads, inner_dim=4 * hidden,
        max_sequence_length=length, output_dropout=0.0, attention_dropout=0.0, attention_type=name,
    )
    inputs = {key: keras.Input(shape=(length,), batch_size=batch, dtype="int32") for key in ("input_word_ids", "input_mask", "input_type_ids")}
    model = keras.Model(inputs, encoder(inputs)["sequence_output"])
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=keras.backend.backend() == "jax")
    ids = np.random.default_rng(seed).integers(1, 1000, size=(batch, length)).astype("int32")
    mask = np.ones_like(ids)
    mask[:, length - length // 8 :] = 0
    data = dict(input_word_ids=ids, input_mask=mask, input_type_ids=np.zeros_like(ids))
    target = np.zeros((batch, length, hidden), "float32")
    return lambda: model.train_on_batch(data, target)


def measure_in_encoder(name, length, *, batch=1, hidden=128, heads=4, layers=2, seed=0):
    """An EncoderMeasurement of one encoder train step, taken in a fresh process so that memory
    an earlier row left resident is neither reused nor counted."""
    settings = dict(batch=batch, hidden=hidden, heads=heads, layers=layers, seed=seed)
    context = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(_measure_here, name, length, **settings).result()
    except concurrent.futures.process.BrokenProcessPool:
        return EncoderMeasurement(f"{name} in BertEncoder", length, note="failed: the process died (out of memory?)")


def _measure_here(name, length, *, batch, hidden, heads, layers, seed):
    """Seconds and rise of resident memory of one train step after a warm-up step, as
    `nlpkit.bench.attention.measure` takes them, and the process's resident high-water mark."""
    import keras

    result = EncoderMeasurement(f"{name} in BertEncoder", length)
    try:
        step = _encoder_train_step(name, length, batch, hidden, heads, layers, seed)
        step()  # builds, traces and compiles
        with PeakMemory() as memory:
            start = time.perf_counter()
            step()
            result.seconds = time.perf_counter() - start
        result.peak_bytes = memory.peak
    except Exception as err:  # noqa: BLE001 - out of memory or a kernel error is this row's result
        result.seconds, result.note = None, f"failed: {type(err).__name__}: {str(err).strip()[:160]}"
    finally:
        keras.backend.clear_session()
        gc.collect()
    result.process_peak_bytes = _resident_high_water_mark()
    return result


def _resident_high_water_mark():
    """VmHWM of /proc/self/status: the most resident memory this process has had, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None
