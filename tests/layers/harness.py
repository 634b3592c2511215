"""The one routine every layer test calls: the layer contract, checked the same way for all.

`check_layer(cls, init_kwargs, args=..., kwargs=..., static_kwargs=...)` runs:
  1. an eager call (and the expected output shapes, if given),
  2. a symbolic call on `keras.Input`s (a functional model),
  3. the config round trip: every constructor argument is in `get_config()` under its own name,
     and `from_config(get_config())` gives a layer with the same config,
  4. the `.keras` round trip: saved and loaded model gives identical outputs,
  5. one training step that changes the trainable weights and keeps the loss finite,
  6. mixed precision (`mixed_bfloat16`, `mixed_float16`): finite outputs.
It returns the eager outputs of step 1 for further checks.
"""

import json

import keras
import numpy as np


def _flat(outputs):
    return [np.asarray(keras.ops.convert_to_numpy(x)) for x in keras.tree.flatten(outputs)]


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
    expected = _flat(model(feed, training=False))
    path = str(tmp_path / "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, custom_objects=custom_objects)
    for want, got in zip(expected, _flat(loaded(feed, training=False))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _check_training_step(model, feed):
    if not model.trainable_weights:
        return
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    first_output = model.outputs[0]
    loss_model = keras.Model(model.inputs, keras.ops.mean(keras.ops.square(keras.ops.cast(first_output, "float32"))))
    loss_model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=lambda y_true, y_pred: y_pred)
    history = loss_model.fit(feed, np.zeros((feed[0].shape[0],), "float32"), epochs=1, batch_size=feed[0].shape[0], verbose=0)
    assert np.isfinite(history.history["loss"][0]), "training step gave a non-finite loss"
    changed = [not np.allclose(b, keras.ops.convert_to_numpy(w)) for b, w in zip(before, model.trainable_weights)]
    assert any(changed), "one training step changed no trainable weight"


def _mixed_policies():
    # Under JAX every eager call compiles its ops afresh; the float16 path differs from bfloat16
    # only in dtype and is covered by the TensorFlow run, so the JAX run checks bfloat16 alone.
    return ("mixed_bfloat16",) if keras.backend.backend() == "jax" else ("mixed_bfloat16", "mixed_float16")


def _check_mixed_precision(cls, init_kwargs, args, kwargs, static_kwargs):
    for policy in _mixed_policies():
        layer = cls(**init_kwargs, dtype=policy)
        outputs = layer(*args, **kwargs, **static_kwargs)
        for out in _flat(outputs):
            if np.issubdtype(out.dtype, np.floating) or out.dtype.name == "bfloat16":
                assert np.all(np.isfinite(out.astype("float32"))), f"{cls.__name__} under {policy}: non-finite output"


def check_layer(
    cls,
    init_kwargs,
    *,
    args,
    kwargs=None,
    static_kwargs=None,
    tmp_path,
    expected_shapes=None,
    train=True,
    mixed_precision=True,
    custom_objects=None,
):
    """Run the layer contract on `cls(**init_kwargs)` called as `layer(*args, **kwargs, **static_kwargs)`.

    args/kwargs hold NumPy arrays (tensors); static_kwargs holds Python values (flags, ints).
    expected_shapes: list of shapes of the flattened outputs (checked on the eager call).
    """
    kwargs = kwargs or {}
    static_kwargs = static_kwargs or {}
    layer = cls(**init_kwargs)
    eager = layer(*args, **kwargs, **static_kwargs)
    if expected_shapes is not None:
        assert [tuple(o.shape) for o in _flat(eager)] == [tuple(s) for s in expected_shapes]

    _check_config(cls, layer, init_kwargs, custom_objects)
    model = _functional_model(cls(**init_kwargs), args, kwargs, static_kwargs)
    feed = [*args, *kwargs.values()]
    _check_saving(model, feed, tmp_path, custom_objects)
    if train:
        _check_training_step(model, feed)
    if mixed_precision:
        _check_mixed_precision(cls, init_kwargs, args, kwargs, static_kwargs)
    return eager
