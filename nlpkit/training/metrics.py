"""Evaluation metrics for classifiers, in NumPy: accuracy, macro-F1, NLL, calibration, AUROC.

Every function takes the model's output first and the true labels second. `predictions` may be
class ids `[N]` or probabilities `[N, C]` (the arg-max is taken); `probs` are probabilities `[N, C]`.
"""

from dataclasses import dataclass

import numpy as np

from nlpkit.errors import NlpkitError
from nlpkit.io import atomic_file

# Probabilities are clipped to this before the log, so a confidently wrong example costs
# -log(1e-12) ~ 27.6 rather than infinity.
NLL_PROBABILITY_FLOOR = 1e-12
DEFAULT_NUM_BINS = 15


def _labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise NlpkitError(f"labels must be a non-empty 1-D array of class ids, got shape {labels.shape}")
    return labels.astype(np.int64)


def _probabilities(probs, labels):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise NlpkitError(f"probabilities must be [N, C] with N = {labels.shape[0]} labels, got shape {probs.shape}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise NlpkitError(f"labels must lie in 0..{probs.shape[1] - 1} for {probs.shape[1]} classes")
    return probs


def _predicted_classes(predictions, labels):
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = np.argmax(predictions, axis=-1)
    if predictions.shape != labels.shape:
        raise NlpkitError(f"predictions of shape {predictions.shape} do not match labels of shape {labels.shape}")
    return predictions.astype(np.int64)


def accuracy(predictions, labels):
    """Fraction of examples whose predicted class is the label."""
    labels = _labels(labels)
    return float(np.mean(_predicted_classes(predictions, labels) == labels))


def confusion_matrix(predictions, labels, num_classes=None):
    """`[C, C]` counts: row = true class, column = predicted class.

    C = `num_classes`, or one more than the largest class id seen (in labels or predictions).
    """
    labels = _labels(labels)
    predicted = _predicted_classes(predictions, labels)
    if num_classes is None:
        num_classes = int(max(labels.max(), predicted.max())) + 1
    if min(labels.min(), predicted.min()) < 0 or max(labels.max(), predicted.max()) >= num_classes:
        raise NlpkitError(f"class ids must lie in 0..{num_classes - 1}")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def macro_f1(predictions, labels):
    """Unweighted mean of per-class F1 = 2 TP / (2 TP + FP + FN).

    Classes that occur neither in the labels nor in the predictions are left out of the mean.
    """
    counts = confusion_matrix(predictions, labels)
    true_positives = np.diag(counts)
    denominators = counts.sum(axis=0) + counts.sum(axis=1)  # 2 TP + FP + FN
    seen = denominators > 0
    return float(np.mean(2.0 * true_positives[seen] / denominators[seen]))


def negative_log_likelihood(probs, labels):
    """Mean -log p(label) (probabilities floored at `NLL_PROBABILITY_FLOOR`)."""
    labels = _labels(labels)
    probs = _probabilities(probs, labels)
    picked = probs[np.arange(labels.shape[0]), labels]
    return float(-np.mean(np.log(np.maximum(picked, NLL_PROBABILITY_FLOOR))))


@dataclass
class CalibrationBins:
    """Per-bin statistics of the top-class confidence: equal-width bins (lo, hi] over [0, 1]."""

    edges: np.ndarray  # [num_bins + 1]
    counts: np.ndarray  # [num_bins] examples per bin
    confidence: np.ndarray  # [num_bins] mean top probability (0 for an empty bin)
    accuracy: np.ndarray  # [num_bins] fraction correct (0 for an empty bin)


def calibration_bins(probs, labels, num_bins=DEFAULT_NUM_BINS):
    """Bin examples by their top probability into `num_bins` bins (lo, hi]; a confidence of 0 goes to the first."""
    labels = _labels(labels)
    probs = _probabilities(probs, labels)
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    filled = np.maximum(counts, 1)
    return CalibrationBins(
        edges=edges,
        counts=counts,
        confidence=np.bincount(bins, weights=confidence, minlength=num_bins) / filled,
        accuracy=np.bincount(bins, weights=correct, minlength=num_bins) / filled,
    )


def expected_calibration_error(probs, labels, num_bins=DEFAULT_NUM_BINS):
    """ECE = sum over bins of (bin size / N) * |accuracy - mean confidence| (15 bins by default)."""
    bins = calibration_bins(probs, labels, num_bins)
    weights = bins.counts / bins.counts.sum()
    return float(np.sum(weights * np.abs(bins.accuracy - bins.confidence)))


def _average_ranks(values):
    """1-based ranks of `values`; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each sorted position belongs to.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_ends = np.r_[run_starts[1:], len(values)]
    run_of_position = np.repeat(np.arange(len(run_starts)), run_ends - run_starts)
    mean_rank = (run_starts + 1 + run_ends) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[run_of_position]
    return ranks


def auroc(scores, is_positive):
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2.

    Computed from ranks (Mann-Whitney U). `is_positive` is 1/True for the positive class (e.g.
    out-of-distribution examples scored by their uncertainty).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(is_positive).astype(bool)
    if scores.ndim != 1 or scores.shape != positive.shape:
        raise NlpkitError(f"scores {scores.shape} and is_positive {positive.shape} must be 1-D of the same length")
    num_positive = int(positive.sum())
    num_negative = positive.size - num_positive
    if num_positive == 0 or num_negative == 0:
        raise NlpkitError(
            "AUROC needs both positive and negative examples", hint="check the in/out-of-distribution data"
        )
    rank_sum = _average_ranks(scores)[positive].sum()
    return float((rank_sum - num_positive * (num_positive + 1) / 2.0) / (num_positive * num_negative))


def reliability_diagram(probs, labels, path, num_bins=DEFAULT_NUM_BINS, title="Reliability diagram"):
    """Write a reliability diagram PNG: accuracy per confidence bin against the diagonal, and the bin sizes.

    Returns the `CalibrationBins` drawn.
    """
    # Figure + Agg canvas directly: no pyplot, so no global backend state and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bins = calibration_bins(probs, labels, num_bins)
    ece = expected_calibration_error(probs, labels, num_bins)
    centers = (bins.edges[:-1] + bins.edges[1:]) / 2.0
    width = 1.0 / num_bins

    figure = Figure(figsize=(5, 6), dpi=100)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centers, bins.accuracy, width=width, edgecolor="black", color="tab:blue", label="accuracy")
    gap_bottom = np.minimum(bins.accuracy, bins.confidence)
    gap = np.where(bins.counts > 0, np.abs(bins.accuracy - bins.confidence), 0.0)
    top.bar(centers, gap, bottom=gap_bottom, width=width, color="tab:red", alpha=0.3, label="gap to confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"{title} (ECE = {ece:.4f})")
    top.legend(loc="upper left")
    bottom.bar(centers, bins.counts, width=width, edgecolor="black", color="tab:gray")
    bottom.set(xlabel="confidence", ylabel="examples")
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    return bins
