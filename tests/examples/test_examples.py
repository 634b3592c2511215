"""Every example in examples/ run end to end at its reduced size (SMALL=1), as a user runs it: bash run.sh OUT.

The expensive steps are shared: one conversion of the real MiniLM weights and one fine-tuned
classifier (the finetune_converted_bert example) feed the SNGP and export examples. What the
commands compute is tested in tests/training and tests/export; here we check that each script
runs, writes what its README promises, and that its outputs agree with each other.
"""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REVIEW_LABELS = {"fresh", "rotten"}
METRICS = ("accuracy", "macro_f1", "nll", "ece")


def run_example(name, out, **env):
    """Output (stdout + stderr) of `bash examples/NAME/run.sh OUT` at the reduced size; fails with its tail."""
    environment = {**os.environ, "SMALL": "1", "PYTHON": sys.executable, "COLUMNS": "200", **env}
    # A session of its own, so a timeout stops the script's nlpkit processes too, not only bash.
    process = subprocess.Popen(["bash", str(EXAMPLES / name / "run.sh"), str(out)], env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    assert process.returncode == 0, f"{name} failed:\n{output[-4000:]}"
    assert f"{name} done in" in output
    return output


def read_json_lines(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def check_metrics(path, examples, extra=()):
    metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    for name in (*METRICS, *extra):
        assert name in metrics, f"{path} lacks {name}"
    for name in ("accuracy", "macro_f1", "ece", *extra):
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics[name])
    assert metrics["nll"] > 0.0
    assert sum(map(sum, metrics["confusion_matrix"])) == examples  # every test row counted once
    return metrics


def check_predictions(path, count, labels=REVIEW_LABELS):
    rows = read_json_lines(path)
    assert len(rows) == count
    for row in rows:
        assert row["label"] in labels
        assert set(row["probabilities"]) == labels
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    return rows


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune_converted_bert")
    return out, run_example("finetune_converted_bert", out)


def test_finetune_converted_bert(finetuned):
    out, stdout = finetuned
    assert (out / "minilm" / "config.json").is_file() and "converted" in stdout
    check_metrics(out / "metrics.json", examples=32)  # SMALL: 32 test reviews
    assert (out / "metrics.reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_predictions(out / "predictions.jsonl", count=3)


def test_sngp_ood_reuses_the_conversion(finetuned, tmp_path):
    converted = finetuned[0] / "minilm"
    stdout = run_example("sngp_ood", tmp_path, CONVERTED=str(converted))
    assert f"reusing the converted model directory {converted}" in stdout and not (tmp_path / "minilm").exists()
    check_metrics(tmp_path / "metrics.json", examples=32, extra=("ood_auroc",))
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in check_predictions(tmp_path / "predictions.jsonl", count=3):
        assert row["uncertainty"] >= 0.0


def test_export_and_serve_agrees_with_predict(finetuned, tmp_path):
    run_example("export_and_serve", tmp_path, MODEL=str(finetuned[0] / "classifier"))
    served = check_predictions(tmp_path / "served.jsonl", count=3)
    predicted = check_predictions(tmp_path / "predictions.jsonl", count=3)
    for plain, cli in zip(served, predicted):
        assert plain["label"] == cli["label"]
        for label, value in plain["probabilities"].items():
            assert value == pytest.approx(cli["probabilities"][label], abs=1e-4)  # serve.py rounds to 4 places


def test_pretrain_from_raw_text(tmp_path):
    run_example("pretrain_from_raw_text", tmp_path)
    vocab = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"} <= set(vocab)
    assert (tmp_path / "shards" / "manifest.json").is_file()
    config = json.loads((tmp_path / "pretrained" / "config.json").read_text(encoding="utf-8"))
    assert config["encoder"]["vocab_size"] == len(vocab)  # the encoder was built for the trained vocab


def test_long_document_linear_attention(tmp_path):
    run_example("long_document_linear_attention", tmp_path)
    encoder = json.loads((tmp_path / "classifier" / "config.json").read_text(encoding="utf-8"))["encoder"]
    assert (encoder["attention_type"], encoder["max_sequence_length"]) == ("linear", 512)
    check_metrics(tmp_path / "metrics.json", examples=16)  # SMALL: 8 test documents per class
    with open(tmp_path / "data" / "train.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["label"] for row in rows} == {"news", "reviews"}
    assert min(len(row["text"].split()) for row in rows) >= 600  # every document overflows 512 tokens


def test_two_worker_training(tmp_path):
    stdout = run_example("two_worker_training", tmp_path)
    assert "MultiWorkerMirroredStrategy: 2 replica(s)" in stdout
    assert (tmp_path / "run" / "config.json").is_file()
