"""`nlpkit finetune` / `evaluate` / `predict` through the CLI, checked against independent computations."""

import csv
import json

import numpy as np
import pytest

from tests.classifier_fixtures import finetune_args, write_easy_task
from tests.cli import run_cli, run_cli_ok


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_easy_task(tmp_path_factory.mktemp("task"))


@pytest.fixture(scope="module")
def trained(task, tmp_path_factory):
    """One classifier trained once for the module (the CLI path; capsys is function-scoped)."""
    output = tmp_path_factory.mktemp("models") / "cls"
    # 5 epochs: after 3 the validation accuracy of this tiny model is 0.85-0.95 depending on the seed.
    run_cli_ok(*finetune_args(task, output, epochs=5))
    return output


def _labels(path):
    with open(path, encoding="utf-8") as handle:
        return [row["label"] for row in csv.DictReader(handle)]


def test_tiny_model_learns_easy_task_and_evaluate_matches_predictions(task, trained, tmp_path, capsys):
    metrics_path = tmp_path / "metrics.json"
    code, out, err = run_cli(capsys, "evaluate", "--model", trained, "--data", task / "test.csv",
                             "--json", metrics_path, "--ood", task / "ood.txt")
    assert code == 0, err
    metrics = json.loads(metrics_path.read_text())
    assert {"accuracy", "macro_f1", "nll", "ece", "ood_auroc"} <= set(metrics)
    assert metrics["ood_auroc"] == metrics["ood_auroc_max_probability"]  # one score for a plain head
    assert metrics["accuracy"] >= 0.9
    assert (tmp_path / "metrics.reliability.png").stat().st_size > 1000

    # Independent check: accuracy and NLL recomputed from `nlpkit predict` JSON lines.
    texts = []
    with open(task / "test.csv", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    input_file = tmp_path / "texts.txt"
    input_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "predict", "--model", trained, "--input", input_file)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    truth = _labels(task / "test.csv")
    assert len(rows) == len(truth)
    predicted = [row["label"] for row in rows]
    assert metrics["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, truth)]), abs=1e-9)
    nll = -np.mean([np.log(max(row["probabilities"][t], 1e-12)) for row, t in zip(rows, truth)])
    assert metrics["nll"] == pytest.approx(nll, abs=1e-4)
    assert all(abs(sum(row["probabilities"].values()) - 1) < 1e-4 for row in rows)

    # ECE of the calibrated outputs (what predict prints) and of the raw ones, T undone in NumPy.
    temperature = json.loads((trained / "config.json").read_text())["keras_model"]["config"]["temperature"]
    assert metrics["calibration"] == {"temperature": pytest.approx(temperature)} and temperature != 1.0
    classes = metrics["labels"]
    probs = np.array([[row["probabilities"][k] for k in classes] for row in rows])
    labels = np.array([classes.index(t) for t in truth])
    assert metrics["ece"] == pytest.approx(_ece(probs, labels), abs=1e-4)
    raw = np.exp(np.log(np.maximum(probs, 1e-12)) * temperature)
    assert metrics["ece_raw"] == pytest.approx(_ece(raw / raw.sum(axis=1, keepdims=True), labels), abs=1e-4)


def _ece(probs, labels, bins=15):
    """Expected calibration error over 15 equal-width (lo, hi] confidence bins, written out here."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return sum((which == b).mean() * abs(correct[which == b].mean() - confidence[which == b].mean())
               for b in range(bins) if (which == b).any())


@pytest.mark.parametrize("flag", ["--calibrate", "--no-calibrate"])
def test_calibration_is_fitted_and_printed_or_left_out(task, tmp_path, capsys, flag):
    output = tmp_path / "cls"
    code, out, err = run_cli(capsys, *finetune_args(task, output, epochs=1), "--max-steps", 3, flag)
    assert code == 0, err
    document = json.loads((output / "config.json").read_text())
    temperature, report = document["keras_model"]["config"]["temperature"], document["head"]["calibration"]
    if flag == "--no-calibrate":
        assert temperature == 1.0 and report is None and "calibration:" not in out + err
        return
    assert report["parameter"] == "temperature" and report["value"] == temperature
    assert report["examples"] == 80 and report["nll"]["calibrated"] <= report["nll"]["raw"]
    assert f"calibration: temperature = {temperature:.4g}" in " ".join((out + err).split())


def test_no_validation_split_skips_calibration_in_one_line():
    from nlpkit.training.finetune import FinetuneConfig, _calibrate

    for task in ("classification", "multi-label"):
        config = FinetuneConfig(train="t", output="o", task=task)
        assert _calibrate(config, None, ({}, np.zeros(0, "int32")), ["a", "b"]) == (
            {"skipped": "no validation split"}, ["a", "b"])


def test_sngp_head_reports_uncertainty(task, tmp_path, capsys):
    output = tmp_path / "sngp"
    code, _, err = run_cli(capsys, *finetune_args(task, output, head="sngp", epochs=2))
    assert code == 0, err
    assert json.loads((output / "config.json").read_text())["head"]["type"] == "sngp"
    code, out, err = run_cli(capsys, "predict", "--model", output, "stocks fell sharply on Monday", "a moving film")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert all(row["uncertainty"] >= 0 for row in rows)

    # Both OOD AUROCs of `evaluate` against pairwise counts over `predict`'s outputs.
    metrics_path = tmp_path / "metrics.json"
    code, _, err = run_cli(capsys, "evaluate", "--model", output, "--data", task / "test.csv",
                           "--json", metrics_path, "--ood", task / "ood.txt")
    assert code == 0, err
    metrics = json.loads(metrics_path.read_text())
    texts = tmp_path / "in_distribution.txt"
    with open(task / "test.csv", encoding="utf-8") as handle:
        texts.write_text("".join(row["text"] + "\n" for row in csv.DictReader(handle)), encoding="utf-8")
    scores = {}
    for name, path in (("in", texts), ("ood", task / "ood.txt")):
        code, out, err = run_cli(capsys, "predict", "--model", output, "--input", path)
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        scores[name] = {"ood_auroc": [row["uncertainty"] for row in rows],
                        "ood_auroc_max_probability": [1 - max(row["probabilities"].values()) for row in rows]}
    for key in ("ood_auroc", "ood_auroc_max_probability"):
        assert metrics[key] == pytest.approx(_pairwise_auroc(scores["in"][key], scores["ood"][key]), abs=2e-3)


def _pairwise_auroc(negatives, positives):
    """P(a positive scores above a negative), ties 1/2, by counting every pair."""
    negatives, positives = np.asarray(negatives)[:, None], np.asarray(positives)[None, :]
    return float(np.mean((positives > negatives) + 0.5 * (positives == negatives)))


def _write_csv(path, rows, header=("text", "label")):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    "case, rows, extra, message",
    [
        ("single class", [("good", "a"), ("fine", "a"), ("nice", "a")], [], "single class"),
        ("missing column", [("good", "a"), ("bad", "b")], ["--label-column", "stars"], "'stars'"),
        ("empty text fails", [("good", "a"), ("", "b"), ("bad", "b")], ["--empty-rows", "fail"], "row 2"),
        ("unknown pooling", [("good", "a"), ("bad", "b")], ["--pooling", "max"], "--pooling 'max'"),
        ("unknown head", [("good", "a"), ("bad", "b")], ["--head", "gp"], "--head 'gp'"),
    ],
)
def test_bad_training_data_is_one_line_error(task, tmp_path, capsys, case, rows, extra, message):
    train = _write_csv(tmp_path / "train.csv", rows)
    code, out, err = run_cli(capsys, "finetune", "--preset", task / "encoder.json", "--train", train,
                             "--output", tmp_path / "out", "--validation-split", "0.5", *extra)
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unknown_validation_label_and_wrong_model_kind(task, trained, tmp_path, capsys):
    validation = _write_csv(tmp_path / "val.csv", [("good", "news"), ("odd", "sports")])
    code, _, err = run_cli(capsys, "finetune", "--preset", task / "encoder.json", "--train", task / "train.csv",
                           "--validation", validation, "--output", tmp_path / "out", "--epochs", 1)
    assert code == 2 and "row 2" in err and "'sports'" in err

    code, _, err = run_cli(capsys, "evaluate", "--model", task, "--data", task / "test.csv")
    assert code == 2 and "not a model directory" in err


def test_empty_rows_are_skipped_and_counted(task, tmp_path, capsys):
    from nlpkit.data.labelled import read_examples

    path = _write_csv(tmp_path / "rows.csv", [("good", "a"), ("  ", "b"), ("bad", "b"), ("", "a")])
    examples = read_examples(path)
    assert examples.texts == ["good", "bad"] and examples.labels == ["a", "b"] and examples.skipped_empty == 2
    assert examples.rows == [1, 3]
