"""Post-hoc calibration fitted on the validation split (`nlpkit finetune --calibrate`).

Classification head: a temperature T, probabilities softmax(logits / T). SNGP head: the mean-field
factor lambda >= 0, probabilities softmax(logits / sqrt(1 + lambda * variance)). Either is the
minimiser of the validation negative log-likelihood, found by a bounded 1-D search in NumPy: every
point of a log-spaced grid over the bounds, then golden-section refinement between the grid
neighbours of the best point (NLL in 1/T is convex; the grid keeps the search safe where an
objective is flat or not unimodal). The probabilities come from `nlpkit.models.classifier.
calibrated_logits`, the function the model itself applies at inference.
"""

import math

import numpy as np

from nlpkit.training import metrics

TEMPERATURE_BOUNDS = (0.05, 20.0)
# lambda * variance is what matters: the grid spans these multiples of 1 / mean variance, and 0.
MEAN_FIELD_SPAN = (1e-4, 1e4)
GRID_POINTS = 49
TOLERANCE = 1e-6  # relative width at which the golden-section search stops
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def minimise_on_grid(objective, grid, tolerance=TOLERANCE):
    """(x, objective(x)) minimising `objective` over [grid[0], grid[-1]]: the best of the (increasing)
    grid, refined by golden-section search between its two neighbours."""
    grid = np.asarray(grid, dtype=np.float64)
    values = np.array([objective(x) for x in grid])
    best = int(np.argmin(values))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    x_best, f_best = grid[best], values[best]
    a, b = low + (1 - _GOLDEN) * (high - low), low + _GOLDEN * (high - low)
    fa, fb = objective(a), objective(b)
    while high - low > tolerance * high:  # high > 0: the grids are increasing and start at >= 0
        if fa <= fb:
            high, b, fb = b, a, fa
            a = low + (1 - _GOLDEN) * (high - low)
            fa = objective(a)
        else:
            low, a, fa = a, b, fb
            b = low + _GOLDEN * (high - low)
            fb = objective(b)
    for x, f in ((a, fa), (b, fb)):
        if f < f_best:
            x_best, f_best = x, f
    return float(x_best), float(f_best)


def _nll(logits, variance, labels, **calibration):
    import keras

    from nlpkit.models.classifier import calibrated_logits

    probabilities = keras.ops.softmax(calibrated_logits(logits, variance, **calibration), axis=-1)
    return metrics.negative_log_likelihood(keras.ops.convert_to_numpy(probabilities), labels)


def fit_temperature(logits, labels):
    """(T, validation NLL at T) minimising the NLL of softmax(logits / T) over `TEMPERATURE_BOUNDS`."""
    grid = np.geomspace(*TEMPERATURE_BOUNDS, GRID_POINTS)
    return minimise_on_grid(lambda t: _nll(logits, None, labels, temperature=t), grid)


def fit_mean_field_factor(logits, variance, labels):
    """(lambda, validation NLL at lambda) minimising the NLL of the mean-field probabilities, lambda >= 0."""
    scale = 1.0 / max(float(np.mean(variance)), 1e-12)
    grid = np.concatenate([[0.0], np.geomspace(*MEAN_FIELD_SPAN, GRID_POINTS) * scale])
    return minimise_on_grid(lambda lam: _nll(logits, variance, labels, mean_field_factor=lam), grid)


def calibrate(model, head_outputs, labels):
    """Fit the calibration of `model`'s head on validation `head_outputs` (NumPy) and `labels`.

    Returns a report dict: `parameter`, `value`, `examples`, and `nll` / `ece` `{"raw", "calibrated"}`.
    The fitted value is kept only if it lowers the validation NLL; `model` is changed in place
    (its `temperature` or `mean_field_factor`, which its config and model directory record).
    """
    import keras

    from nlpkit.models.classifier import UNCALIBRATED

    logits, variance = head_outputs["logits"], head_outputs.get("variance")
    raw_nll = _nll(logits, variance, labels, **UNCALIBRATED)
    if variance is None:
        parameter, (value, nll) = "temperature", fit_temperature(logits, labels)
    else:
        parameter, (value, nll) = "mean_field_factor", fit_mean_field_factor(logits, variance, labels)
    if not nll < raw_nll:
        value, nll = UNCALIBRATED[parameter], raw_nll
    setattr(model, parameter, value)

    def ece(calibration):
        outputs = model.outputs_from_head(head_outputs, calibration)
        return metrics.expected_calibration_error(keras.ops.convert_to_numpy(outputs["probabilities"]), labels)

    return {"parameter": parameter, "value": value, "examples": int(len(labels)),
            "nll": {"raw": raw_nll, "calibrated": nll},
            "ece": {"raw": ece(UNCALIBRATED), "calibrated": ece({parameter: value})}}


def calibrate_thresholds(model, inputs, targets, encoding, batch_size=64):
    """Multi-label: per-label decision thresholds fitted on validation `inputs` / multi-hot `targets`
    (`nlpkit.training.task_metrics.fit_thresholds`, in `MultiLabelTask.calibrate`), set on `model`.

    Returns (report, encoding with the thresholds): the report names each label's threshold and the
    validation micro-F1 at 0.5 and at the fitted thresholds.
    """
    from nlpkit.training.task_metrics import micro_f1
    from nlpkit.training.tasks import Prepared, get_task

    task = get_task("multi-label")
    prepared = Prepared(inputs, targets)
    probabilities = task.outputs(model, prepared, batch_size)["probabilities"]
    fitted = task.calibrate({"probabilities": probabilities}, prepared, encoding)
    model.thresholds = list(fitted.thresholds)
    f1 = {"raw": micro_f1(probabilities >= 0.5, targets),
          "calibrated": micro_f1(probabilities >= np.asarray(fitted.thresholds)[None, :], targets)}
    return {"parameter": "thresholds", "value": dict(zip(fitted.names, fitted.thresholds)),
            "examples": int(len(targets)), "micro_f1": f1}, fitted
