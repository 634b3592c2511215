"""The training examples (pretraining, long documents, two workers), at their reduced size (SMALL=1)."""

import csv
import json

from tests.examples.runner import check_metrics, run_example


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
    assert "2 replica(s) x 4 = global batch 8" in stdout  # SMALL: --batch-size 8 split over the two workers
    assert (tmp_path / "run" / "config.json").is_file()  # the chief wrote the model directory
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert "0 → 4" in (tmp_path / "worker1.log").read_text(encoding="utf-8")  # and the other worker ran all 4 steps
