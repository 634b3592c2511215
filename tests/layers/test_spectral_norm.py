import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_numpy

from nlpkit.errors import NlpkitError
from nlpkit.layers.spectral_norm import SpectralNormalization
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)


def _largest_singular_value(matrix):
    return np.linalg.svd(matrix, compute_uv=False)[0]


def _effective_dense_kernel(wrapper, input_dim):
    """The matrix the wrapped bias-free Dense applies: its output on the identity's rows."""
    return np.asarray(wrapper(np.eye(input_dim, dtype="float32"), training=False))


def _big_dense(units, stddev=3.0):
    return keras.layers.Dense(units, use_bias=False, kernel_initializer=keras.initializers.RandomNormal(stddev=stddev))


def test_contract_dense(tmp_path):
    x = rng.normal(size=(4, 3)).astype("float32")
    check_layer(
        SpectralNormalization,
        dict(layer=keras.layers.Dense(5, activation="tanh"), iteration=2, norm_multiplier=0.9, inhere_layer_name=False),
        args=[x],
        tmp_path=tmp_path,
        expected_shapes=[(4, 5)],
        expected_trainable=2,
        expected_non_trainable=1,  # the singular-vector estimate
        # the wrapped Dense is made here under the float32 policy; the wrapper returns its output as is
        float32_outputs=(0,),
    )


def test_contract_einsum_dense(tmp_path):
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    inner = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 5), bias_axes="de")
    check_layer(
        SpectralNormalization,
        dict(layer=inner, iteration=1, norm_multiplier=0.5),
        args=[x],
        tmp_path=tmp_path,
        expected_shapes=[(2, 4, 2, 5)],
        expected_trainable=2,
        expected_non_trainable=1,
        float32_outputs=(0,),
    )


def test_power_iterations_bound_the_largest_singular_value():
    wrapper = SpectralNormalization(_big_dense(6), iteration=20, norm_multiplier=0.9)
    wrapper.build((None, 5))
    raw_kernel = to_numpy(wrapper.layer.kernel)
    assert _largest_singular_value(raw_kernel) > 2.0  # the bound has work to do
    for _ in range(3):
        wrapper(rng.normal(size=(2, 5)).astype("float32"), training=True)

    effective = _effective_dense_kernel(wrapper, 5)
    assert abs(_largest_singular_value(effective) - 0.9) < 1e-5
    # Same direction as the trained kernel, which itself is left untouched.
    np.testing.assert_allclose(effective, raw_kernel * 0.9 / _largest_singular_value(raw_kernel), atol=1e-5)
    np.testing.assert_array_equal(to_numpy(wrapper.layer.kernel), raw_kernel)


def test_small_norm_is_left_unchanged():
    small = keras.initializers.RandomNormal(stddev=0.01)
    dense = keras.layers.Dense(4, kernel_initializer=small, bias_initializer="ones")
    wrapper = SpectralNormalization(dense, iteration=5, norm_multiplier=0.95)
    x = rng.normal(size=(3, 6)).astype("float32")
    out = np.asarray(wrapper(x, training=True))
    assert _largest_singular_value(to_numpy(dense.kernel)) < 0.95
    np.testing.assert_allclose(out, x @ to_numpy(dense.kernel) + to_numpy(dense.bias), atol=1e-6)


@pytest.mark.parametrize("equation", ["abc,cde->abde", "abc,dce->abde"])
def test_einsum_kernel_bound_uses_input_by_output_matrix(equation):
    big = keras.initializers.RandomNormal(stddev=3.0)
    inner = keras.layers.EinsumDense(equation, output_shape=(None, 3, 4), kernel_initializer=big)
    wrapper = SpectralNormalization(inner, iteration=30, norm_multiplier=0.8)
    for _ in range(2):
        wrapper(rng.normal(size=(2, 1, 5)).astype("float32"), training=True)
    # Row i of the identity as a length-1 sequence gives the map's image of basis vector i.
    effective = np.asarray(wrapper(np.eye(5, dtype="float32")[:, None, :], training=False)).reshape(5, 12)
    assert abs(_largest_singular_value(effective) - 0.8) < 1e-5


def test_u_is_updated_in_training_only():
    wrapper = SpectralNormalization(_big_dense(4), iteration=1)
    x = rng.normal(size=(2, 3)).astype("float32")
    wrapper(x, training=False)
    before = to_numpy(wrapper.u)
    wrapper(x, training=False)
    np.testing.assert_array_equal(to_numpy(wrapper.u), before)
    wrapper(x, training=True)
    assert not np.allclose(to_numpy(wrapper.u), before)


def test_inhere_layer_name():
    dense = keras.layers.Dense(2, name="pooler")
    assert SpectralNormalization(dense, inhere_layer_name=True).name == "pooler"
    assert SpectralNormalization(dense, inhere_layer_name=True, name="own").name == "own"


@pytest.mark.parametrize(
    "kwargs",
    [dict(layer=keras.layers.Embedding(5, 2)), dict(iteration=0), dict(norm_multiplier=0.0)],
)
def test_bad_arguments_raise(kwargs):
    kwargs = {"layer": keras.layers.Dense(2), **kwargs}
    with pytest.raises(NlpkitError):
        SpectralNormalization(**kwargs)
