"""Post-hoc calibration: the fitted temperature / mean-field factor against a brute-force NumPy grid."""

import numpy as np
import pytest

from nlpkit.training.calibration import calibrate, fit_mean_field_factor, fit_temperature, minimise_on_grid


def _nll(logits, labels):
    """Mean NLL of softmax(logits), in float64 NumPy (the test's own reference)."""
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -np.mean(log_probs[np.arange(len(labels)), labels])


def _sample_labels(rng, logits):
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probs])


def _synthetic(num=2000, classes=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng, rng.normal(0.0, 2.0, size=(num, classes))


@pytest.mark.parametrize("true_temperature", [0.5, 3.0])
def test_temperature_is_the_nll_minimum_of_a_brute_force_grid(true_temperature):
    rng, true_logits = _synthetic()
    labels = _sample_labels(rng, true_logits)
    logits = (true_logits * true_temperature).astype("float32")  # over- (T > 1) or under-confident
    grid = np.geomspace(0.05, 20.0, 3000)  # neighbours 0.2 % apart
    values = [_nll(logits / t, labels) for t in grid]
    want = grid[int(np.argmin(values))]
    got, nll = fit_temperature(logits, labels)
    assert got == pytest.approx(want, rel=3e-3)
    assert nll == pytest.approx(min(values), abs=1e-5)
    assert got == pytest.approx(true_temperature, rel=0.15)  # and it recovers the truth


def test_mean_field_factor_is_the_nll_minimum_of_a_brute_force_grid():
    rng, logits = _synthetic(seed=1)
    variance = rng.uniform(0.0, 4.0, size=len(logits))
    true_factor = 1.5
    labels = _sample_labels(rng, logits / np.sqrt(1.0 + true_factor * variance)[:, None])
    grid = np.linspace(0.0, 10.0, 5001)
    values = [_nll(logits / np.sqrt(1.0 + lam * variance)[:, None], labels) for lam in grid]
    want = grid[int(np.argmin(values))]
    got, nll = fit_mean_field_factor(logits.astype("float32"), variance.astype("float32"), labels)
    assert got == pytest.approx(want, rel=5e-3, abs=1e-3)
    assert nll == pytest.approx(min(values), abs=1e-5)
    assert got == pytest.approx(true_factor, rel=0.3)


def test_mean_field_factor_stays_at_zero_when_confidence_is_right():
    rng, logits = _synthetic(seed=2)
    variance = rng.uniform(0.0, 4.0, size=len(logits))
    labels = _sample_labels(rng, logits * 1.5)  # even sharper than the logits: any lambda > 0 hurts
    got, nll = fit_mean_field_factor(logits.astype("float32"), variance.astype("float32"), labels)
    assert got < 1e-3
    assert nll == pytest.approx(_nll(logits, labels), abs=1e-5)


def test_bounded_search_finds_an_edge_minimum_and_a_non_unimodal_one():
    assert minimise_on_grid(lambda x: (x - 0.05) ** 2, np.geomspace(0.05, 20, 49))[0] == pytest.approx(0.05)
    # Two basins: the deeper one at 7 wins although golden-section alone, started over [0, 10], finds 2.
    bumpy = lambda x: min((x - 2.0) ** 2 + 0.5, (x - 7.0) ** 2)  # noqa: E731
    assert minimise_on_grid(bumpy, np.linspace(0, 10, 49))[0] == pytest.approx(7.0, abs=1e-5)


def test_calibrate_sets_the_model_and_keeps_raw_when_fitting_does_not_help():
    class Model:  # what `calibrate` reads: the head's calibration parameters and its output function
        temperature, mean_field_factor = 1.0, 0.3927

        def outputs_from_head(self, head, calibration=None):
            from nlpkit.models.classifier import TextClassifier

            return TextClassifier.outputs_from_head(self, head, calibration)

    rng, logits = _synthetic(seed=3)
    labels = _sample_labels(rng, logits)
    sharp = Model()
    report = calibrate(sharp, {"logits": (logits * 2).astype("float32")}, labels)
    assert report["parameter"] == "temperature" and sharp.temperature == report["value"] > 1.5
    assert report["nll"]["calibrated"] < report["nll"]["raw"] and report["ece"]["calibrated"] < report["ece"]["raw"]
    assert report["nll"]["raw"] == pytest.approx(_nll(logits * 2, labels), abs=1e-5)
    # All-zero logits: every temperature gives the same NLL, so none "helps" and T = 1 is kept.
    flat = Model()
    report = calibrate(flat, {"logits": np.zeros((4, 3), "float32")}, np.array([0, 1, 2, 0]))
    assert flat.temperature == 1.0 and report["value"] == 1.0
