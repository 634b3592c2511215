"""The one routine every layer test calls: the layer contract, checked the same way for all.

`check_layer(cls, init_kwargs, args=..., kwargs=..., static_kwargs=...)` runs:
  1. an eager call (and the expected output shapes, if given),
  2. a symbolic call on `keras.Input`s (a functional model),
  3. the config round trip: every constructor argument is in `get_config()` under its own name,
     and `from_config(get_config())` gives a layer with the same config,
  4. the `.keras` round trip: saved and loaded model gives outputs of the same structure (nested
     lists/dicts compared leaf by leaf, never truncated) and identical values,
  5. the weight counts: `expected_trainable` / `expected_non_trainable` weights (variables),
  6. one training step (SGD through `fit`) with a finite loss over every floating output, in which
     every trainable weight that receives a gradient changes; weights that receive no gradient are
     found separately (from the gradients themselves) and must number `expected_without_gradient`,
  7. mixed precision (`mixed_bfloat16`, `mixed_float16`): floating outputs finite and in the
     policy's compute dtype (or float32 where `float32_outputs` says so), every floating weight in
     its variable dtype (float32), the same weight counts.
It returns the eager outputs of step 1 for further checks.
"""

import json

import keras
import numpy as np


def _flat(outputs):
    return [np.asarray(keras.ops.convert_to_numpy(x)) for x in keras.tree.flatten(outputs)]


def _structure(outputs):
    """The nesting of `outputs` with leaves as None (lists and tuples alike: Keras returns either)."""
    if isinstance(outputs, dict):
        return {key: _structure(value) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [_structure(value) for value in outputs]
    return None


def assert_same_outputs(got, want, rtol=1e-6, atol=1e-6):
    """Nested outputs equal in structure (same nesting, lengths, dict keys) and leaf by leaf in value."""
    assert _structure(got) == _structure(want), f"outputs differ in structure: {_structure(got)} != {_structure(want)}"
    for index, (g, w) in enumerate(zip(_flat(got), _flat(want), strict=True)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {index} of the flattened outputs")


def _is_float(dtype):
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(dtype))


def _check_weight_counts(cls, layer, expected_trainable, expected_non_trainable, context=""):
    counts = (len(layer.trainable_weights), len(layer.non_trainable_weights))
    expected = (expected_trainable, expected_non_trainable)
    for got, want, what in zip(counts, expected, ("trainable", "non-trainable")):
        if want is not None:
            names = [w.path for w in (layer.trainable_weights if what == "trainable" else layer.non_trainable_weights)]
            assert got == want, f"{cls.__name__}{context}: {got} {what} weights, expected {want}: {names}"


def _config_json(layer):
    return json.dumps(keras.saving.serialize_keras_object(layer.get_config()), sort_keys=True, default=str)


def _check_config(cls, layer, init_kwargs, custom_objects):
    config = layer.get_config()
    for name in init_kwargs:
        assert name in config, f"{cls.__name__}.get_config() lacks constructor argument '{name}'"
    with keras.saving.custom_object_scope(custom_objects or {}):
        rebuilt = cls.from_config(config)
    assert _config_json(rebuilt) == _config_json(layer), f"{cls.__name__}: config does not round-trip"


def _functional_model(layer, args, kwargs, static_kwargs):
    sym_args = [keras.Input(shape=a.shape[1:], batch_size=None, dtype=str(a.dtype)) for a in args]
    sym_kwargs = {k: keras.Input(shape=v.shape[1:], dtype=str(v.dtype), name=k) for k, v in kwargs.items()}
    outputs = layer(*sym_args, **sym_kwargs, **static_kwargs)
    return keras.Model(inputs=[*sym_args, *sym_kwargs.values()], outputs=outputs)


def _check_saving(model, feed, tmp_path, custom_objects):
    expected = model(feed, training=False)
    path = str(tmp_path / "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, custom_objects=custom_objects)
    assert_same_outputs(loaded(feed, training=False), expected)


def _loss(outputs):
    """Sum over every floating output of its mean square (float32), weighted unevenly along the last
    axis: a plain mean square of a layer-normalised output is constant, and would send no gradient."""
    total = 0.0
    for output in keras.tree.flatten(outputs):
        if _is_float(output.dtype):
            square = keras.ops.square(keras.ops.cast(output, "float32"))
            if len(output.shape) and output.shape[-1] is not None:
                square = square * keras.ops.linspace(0.5, 1.5, output.shape[-1])
            total = total + keras.ops.mean(square)
    return total


def _gradients(model, feed):
    """Gradient of `_loss` for each trainable weight, as NumPy (None where none flows, under TensorFlow)."""
    if keras.backend.backend() == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            outputs, _ = model.stateless_call(trainable, non_trainable, feed, training=True)
            return _loss(outputs)

        # Compiled once as a whole: op by op, every op of the backward pass would be compiled on its own.
        grads = jax.jit(jax.grad(loss))([v.value for v in model.trainable_variables])
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = _loss(model(feed, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
    return [None if g is None else keras.ops.convert_to_numpy(g) for g in grads]


def _check_training_step(cls, model, feed, expected_without_gradient):
    if not model.trainable_weights:
        return
    gradients = _gradients(model, feed)
    without = [w.path for w, g in zip(model.trainable_weights, gradients, strict=True) if g is None or not np.any(g)]
    assert len(without) == expected_without_gradient, (
        f"{cls.__name__}: {len(without)} trainable weights receive no gradient, expected {expected_without_gradient}: {without}"
    )
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    loss_model = keras.Model(model.inputs, _loss(model.outputs))
    loss_model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=lambda y_true, y_pred: y_pred)
    history = loss_model.fit(feed, np.zeros((feed[0].shape[0],), "float32"), epochs=1, batch_size=feed[0].shape[0], verbose=0)
    assert np.isfinite(history.history["loss"][0]), "training step gave a non-finite loss"
    unchanged = [
        w.path
        for w, b in zip(model.trainable_weights, before, strict=True)
        if w.path not in without and np.array_equal(b, keras.ops.convert_to_numpy(w))
    ]
    assert not unchanged, f"{cls.__name__}: weights with a gradient did not change in the training step: {unchanged}"


def _mixed_policies():
    # Under JAX every eager call compiles its ops afresh; the float16 path differs from bfloat16
    # only in dtype and is covered by the TensorFlow run, so the JAX run checks bfloat16 alone.
    return ("mixed_bfloat16",) if keras.backend.backend() == "jax" else ("mixed_bfloat16", "mixed_float16")


def _check_mixed_precision(cls, init_kwargs, args, kwargs, static_kwargs, counts, float32_outputs):
    for policy in _mixed_policies():
        layer = cls(**init_kwargs, dtype=policy)
        outputs = layer(*args, **kwargs, **static_kwargs)
        compute, variable = layer.dtype_policy.compute_dtype, layer.dtype_policy.variable_dtype
        for index, out in enumerate(keras.tree.flatten(outputs)):
            dtype = keras.backend.standardize_dtype(out.dtype)
            if not _is_float(dtype):
                continue
            want = "float32" if index in float32_outputs else compute
            assert dtype == want, f"{cls.__name__} under {policy}: output {index} is {dtype}, expected {want}"
            values = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
            assert np.all(np.isfinite(values)), f"{cls.__name__} under {policy}: output {index} is not finite"
        wrong = [f"{w.path} ({w.dtype})" for w in layer.weights if _is_float(w.dtype) and w.dtype != variable]
        assert not wrong, f"{cls.__name__} under {policy}: weights not in the variable dtype {variable}: {wrong}"
        _check_weight_counts(cls, layer, *counts, context=f" under {policy}")


def check_layer(
    cls,
    init_kwargs,
    *,
    args,
    kwargs=None,
    static_kwargs=None,
    tmp_path,
    expected_shapes=None,
    expected_trainable=None,
    expected_non_trainable=None,
    expected_without_gradient=0,
    float32_outputs=(),
    train=True,
    mixed_precision=True,
    custom_objects=None,
):
    """Run the layer contract on `cls(**init_kwargs)` called as `layer(*args, **kwargs, **static_kwargs)`.

    args/kwargs hold NumPy arrays (tensors); static_kwargs holds Python values (flags, ints).
    expected_shapes: list of shapes of the flattened outputs (checked on the eager call).
    expected_trainable / expected_non_trainable: numbers of weights (variables) after the call,
      counted by hand in the test (None: not checked).
    expected_without_gradient: how many trainable weights genuinely receive no gradient from the
      outputs (found from the gradients, never excused by name).
    float32_outputs: indices of flattened outputs that stay float32 under mixed precision.
    """
    kwargs = kwargs or {}
    static_kwargs = static_kwargs or {}
    layer = cls(**init_kwargs)
    eager = layer(*args, **kwargs, **static_kwargs)
    if expected_shapes is not None:
        assert [tuple(o.shape) for o in _flat(eager)] == [tuple(s) for s in expected_shapes]

    counts = (expected_trainable, expected_non_trainable)
    _check_weight_counts(cls, layer, *counts)
    _check_config(cls, layer, init_kwargs, custom_objects)
    model = _functional_model(cls(**init_kwargs), args, kwargs, static_kwargs)
    feed = [*args, *kwargs.values()]
    _check_saving(model, feed, tmp_path, custom_objects)
    if train:
        _check_training_step(cls, model, feed, expected_without_gradient)
    if mixed_precision:
        _check_mixed_precision(cls, init_kwargs, args, kwargs, static_kwargs, counts, tuple(float32_outputs))
    return eager
