"""The layer harness fails where it should: each check caught on a layer broken on purpose."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.layers.harness import assert_same_outputs, check_layer

rng = np.random.default_rng(0)
X = rng.normal(size=(3, 4)).astype("float32")


@keras.saving.register_keras_serializable(package="nlpkit_test_harness")
class Toy(keras.layers.Layer):
    """Dense (+ an optional scaled second output), with one of several bugs switched on by `bug`:

    "bfloat16_weights": the sub-layer gets `dtype=self.compute_dtype`, so under mixed precision its
      variables are half-precision instead of float32.
    "float32_output": the output is cast to float32 under mixed precision.
    "unused_weight": a trainable weight that nothing uses (gets no gradient).
    "frozen_weight": a used weight that a constraint puts back after every update.
    """

    def __init__(self, bug=None, two_outputs=False, **kwargs):
        super().__init__(**kwargs)
        self.bug = bug
        self.two_outputs = two_outputs
        dtype = self.compute_dtype if bug == "bfloat16_weights" else self.dtype_policy
        self.dense = keras.layers.Dense(2, dtype=dtype, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")
        if self.bug == "unused_weight":
            self.unused = self.add_weight(name="unused", shape=(2,), initializer="ones")
        if self.bug == "frozen_weight":
            self.frozen = self.add_weight(name="frozen", shape=(), initializer="zeros", constraint=lambda w: 0.0 * w)

    def call(self, x):
        y = self.dense(x) * ops.cast(self.scale, self.compute_dtype)
        if self.bug == "frozen_weight":
            y = y + ops.cast(self.frozen, self.compute_dtype)
        if self.bug == "float32_output":
            y = ops.cast(y, "float32")
        return [y, 2.0 * y] if self.two_outputs else y

    def get_config(self):
        return {**super().get_config(), "bug": self.bug, "two_outputs": self.two_outputs}


def _check(tmp_path, bug=None, **kwargs):
    counts = {"expected_trainable": 3, "expected_non_trainable": 0, **kwargs}
    return check_layer(Toy, dict(bug=bug), args=[X], tmp_path=tmp_path, **counts)


def test_a_sound_layer_passes(tmp_path):
    _check(tmp_path)  # dense kernel and bias, the scale


def test_wrong_weight_counts_are_caught(tmp_path):
    with pytest.raises(AssertionError, match=r"Toy: 3 trainable weights, expected 2"):
        _check(tmp_path, expected_trainable=2)
    with pytest.raises(AssertionError, match=r"Toy: 0 non-trainable weights, expected 1"):
        _check(tmp_path, expected_non_trainable=1)


def test_half_precision_weights_under_mixed_precision_are_caught(tmp_path):
    with pytest.raises(AssertionError, match=r"under mixed_bfloat16: weights not in the variable dtype float32: .*dense/kernel \(bfloat16\)"):
        _check(tmp_path, bug="bfloat16_weights")


def test_an_output_in_the_wrong_dtype_under_mixed_precision_is_caught(tmp_path):
    with pytest.raises(AssertionError, match=r"under mixed_bfloat16: output 0 is float32, expected bfloat16"):
        _check(tmp_path, bug="float32_output")
    _check(tmp_path, bug="float32_output", float32_outputs=(0,))  # where the caller says it is meant


def test_a_weight_without_gradient_is_found_from_the_gradients(tmp_path):
    with pytest.raises(AssertionError, match=r"Toy: 1 trainable weights receive no gradient, expected 0: \[.*unused'\]"):
        _check(tmp_path, bug="unused_weight", expected_trainable=4)
    _check(tmp_path, bug="unused_weight", expected_trainable=4, expected_without_gradient=1)


def test_a_weight_with_a_gradient_that_does_not_change_is_caught(tmp_path):
    with pytest.raises(AssertionError, match=r"weights with a gradient did not change in the training step: \[.*frozen'\]"):
        _check(tmp_path, bug="frozen_weight", expected_trainable=4)


def test_every_output_sends_gradients(tmp_path):
    """With two outputs, both enter the loss (the old harness trained on the first output alone)."""
    check_layer(Toy, dict(two_outputs=True), args=[X], tmp_path=tmp_path, expected_trainable=3, expected_non_trainable=0)


def test_outputs_are_compared_by_structure_and_never_truncated():
    a, b = np.ones((2,)), np.zeros((2,))
    assert_same_outputs([a, b], (a, b))  # a list and a tuple of the same leaves are the same outputs
    with pytest.raises(AssertionError, match="differ in structure"):
        assert_same_outputs([a], [a, b])  # zip would have compared the first pair only
    with pytest.raises(AssertionError, match="differ in structure"):
        assert_same_outputs({"x": a, "y": b}, {"x": a, "z": b})
    with pytest.raises(AssertionError, match="output 1 of the flattened outputs"):
        assert_same_outputs([a, b], [a, a])
