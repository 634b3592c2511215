"""Metrics of the multi-label, regression and token-classification tasks, in NumPy.

Multi-label: `predicted` and `targets` are 0/1 arrays `[N, L]`. Per-label F1 = 2 TP / (2 TP + FP + FN);
macro-F1 averages it over the labels that occur in the targets or the predictions (as
`nlpkit.training.metrics.macro_f1` does for classes); micro-F1 pools the counts of all labels.
Regression: `predictions` and `targets` are `[N]` in the label's units.
Token classification: lists of IOB2 tag sequences (one list of tags per sentence); entities are
counted as conlleval counts them (`nlpkit.data.token_tags.entity_spans`): a predicted entity is
correct when its type, first and last word all equal a true entity's.
"""

import numpy as np

from nlpkit.data.token_tags import entity_spans
from nlpkit.errors import NlpkitError

DEFAULT_THRESHOLD = 0.5


def _binary_pair(predicted, targets):
    predicted, targets = np.asarray(predicted).astype(bool), np.asarray(targets).astype(bool)
    if predicted.shape != targets.shape or predicted.ndim != 2 or predicted.size == 0:
        raise NlpkitError(f"predictions {predicted.shape} and targets {targets.shape} must both be [N, L]")
    return predicted, targets


def _f1(true_positives, false_positives, false_negatives):
    denominator = 2 * true_positives + false_positives + false_negatives
    return np.divide(2.0 * true_positives, denominator, out=np.zeros(np.shape(denominator)), where=denominator > 0)


def _ratio(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros(np.shape(denominator)), where=np.asarray(denominator) > 0)


def label_counts(predicted, targets):
    """Per-label (TP, FP, FN) as three int arrays `[L]`."""
    predicted, targets = _binary_pair(predicted, targets)
    return ((predicted & targets).sum(0), (predicted & ~targets).sum(0), (~predicted & targets).sum(0))


def micro_f1(predicted, targets):
    tp, fp, fn = (count.sum() for count in label_counts(predicted, targets))
    return float(_f1(tp, fp, fn))


def multilabel_macro_f1(predicted, targets):
    tp, fp, fn = label_counts(predicted, targets)
    seen = tp + fp + fn > 0
    return float(np.mean(_f1(tp, fp, fn)[seen])) if seen.any() else 0.0


def subset_accuracy(predicted, targets):
    """Fraction of rows whose predicted label set equals the true set exactly."""
    predicted, targets = _binary_pair(predicted, targets)
    return float(np.mean(np.all(predicted == targets, axis=1)))


def per_label_table(predicted, targets, names):
    """One dict per label: label, precision, recall, f1, support (true rows), predicted (rows)."""
    tp, fp, fn = label_counts(predicted, targets)
    precision, recall, f1 = _ratio(tp, tp + fp), _ratio(tp, tp + fn), _f1(tp, fp, fn)
    return [
        {"label": name, "precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
         "support": int(tp[j] + fn[j]), "predicted": int(tp[j] + fp[j])}
        for j, name in enumerate(names)
    ]


def fit_thresholds(probabilities, targets, default=DEFAULT_THRESHOLD):
    """Per-label threshold maximising that label's F1 on validation data (predict: probability >= threshold).

    Candidate thresholds lie midway between consecutive distinct probabilities of a label (and at
    its smallest), so the fitted one sits between the examples it separates. A label with no
    positive example in `targets` keeps `default`. Ties go to the candidate nearest `default`.
    """
    probabilities = np.asarray(probabilities, "float64")
    _, targets = _binary_pair(probabilities > 0, targets)
    return np.asarray([_best_threshold(probabilities[:, j], targets[:, j], default)
                       for j in range(targets.shape[1])])


def _best_threshold(scores, positives, default):
    if not positives.any():
        return default
    values = np.unique(scores)  # ascending
    candidates = np.concatenate([values[:1], (values[:-1] + values[1:]) / 2.0])  # values[0]: predict every row
    predicted = scores[None, :] >= candidates[:, None]  # [K, N]
    tp = (predicted & positives).sum(1)
    f1 = _f1(tp, predicted.sum(1) - tp, positives.sum() - tp)
    best = np.flatnonzero(f1 == f1.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - default))]])


def apply_thresholds(probabilities, thresholds):
    return (np.asarray(probabilities) >= np.asarray(thresholds)[None, :]).astype("int32")


def multilabel_report(probabilities, targets, names, thresholds=None):
    """All multi-label metrics at `thresholds` (default 0.5 for every label)."""
    thresholds = np.full(len(names), DEFAULT_THRESHOLD) if thresholds is None else np.asarray(thresholds)
    predicted = apply_thresholds(probabilities, thresholds)
    return {"micro_f1": micro_f1(predicted, targets), "macro_f1": multilabel_macro_f1(predicted, targets),
            "subset_accuracy": subset_accuracy(predicted, targets),
            "per_label": per_label_table(predicted, targets, names)}


def _regression_pair(predictions, targets):
    predictions, targets = np.asarray(predictions, "float64"), np.asarray(targets, "float64")
    if predictions.shape != targets.shape or predictions.ndim != 1 or predictions.size == 0:
        raise NlpkitError(f"predictions {predictions.shape} and targets {targets.shape} must both be [N]")
    return predictions, targets


def rmse(predictions, targets):
    predictions, targets = _regression_pair(predictions, targets)
    return float(np.sqrt(np.mean((predictions - targets) ** 2)))


def mae(predictions, targets):
    predictions, targets = _regression_pair(predictions, targets)
    return float(np.mean(np.abs(predictions - targets)))


def pearson(predictions, targets):
    """Pearson correlation; NaN when either side is constant (the correlation is undefined)."""
    predictions, targets = _regression_pair(predictions, targets)
    x, y = predictions - predictions.mean(), targets - targets.mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / norm) if norm > 0 else float("nan")


def average_ranks(values):
    """1-based ranks of `values`; tied values share the mean of the ranks they span."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0  # ranks first+1 .. first+count
    ranks = np.empty(values.shape[0])
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks


def spearman(predictions, targets):
    """Spearman correlation: Pearson of the average ranks (ties averaged)."""
    predictions, targets = _regression_pair(predictions, targets)
    return pearson(average_ranks(predictions), average_ranks(targets))


def regression_report(predictions, targets):
    return {"rmse": rmse(predictions, targets), "mae": mae(predictions, targets),
            "pearson": pearson(predictions, targets), "spearman": spearman(predictions, targets)}


def _tag_pairs(true_tags, predicted_tags):
    if len(true_tags) != len(predicted_tags) or any(len(t) != len(p) for t, p in zip(true_tags, predicted_tags)):
        raise NlpkitError("predicted and true tag sequences differ in number or length")
    return true_tags, predicted_tags


def token_accuracy(true_tags, predicted_tags):
    """Fraction of words (O included, as conlleval's accuracy) whose predicted tag is the true tag."""
    true_tags, predicted_tags = _tag_pairs(true_tags, predicted_tags)
    pairs = [(t, p) for ts, ps in zip(true_tags, predicted_tags) for t, p in zip(ts, ps)]
    return float(np.mean([t == p for t, p in pairs])) if pairs else 0.0


def entity_scores(true_tags, predicted_tags):
    """Entity-level precision, recall and F1 (exact spans, conlleval), overall and per entity type.

    Returns {"precision", "recall", "f1", "true_entities", "predicted_entities", "correct",
    "per_type": {type: the same keys}}.
    """
    true_tags, predicted_tags = _tag_pairs(true_tags, predicted_tags)
    true = {(n, *span) for n, tags in enumerate(true_tags) for span in entity_spans(tags)}
    predicted = {(n, *span) for n, tags in enumerate(predicted_tags) for span in entity_spans(tags)}
    scores = _entity_counts(true, predicted)
    kinds = sorted({span[1] for span in true | predicted})
    of_kind = lambda spans, kind: {span for span in spans if span[1] == kind}  # noqa: E731
    scores["per_type"] = {kind: _entity_counts(of_kind(true, kind), of_kind(predicted, kind)) for kind in kinds}
    return scores


def _entity_counts(true, predicted):
    correct = len(true & predicted)
    return {"precision": float(_ratio(correct, len(predicted))), "recall": float(_ratio(correct, len(true))),
            "f1": float(_f1(correct, len(predicted) - correct, len(true) - correct)),
            "true_entities": len(true), "predicted_entities": len(predicted), "correct": correct}


def token_classification_report(true_tags, predicted_tags):
    scores = entity_scores(true_tags, predicted_tags)
    scores["token_accuracy"] = token_accuracy(true_tags, predicted_tags)
    return scores
