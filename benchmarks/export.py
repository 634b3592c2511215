"""Serving speed of an exported SavedModel's raw-text signature (tokenize + pack + model).

    python -m benchmarks.export [--preset bert_base] [--seq-len 128] [--repeats 5]

Builds a classifier on the preset (random weights: speed does not depend on them), writes it as a
model directory with the bundled BERT vocab, exports it with `nlpkit.export`, loads the SavedModel
with TensorFlow alone and times `serving_default(text=...)` at batch 1 (latency) and batch 32
(throughput) on real review snippets. Prints a rich table and, last, one JSON line.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from nlpkit._tf import import_tensorflow  # noqa: E402

tf = import_tensorflow()
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def _export(preset, seq_len, folder):
    from nlpkit.data.bundled import bert_vocab_path
    from nlpkit.models.model_dir import save_model_dir
    from nlpkit.encoders.presets import build_encoder, encoder_config, load_preset
    from nlpkit.export.saved_model import export_saved_model
    from nlpkit.models.classifier import TextClassifier

    encoder = build_encoder(load_preset(preset))
    model = TextClassifier(encoder, num_classes=2)
    head = {"task": "classification", "type": "classification", "labels": ["rotten", "fresh"], "seq_length": seq_len}
    save_model_dir(model, encoder_config(encoder), bert_vocab_path(), folder / "model", head=head)
    export_saved_model(folder / "model", folder / "served")
    return tf.saved_model.load(str(folder / "served")).signatures["serving_default"]


def _timed(signature, texts, repeats):
    batch = tf.constant(texts)
    signature(text=batch)  # first call: graph warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        signature(text=batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bert_base")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from nlpkit.data.bundled import reviews

    # Long enough texts that most rows fill the sequence: several snippets joined.
    snippets = [text for text, _ in reviews()[:32 * 6]]
    texts = [" ".join(snippets[i * 6 : i * 6 + 6]) for i in range(32)]
    with tempfile.TemporaryDirectory() as tmp:
        signature = _export(args.preset, args.seq_len, Path(tmp))
        latency = _timed(signature, texts[:1], args.repeats)
        batch_seconds = _timed(signature, texts, max(args.repeats // 2, 2))
    result = {"benchmark": "export", "preset": args.preset, "seq_len": args.seq_len,
              "latency_ms_batch1": round(latency * 1000, 2),
              "throughput_texts_per_s_batch32": round(32 / batch_seconds, 2)}
    table = Table(title=f"SavedModel serving_default (raw text), {args.preset}, seq {args.seq_len}")
    for column in ("latency ms (batch 1)", "texts/s (batch 32)"):
        table.add_column(column, justify="right")
    table.add_row(f"{result['latency_ms_batch1']:.1f}", f"{result['throughput_texts_per_s_batch32']:.2f}")
    Console().print(table)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
