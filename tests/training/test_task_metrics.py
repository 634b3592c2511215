"""Task metrics against references written here: loops over counts, SciPy, and conlleval.pl itself."""

import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats

from nlpkit.errors import NlpkitError
from nlpkit.training import task_metrics as tm


def _random_multilabel(seed=0, n=40, labels=6):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, labels)) < 0.3).astype(int)
    targets[:, -1] = 0  # a label nobody has ...
    predicted = np.where(rng.random((n, labels)) < 0.8, targets, 1 - targets)
    predicted[:, -1] = 0  # ... and nobody predicts: left out of macro-F1
    return predicted, targets


def _counts_by_loop(predicted, targets, j):
    tp = sum(1 for p, t in zip(predicted[:, j], targets[:, j]) if p and t)
    fp = sum(1 for p, t in zip(predicted[:, j], targets[:, j]) if p and not t)
    fn = sum(1 for p, t in zip(predicted[:, j], targets[:, j]) if t and not p)
    return tp, fp, fn


def test_multilabel_f1_and_subset_accuracy_equal_counts_by_hand():
    predicted, targets = _random_multilabel()
    counts = [_counts_by_loop(predicted, targets, j) for j in range(targets.shape[1])]
    f1s = [2 * tp / (2 * tp + fp + fn) for tp, fp, fn in counts if tp + fp + fn]
    tp, fp, fn = np.sum(counts, axis=0)
    assert tm.micro_f1(predicted, targets) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert tm.multilabel_macro_f1(predicted, targets) == pytest.approx(np.mean(f1s))
    exact = np.mean([list(p) == list(t) for p, t in zip(predicted, targets)])
    assert tm.subset_accuracy(predicted, targets) == pytest.approx(exact)
    table = tm.per_label_table(predicted, targets, list("abcdef"))
    for row, (tp, fp, fn) in zip(table, counts):
        assert row["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert row["recall"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
        assert (row["support"], row["predicted"]) == (tp + fn, tp + fp)


def test_fitted_thresholds_reach_the_best_f1_a_search_finds():
    rng = np.random.default_rng(3)
    targets = (rng.random((60, 4)) < 0.4).astype(int)
    probabilities = np.clip(0.35 * targets + rng.random((60, 4)) * 0.7, 0, 1).round(2)  # rounding makes ties
    targets[:, 3] = 0
    thresholds = tm.fit_thresholds(probabilities, targets)
    assert thresholds[3] == 0.5  # no positive example: the default stays
    for j in range(3):
        def f1_at(t):
            predicted = probabilities[:, j] >= t
            tp = np.sum(predicted & (targets[:, j] == 1))
            return 2 * tp / (predicted.sum() + targets[:, j].sum())
        best = max(f1_at(t) for t in np.linspace(0, 1, 1001))
        assert f1_at(thresholds[j]) == pytest.approx(best)
        assert thresholds[j] not in set(probabilities[:, j])  # midway between examples


def test_regression_metrics_equal_numpy_and_scipy():
    rng = np.random.default_rng(5)
    targets = rng.integers(-4, 5, size=50).astype(float)  # many ties, as in averaged human ratings
    predictions = np.round(targets + rng.normal(0, 1.5, 50))
    assert tm.rmse(predictions, targets) == pytest.approx(np.sqrt(np.mean((predictions - targets) ** 2)))
    assert tm.mae(predictions, targets) == pytest.approx(np.mean(np.abs(predictions - targets)))
    assert tm.pearson(predictions, targets) == pytest.approx(stats.pearsonr(predictions, targets)[0])
    assert tm.spearman(predictions, targets) == pytest.approx(stats.spearmanr(predictions, targets)[0])
    np.testing.assert_allclose(tm.average_ranks(targets), stats.rankdata(targets))
    assert np.isnan(tm.pearson(np.ones(5), np.arange(5.0)))


def test_entity_scores_on_a_hand_worked_case():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG", "O"],  # PER right, LOC typed wrong
                 ["O", "I-ORG", "I-ORG", "O"]]  # I after O starts an entity (conlleval): wrong start
    scores = tm.entity_scores(true, predicted)
    # true: PER(0,2) LOC(3,4) ORG(0,3) ; predicted: PER(0,2) ORG(3,4) ORG(1,3) ; correct: PER only.
    assert (scores["true_entities"], scores["predicted_entities"], scores["correct"]) == (3, 3, 1)
    assert scores["precision"] == pytest.approx(1 / 3) and scores["f1"] == pytest.approx(1 / 3)
    assert scores["per_type"]["PER"]["f1"] == 1.0 and scores["per_type"]["ORG"]["f1"] == 0.0
    assert tm.token_accuracy(true, predicted) == pytest.approx(7 / 9)
    with pytest.raises(NlpkitError):
        tm.entity_scores(true, predicted[:1])


def _conlleval(perl_script, text):
    out = subprocess.run(["perl", perl_script], input=text, capture_output=True, text=True, check=True).stdout
    line = [l for l in out.splitlines() if l.startswith("accuracy")][0]
    fields = line.replace("%", "").replace(";", "").split()
    return {"accuracy": float(fields[1]), "precision": float(fields[3]), "recall": float(fields[5]),
            "f1": float(fields[7])}


@pytest.mark.skipif(shutil.which("perl") is None, reason="conlleval.pl needs perl")
def test_entity_scores_equal_conlleval_on_real_chunking_output(tmp_path):
    from nlpkit.data.token_tags import chunking_sample_text, conlleval_script

    script = tmp_path / "conlleval.pl"
    script.write_text(conlleval_script(), encoding="utf-8")
    text = chunking_sample_text()  # word POS gold system: conlleval compares the last two columns
    sentences = [[line.split() for line in block.splitlines()] for block in text.strip().split("\n\n")]
    true = [[cols[2] for cols in s] for s in sentences]
    system = [[cols[3] for cols in s] for s in sentences]
    want = _conlleval(script, text)
    got = tm.token_classification_report(true, system)
    assert 100 * got["precision"] == pytest.approx(want["precision"], abs=0.005)
    assert 100 * got["recall"] == pytest.approx(want["recall"], abs=0.005)
    assert 100 * got["f1"] == pytest.approx(want["f1"], abs=0.005)
    assert 100 * got["token_accuracy"] == pytest.approx(want["accuracy"], abs=0.005)
