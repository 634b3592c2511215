"""AdamW + warm-up/decay schedule against closed forms and a NumPy AdamW written here."""

import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.training.optimization import WarmupPolynomialDecay, create_optimizer

rng = np.random.default_rng(0)


def _closed_form(step, peak, total, warmup, end, power):
    if step < warmup:
        return peak * step / warmup
    progress = min(step - warmup, total - warmup) / (total - warmup)
    return (peak - end) * (1 - progress) ** power + end


@pytest.mark.parametrize("power,end", [(1.0, 0.0), (2.0, 1e-5), (0.5, 0.0)])
def test_schedule_matches_closed_form(power, end):
    schedule = WarmupPolynomialDecay(1e-3, total_steps=100, warmup_steps=10, end_learning_rate=end, power=power)
    for step in [0, 1, 5, 9, 10, 11, 37, 55, 99, 100, 250]:
        want = _closed_form(step, 1e-3, 100, 10, end, power)
        assert abs(float(schedule(step)) - want) < 1e-9, step


def test_schedule_without_warmup_and_serialisation():
    schedule = WarmupPolynomialDecay(2e-4, total_steps=50)
    assert abs(float(schedule(0)) - 2e-4) < 1e-10 and abs(float(schedule(25)) - 1e-4) < 1e-10
    rebuilt = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(rebuilt, WarmupPolynomialDecay) and rebuilt.get_config() == schedule.get_config()


def test_schedule_rejects_bad_steps():
    with pytest.raises(NlpkitError, match="warmup_steps"):
        WarmupPolynomialDecay(1e-3, total_steps=10, warmup_steps=20)


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.LayerNormalization()])
    return model


def _by_name(model):
    return {v.path: v for v in model.trainable_variables}


def test_zero_gradient_decays_only_kernels():
    model = _tiny_model()
    before = {path: np.array(v) for path, v in _by_name(model).items()}
    optimizer = create_optimizer(model.trainable_variables, learning_rate=0.1, total_steps=10, weight_decay=0.5)
    optimizer.apply([np.zeros(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    for path, variable in _by_name(model).items():
        # Adam's own step is 0 for a zero gradient, so only decoupled decay can move a variable:
        # kernel <- kernel * (1 - lr * wd); biases and layer-norm gamma/beta stay put.
        factor = 1 - 0.1 * 0.5 if path.endswith("kernel") else 1.0
        np.testing.assert_allclose(np.array(variable), before[path] * factor, rtol=1e-6, err_msg=path)


def _numpy_adamw(params, grad_steps, lrs, wd, decayed, clip, b1=0.9, b2=0.999, eps=1e-6):
    """Reference AdamW (decoupled decay, then Adam with bias correction) with global-norm clipping."""
    params = [p.astype(np.float64) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, (grads, lr) in enumerate(zip(grad_steps, lrs), start=1):
        norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
        scale = min(1.0, clip / norm) if clip else 1.0
        for i, g in enumerate(grads):
            g = g * scale
            if decayed[i]:
                params[i] -= params[i] * wd * lr
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
            params[i] -= alpha * m[i] / (np.sqrt(v[i]) + eps)
    return params


def test_steps_match_numpy_adamw_with_schedule_decay_and_clipping():
    model = _tiny_model()
    variables = model.trainable_variables
    start = [np.array(v) for v in variables]
    # Gradients of very different sizes, so clipping (norm 1) changes Adam's result.
    grad_steps = [[(rng.normal(size=v.shape) * s).astype("float32") for v in variables] for s in (30.0, 0.05, 4.0)]
    assert all(np.sqrt(sum((g**2).sum() for g in step)) > 1.0 for step in (grad_steps[0], grad_steps[2]))
    optimizer = create_optimizer(
        variables, learning_rate=1e-2, total_steps=5, warmup_steps=2, weight_decay=0.1, global_clipnorm=1.0
    )
    for grads in grad_steps:
        optimizer.apply(grads, variables)
    lrs = [_closed_form(step, 1e-2, 5, 2, 0.0, 1.0) for step in range(3)]
    decayed = [v.path.endswith("kernel") for v in variables]
    want = _numpy_adamw(start, grad_steps, lrs, 0.1, decayed, clip=1.0)
    for variable, expected in zip(variables, want):
        np.testing.assert_allclose(np.array(variable), expected, atol=1e-5, err_msg=variable.path)
    unclipped = _numpy_adamw(start, grad_steps, lrs, 0.1, decayed, clip=None)
    assert max(np.abs(a - b).max() for a, b in zip(want, unclipped)) > 1e-4  # clipping mattered


def _linear_grads(kernel, bias, x, y):
    """Closed-form gradients of mean((x @ kernel + bias - y) ** 2) over all elements."""
    residual = x @ kernel + bias - y
    scale = 2.0 / residual.size
    return [(scale * x.T @ residual).astype("float32"), (scale * residual.sum(0)).astype("float32")]


def test_accumulation_equals_one_large_batch():
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    kernel0, bias0 = rng.normal(size=(3, 2)), rng.normal(size=(2,))
    results = []
    for accumulate, micro_batches in [(1, [slice(0, 8)]), (2, [slice(0, 4), slice(4, 8)])]:
        kernel = keras.Variable(kernel0.astype("float32"), name="kernel")
        bias = keras.Variable(bias0.astype("float32"), name="bias")
        optimizer = create_optimizer(
            [kernel, bias], learning_rate=0.05, total_steps=10, gradient_accumulation_steps=accumulate
        )
        for _ in range(3):  # three updates
            for rows in micro_batches:
                grads = _linear_grads(np.array(kernel), np.array(bias), x[rows], y[rows])
                optimizer.apply(grads, [kernel, bias])
        assert int(optimizer.iterations) == 3  # the schedule counts updates, not micro-batches
        results.append((np.array(kernel), np.array(bias)))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-6)
    assert np.abs(results[0][0] - kernel0).max() > 1e-3  # the updates did something


def test_loss_scaling_wraps_and_bad_accumulation():
    model = _tiny_model()
    optimizer = create_optimizer(model.trainable_variables, learning_rate=1e-3, total_steps=10, loss_scaling=True)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    with pytest.raises(NlpkitError, match="accumulation"):
        create_optimizer([], learning_rate=1e-3, total_steps=10, gradient_accumulation_steps=0)
