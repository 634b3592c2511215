"""Hub dataset names for the multi-label and regression tasks and for `nlpkit predict --input`, through the CLI.

A real offline `datasets` cache (`tests.hub_cache`, as in tests/data/test_hub.py) holds
`realsets` with two configs of bundled real rows: `headlines` (health headlines and the list of news
accounts that tweeted each, multi-label) and `snippets` (VADER movie snippets and their mean rating).
The independent reference for what a hub name reads is the same rows written to local files.
"""

import json

import pytest

from nlpkit.data.bundled import movie_snippet_ratings
from nlpkit.data.targets import health_headline_sources
from tests.classifier_fixtures import TINY_ENCODER
from tests.cli import run_cli
from tests.hub_cache import use_cache, write_cached_dataset
from tests.task_fixtures import write_labelled_csv

_KEEP = {"reuters_health", "foxnewshealth", "nytimeshealth"}
HEADLINES = [(text, labels) for text, labels in health_headline_sources() if set(labels) <= _KEEP][:60]
SNIPPETS = movie_snippet_ratings()[:60]
SPLITS = {"headlines": {"train": HEADLINES[:40], "validation": HEADLINES[40:]},
          "snippets": {"train": SNIPPETS[:40], "validation": SNIPPETS[40:50], "test": SNIPPETS[50:]}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    labels = {"headlines": lambda datasets: datasets.Sequence(datasets.Value("string")),
              "snippets": lambda datasets: datasets.Value("float64")}
    return write_cached_dataset(tmp_path_factory.mktemp("hf_datasets"), "realsets", SPLITS, labels)


@pytest.fixture(autouse=True)
def offline_cache(cache, monkeypatch):
    return use_cache(monkeypatch, cache)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("encoder") / "encoder.json"
    path.write_text(json.dumps(TINY_ENCODER), encoding="utf-8")
    return path


def _finetune(capsys, encoder, output, *args):
    return run_cli(capsys, "finetune", "--preset", encoder, "--output", output, "--epochs", 1, "--seq-length", 16,
                   "--batch-size", 16, *args)


def _one_line_error(code, err, output):
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not output.exists()
    return " ".join(err.split())


@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_task_reads_hub_splits_by_option_and_names_the_option_on_error(task, encoder, tmp_path, capsys):
    name = "realsets/headlines" if task == "multi-label" else "realsets/snippets"
    code, out, err = _finetune(capsys, encoder, tmp_path / "bad", "--task", task, "--train", name,
                               "--validation", "imdb")
    assert "--validation imdb: cannot load dataset 'imdb'" in _one_line_error(code, err, tmp_path / "bad")
    code, out, err = _finetune(capsys, encoder, tmp_path / "bad", "--task", task, "--train", name,
                               "--validation", f"{name}:dev")
    assert f"--validation {name}:dev: dataset 'realsets' ({name.split('/')[1]}) has no split 'dev'" in \
        _one_line_error(code, err, tmp_path / "bad")

    code, out, err = _finetune(capsys, encoder, tmp_path / "model", "--task", task, "--train", name,
                               "--validation", name)  # no split: each option's own, never train twice
    assert code == 0, err
    assert "train 40, validation 20" in " ".join(out.split()) if task == "multi-label" else \
        "train 40, validation 10" in " ".join(out.split())


def test_regression_row_errors_name_the_option():
    from nlpkit.data.targets import read_multilabel_examples, read_regression_examples
    from nlpkit.errors import NlpkitError

    # a numeric label column read as multi-label is fine; the headlines' lists are not numbers
    with pytest.raises(NlpkitError, match=r"^--train realsets/headlines: row 1 has label .*, not a number"):
        read_regression_examples("realsets/headlines", option="--train")
    got = read_multilabel_examples("realsets/headlines", option="--validation")
    assert list(zip(got.texts, got.labels)) == HEADLINES[40:]


def test_evaluate_data_takes_a_hub_name_and_predict_input_too(encoder, tmp_path, capsys):
    model = tmp_path / "model"
    code, out, err = _finetune(capsys, encoder, model, "--task", "regression", "--train", "realsets/snippets",
                               "--validation", "realsets/snippets")
    assert code == 0, err
    test_csv = write_labelled_csv(tmp_path / "test.csv", SPLITS["snippets"]["test"])
    # --data without a split reads the test split: the same metrics as the same rows in a local file
    reports = []
    for data in ("realsets/snippets", test_csv):
        code, out, err = run_cli(capsys, "evaluate", "--model", model, "--data", data,
                                 "--json", tmp_path / "report.json", "--force")
        assert code == 0, err
        reports.append(json.loads((tmp_path / "report.json").read_text(encoding="utf-8")))
    assert reports[0] == reports[1] and reports[0]["examples"] == 10

    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(text for text, _ in SPLITS["snippets"]["test"]) + "\n", encoding="utf-8")
    rows = []
    for source in ("realsets/snippets:test", texts_file):
        code, out, err = run_cli(capsys, "predict", "--model", model, "--input", source)
        assert code == 0, err
        rows.append([json.loads(line) for line in out.splitlines()])
    assert rows[0] == rows[1] and [row["text"] for row in rows[0]] == [t for t, _ in SPLITS["snippets"]["test"]]

    code, out, err = run_cli(capsys, "predict", "--model", model, "--input", "realsets/snippets")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--input realsets/snippets: name the split" in " ".join(err.split())
    code, out, err = run_cli(capsys, "predict", "--model", model, "--input", "realsets/snippets:test",
                             "--text-column", "sentence")
    assert code == 2 and "sentence" in err and len(err.strip().splitlines()) == 1
