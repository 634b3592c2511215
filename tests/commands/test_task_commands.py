"""`nlpkit finetune --task` multi-label / regression / token-classification on real data, through the
CLI: train, evaluate, predict, export, and the SavedModel in a fresh process equal to `nlpkit predict`."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.classifier_fixtures import TINY_ENCODER
from tests.cli import run_cli, run_cli_ok
from tests.task_fixtures import write_labelled_csv

# In a fresh process: TensorFlow (+ tensorflow_text for the tokenizer ops) and nothing of nlpkit.
_SERVE = """
import json, sys
import tensorflow as tf, tensorflow_text  # noqa: F401
texts = json.loads(sys.argv[2])
out = tf.saved_model.load(sys.argv[1]).signatures["serving_default"](text=tf.constant(texts))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items() if v.dtype != tf.string}))
"""


def _serve(saved_model, texts):
    done = subprocess.run([sys.executable, "-c", _SERVE, str(saved_model), json.dumps(texts)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {k: np.asarray(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("encoder") / "encoder.json"
    path.write_text(json.dumps(TINY_ENCODER), encoding="utf-8")
    return path


def _finetune(encoder, train, validation, output, *extra, precision="float32"):
    run_cli_ok("finetune", "--preset", encoder, "--train", train, "--validation", validation, "--output", output,
               "--epochs", 3, "--seq-length", 32, "--batch-size", 16, "--learning-rate", 3e-3,
               "--precision", precision, *extra)


@pytest.fixture(scope="module")
def multilabel(encoder, tmp_path_factory):
    from nlpkit.data.targets import health_headline_sources

    folder = tmp_path_factory.mktemp("multilabel")
    rows = health_headline_sources()
    keep = {"reuters_health", "foxnewshealth", "nytimeshealth"}
    chosen = [(text, "|".join(labels)) for text, labels in rows if set(labels) <= keep][:96]
    train = write_labelled_csv(folder / "train.csv", chosen[:64])
    test = write_labelled_csv(folder / "test.csv", chosen[64:])
    _finetune(encoder, train, test, folder / "model", "--task", "multi-label", "--label-separator", "|")
    return folder


@pytest.fixture(scope="module")
def regression(encoder, tmp_path_factory):
    from nlpkit.data.bundled import movie_snippet_ratings

    folder = tmp_path_factory.mktemp("regression")
    rows = movie_snippet_ratings()[:96]
    train = write_labelled_csv(folder / "train.csv", rows[:64])
    test = write_labelled_csv(folder / "test.csv", rows[64:])
    # bf16 training: inference (predict and the export) runs the model in float32 all the same.
    _finetune(encoder, train, test, folder / "model", "--task", "regression", precision="mixed_bfloat16")
    return folder


@pytest.fixture(scope="module")
def tagging(encoder, tmp_path_factory):
    from nlpkit.data.token_tags import write_chunking_sample

    folder = tmp_path_factory.mktemp("tagging")
    sample = write_chunking_sample(folder / "all.conll").read_text(encoding="utf-8").strip().split("\n\n")
    (folder / "train.conll").write_text("\n\n".join(sample[:24]) + "\n", encoding="utf-8")
    (folder / "test.conll").write_text("\n\n".join(sample[24:36]) + "\n", encoding="utf-8")
    _finetune(encoder, folder / "train.conll", folder / "test.conll", folder / "model", "--task", "token-classification")
    return folder


def test_multilabel_thresholds_evaluate_predict_and_export(multilabel, capsys):
    model = multilabel / "model"
    head = json.loads((model / "config.json").read_text())["head"]
    assert head["task"] == "multi-label" and head["type"] == "classification"
    names, thresholds = head["encoding"]["names"], head["encoding"]["thresholds"]
    assert names == sorted(head["labels"]) and len(thresholds) == len(names)
    assert head["calibration"]["parameter"] == "thresholds"
    assert head["calibration"]["value"] == dict(zip(names, thresholds))
    code, out, err = run_cli(capsys, "evaluate", "--model", model, "--data", multilabel / "test.csv",
                             "--json", multilabel / "metrics.json")
    assert code == 0, err
    assert "micro_f1" in out and "per label" in out
    metrics = json.loads((multilabel / "metrics.json").read_text())
    assert not list(multilabel.glob("*.png"))  # no reliability diagram beside --json for a multi-label model
    texts = [row[0] for row in _csv_rows(multilabel / "test.csv")]
    code, _, err = run_cli(capsys, "predict", "--model", model, "--output", multilabel / "p.jsonl", *texts)
    assert code == 0, err
    rows = _rows(multilabel / "p.jsonl")
    probabilities = np.array([[row["probabilities"][n] for n in names] for row in rows])
    # Independent check: the labels are exactly the thresholded probabilities, and subset accuracy
    # recomputed here from the predictions matches evaluate's.
    # predict's JSON rounds probabilities to 6 digits: a label that close to its threshold may go either way.
    for row, p in zip(rows, probabilities):
        clear = {n for n, value, t in zip(names, p, thresholds) if abs(value - t) > 1e-6}
        assert [n for n in row["labels"] if n in clear] == [
            n for n, value, t in zip(names, p, thresholds) if value >= t and n in clear]
    truth = [set(row[1].split("|")) for row in _csv_rows(multilabel / "test.csv")]
    # The thresholds are those fitted on the validation split (test.csv here) from these probabilities.
    from nlpkit.training.task_metrics import fit_thresholds

    targets = np.array([[name in labels for name in names] for labels in truth], "float32")
    np.testing.assert_allclose(thresholds, fit_thresholds(probabilities, targets), atol=1e-4)
    assert metrics["subset_accuracy"] == pytest.approx(np.mean([set(r["labels"]) == t for r, t in zip(rows, truth)]))
    run_cli_ok("export", "--model", model, "--output", multilabel / "saved")
    served = _serve(multilabel / "saved", texts)
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-5)
    assert (served["labels"] == (np.asarray(served["probabilities"]) >= np.array(thresholds)).astype(int)).all()


def _csv_rows(path):
    import csv

    with open(path, encoding="utf-8") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def test_regression_in_label_units_evaluate_predict_and_export(regression, capsys):
    model = regression / "model"
    head = json.loads((model / "config.json").read_text())["head"]
    rows = _csv_rows(regression / "train.csv")
    train_labels = np.array([float(label) for _, label in rows])
    assert head["encoding"]["mean"] == pytest.approx(train_labels.mean())
    assert head["encoding"]["std"] == pytest.approx(train_labels.std())
    test = _csv_rows(regression / "test.csv")
    texts, labels = [t for t, _ in test], np.array([float(v) for _, v in test])
    code, _, err = run_cli(capsys, "predict", "--model", model, "--output", regression / "p.jsonl", *texts)
    assert code == 0, err
    values = np.array([row["value"] for row in _rows(regression / "p.jsonl")])
    # The loaded Keras model's standardised output, mapped to label units here, is what predict wrote.
    import keras

    import nlpkit
    from nlpkit.data.labelled import TextPacker

    loaded = nlpkit.load_model(model)
    assert loaded.dtype_policy.name == "mixed_bfloat16"  # as trained
    packed = TextPacker(str(model / "vocab.txt"), 32).pack(texts)
    standardised = keras.ops.convert_to_numpy(loaded(packed, training=False)).astype("float64")
    np.testing.assert_allclose(values, standardised * head["encoding"]["std"] + head["encoding"]["mean"], atol=0.05)
    code, out, err = run_cli(capsys, "evaluate", "--model", model, "--data", regression / "test.csv",
                             "--json", regression / "metrics.json")
    assert code == 0, err and "spearman" in out
    metrics = json.loads((regression / "metrics.json").read_text())
    # RMSE / MAE / Pearson in label units, recomputed here from predict's values.
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((values - labels) ** 2)), rel=1e-5)
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(values - labels)), rel=1e-5)
    assert metrics["pearson"] == pytest.approx(np.corrcoef(values, labels)[0, 1], rel=1e-4)
    run_cli_ok("export", "--model", model, "--output", regression / "saved")
    np.testing.assert_allclose(_serve(regression / "saved", texts)["value"], values, atol=1e-5)


def test_token_classification_evaluate_predict_and_export(tagging, capsys):
    model = tagging / "model"
    head = json.loads((model / "config.json").read_text())["head"]
    assert head["task"] == "token-classification" and head["encoding"]["scheme"] == "iob2"
    code, out, err = run_cli(capsys, "evaluate", "--model", model, "--data", tagging / "test.conll",
                             "--json", tagging / "metrics.json")
    assert code == 0, err
    assert "entities per type" in out and "token_accuracy" in out
    metrics = json.loads((tagging / "metrics.json").read_text())
    assert 0.0 <= metrics["f1"] <= 1.0 and set(metrics["per_type"]) <= {"NP", "VP", "PP", "ADVP", "ADJP", "SBAR",
                                                                           "PRT", "CONJP", "INTJ", "LST", "UCP"}
    texts = ["Rockwell International Corp. 's Tulsa unit said it signed a tentative agreement.",
             "He reckons the current account deficit will narrow to only 1.8 billion in September ."]
    code, _, err = run_cli(capsys, "predict", "--model", model, "--output", tagging / "p.jsonl", *texts)
    assert code == 0, err
    rows = _rows(tagging / "p.jsonl")
    for text, row in zip(texts, rows):
        assert len(row["tags"]) == len(row["tokens"])
        for entity in row["entities"]:  # the offsets point into the original text
            assert text[entity["start"]:entity["end"]] == entity["text"]
            first, last = entity["words"]
            assert entity["text"].startswith(row["tokens"][first]) and entity["text"].endswith(row["tokens"][last - 1])
    run_cli_ok("export", "--model", model, "--output", tagging / "saved")
    served = _serve(tagging / "saved", texts)
    names = head["labels"]
    for n, row in enumerate(rows):
        starts = np.flatnonzero(served["word_start"][n])
        assert len(starts) == len(row["tokens"])  # one word start per predicted word
        assert [names[i] for i in served["label"][n][starts]] == row["tags"]
    # Word probabilities of the in-process wrapper at the served first pieces, within 1e-5.
    from nlpkit.models.inference import InferenceModel

    words = InferenceModel(model).predict(texts)["probabilities"]
    for n, probabilities in enumerate(words):
        np.testing.assert_allclose(served["probabilities"][n][np.flatnonzero(served["word_start"][n])],
                                   probabilities, atol=1e-5)


@pytest.mark.parametrize("task,head", [("regression", "classification"), ("multi-label", "sngp"),
                                       ("token-classification", "regression"), ("ner", None)])
def test_impossible_task_or_head_is_one_line_and_writes_nothing(task, head, encoder, tmp_path, capsys):
    train = write_labelled_csv(tmp_path / "t.csv", [("a", "1"), ("b", "2")])
    extra = ["--head", head] if head else []
    code, _, err = run_cli(capsys, "finetune", "--preset", encoder, "--train", train, "--output", tmp_path / "out",
                           "--task", task, *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--task" in err
    assert not (tmp_path / "out").exists()


def test_bad_task_inputs_are_one_line_and_write_nothing(multilabel, encoder, tmp_path, capsys):
    cases = []
    unknown = write_labelled_csv(tmp_path / "unknown.csv", [("a headline", "reuters_health|cnnhealth")])
    cases.append((["evaluate", "--model", multilabel / "model", "--data", unknown, "--json", tmp_path / "m.json"],
                  "'cnnhealth', unknown to the model"))
    words = write_labelled_csv(tmp_path / "words.csv", [("good film", "4.5"), ("dull", "four")])
    cases.append((["finetune", "--preset", encoder, "--train", words, "--output", tmp_path / "m.json",
                   "--task", "regression"], "row 2 has label 'four', not a number"))
    (tmp_path / "short.jsonl").write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    cases.append((["finetune", "--preset", encoder, "--train", tmp_path / "short.jsonl", "--output",
                   tmp_path / "m.json", "--task", "token-classification"], "short.jsonl:1: 1 tags for 2 tokens"))
    (tmp_path / "bio.conll").write_text("The O\ndog I-NP\n\nA B-NP\ncat I-NP\n")
    cases.append((["finetune", "--preset", encoder, "--train", tmp_path / "bio.conll", "--output",
                   tmp_path / "m.json", "--task", "token-classification"], "bio.conll:2: tag I-NP follows O"))
    good = write_labelled_csv(tmp_path / "good.csv", [("good film", "4.5"), ("dull", "1")])
    for extra, message in ((["--task", "token-classification", "--pooling", "mean"], "--pooling is for"),
                           (["--task", "regression", "--label-separator", "|"],
                            "--label-separator is for --task multi-label, not regression")):
        cases.append((["finetune", "--preset", encoder, "--train", good, "--output", tmp_path / "m.json", *extra],
                      message))
    cases.append((["evaluate", "--model", multilabel / "model", "--data", multilabel / "test.csv", "--ood", good,
                   "--json", tmp_path / "m.json"], "--ood is for classifiers, not a multi-label model"))
    for args, message in cases:
        code, _, err = run_cli(capsys, *args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and message in err, err
        assert not (tmp_path / "m.json").exists()


def test_tagged_sentences_split_into_validation_as_examples_do():
    from nlpkit.data.token_tags import TaggedSentence
    from nlpkit.training.tasks import _split

    sentences = [TaggedSentence([f"w{i}"], ["O"]) for i in range(20)]
    train, validation = _split(sentences, 0.25, seed=3)
    assert len(validation) == 5 and len(train) == 15
    assert sorted(s.tokens[0] for s in train + validation) == sorted(s.tokens[0] for s in sentences)
    order = np.random.default_rng(3).permutation(20)  # split_validation's documented seeded permutation
    assert [s.tokens[0] for s in validation] == [f"w{i}" for i in sorted(order[:5])]
