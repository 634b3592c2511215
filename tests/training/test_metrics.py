import math

import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.training import metrics

rng = np.random.default_rng(0)


def _random_probs(n=300, classes=4):
    probs = rng.dirichlet(np.full(classes, 0.5), size=n)
    labels = rng.integers(0, classes, size=n)
    return probs, labels


# --- brute-force references (loops, no vectorisation) ----------------------------------------------


def _reference_macro_f1(predicted, labels):
    scores = []
    for c in sorted(set(labels) | set(predicted)):
        tp = sum(1 for p, y in zip(predicted, labels) if p == c and y == c)
        fp = sum(1 for p, y in zip(predicted, labels) if p == c and y != c)
        fn = sum(1 for p, y in zip(predicted, labels) if p != c and y == c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores)


def _reference_ece(probs, labels, num_bins=15):
    total = 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        members = [i for i in range(len(labels)) if (lo < probs[i].max() <= hi) or (b == 0 and probs[i].max() == 0)]
        if not members:
            continue
        accuracy = sum(int(np.argmax(probs[i]) == labels[i]) for i in members) / len(members)
        confidence = sum(probs[i].max() for i in members) / len(members)
        total += len(members) / len(labels) * abs(accuracy - confidence)
    return total


def _reference_auroc(scores, positive):
    wins = 0.0
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    for a in pos:
        for b in neg:
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / (len(pos) * len(neg))


# --- hand-worked cases -----------------------------------------------------------------------------


def test_accuracy_hand_worked_from_ids_and_probabilities():
    assert metrics.accuracy([0, 1, 1, 2], [0, 1, 2, 2]) == 0.75
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4], [0.0, 0.1, 0.9]])
    assert metrics.accuracy(probs, [0, 1, 2, 2]) == 0.75


def test_confusion_matrix_hand_worked():
    counts = metrics.confusion_matrix([0, 1, 1, 1, 0], [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert metrics.confusion_matrix([0], [0], num_classes=3).shape == (3, 3)


def test_macro_f1_hand_worked():
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 2, FP 1 -> 0.8; class 2: TP 0 -> 0.
    assert metrics.macro_f1([0, 1, 1, 1, 0], [0, 0, 1, 1, 2]) == pytest.approx((0.5 + 0.8 + 0.0) / 3, abs=1e-12)
    assert metrics.macro_f1([0, 0], [0, 0]) == 1.0  # classes never seen are not averaged in


def test_nll_hand_worked_and_floor():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    want = -(math.log(0.5) + math.log(0.1)) / 2
    assert metrics.negative_log_likelihood(probs, [0, 1]) == pytest.approx(want, abs=1e-12)
    assert metrics.negative_log_likelihood([[1.0, 0.0]], [1]) == pytest.approx(-math.log(metrics.NLL_PROBABILITY_FLOOR))


def test_ece_hand_worked():
    # Four at confidence 0.95 (bin (14/15, 1]), two right -> gap 0.45;
    # two at 0.7 (bin (10/15, 11/15]), both right -> gap 0.3.
    probs = np.array([[0.95, 0.05]] * 4 + [[0.3, 0.7]] * 2)
    labels = [0, 0, 1, 1, 1, 1]
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(4 / 6 * 0.45 + 2 / 6 * 0.3, abs=1e-12)
    bins = metrics.calibration_bins(probs, labels)
    assert bins.counts[14] == 4 and bins.counts[10] == 2 and bins.counts.sum() == 6


def test_auroc_hand_worked_and_ties():
    assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert metrics.auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert metrics.auroc([1, 2, 3], [0, 1, 1]) == 1.0


# --- against brute force on random data ------------------------------------------------------------


def test_macro_f1_matches_brute_force():
    probs, labels = _random_probs()
    predicted = np.argmax(probs, -1)
    want = _reference_macro_f1(list(predicted), list(labels))
    assert metrics.macro_f1(probs, labels) == pytest.approx(want, abs=1e-12)


def test_confusion_matrix_matches_brute_force():
    probs, labels = _random_probs()
    want = np.zeros((4, 4), int)
    for p, y in zip(np.argmax(probs, -1), labels):
        want[y, p] += 1
    np.testing.assert_array_equal(metrics.confusion_matrix(probs, labels, num_classes=4), want)


def test_ece_matches_explicit_binning():
    probs, labels = _random_probs()
    probs[:5] = [0.6, 0.4 / 3, 0.4 / 3, 0.4 / 3]  # a confidence on a bin edge (9/15)
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(_reference_ece(probs, labels), abs=1e-12)


def test_auroc_matches_pair_counting_with_many_ties():
    scores = rng.integers(0, 6, size=120).astype(float)
    positive = rng.random(120) < 0.3
    assert metrics.auroc(scores, positive) == pytest.approx(_reference_auroc(scores, positive), abs=1e-12)


# --- reliability diagram ---------------------------------------------------------------------------


def test_reliability_diagram_writes_a_png(tmp_path):
    import matplotlib.image

    probs, labels = _random_probs()
    path = tmp_path / "plots" / "reliability.png"
    bins = metrics.reliability_diagram(probs, labels, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(str(path)).shape[:2] == (600, 500)
    assert bins.counts.sum() == len(labels)
    assert list(tmp_path.joinpath("plots").iterdir()) == [path]  # no temporary file left behind


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.auroc([0.1, 0.2], [1, 1]),
        lambda: metrics.auroc([0.1, 0.2, 0.3], [1, 0]),
        lambda: metrics.accuracy([0, 1], [0, 1, 1]),
        lambda: metrics.negative_log_likelihood([[0.5, 0.5]], [2]),
        lambda: metrics.expected_calibration_error([0.5, 0.5], [0, 1]),
        lambda: metrics.accuracy([], []),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(NlpkitError):
        call()
