import keras
import numpy as np

from nlpkit.layers.normalization import RMSNorm
from tests.layers.harness import check_layer

rng = np.random.default_rng(18)


def test_contract(tmp_path):
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    check_layer(
        RMSNorm,
        dict(epsilon=1e-5),
        args=[x],
        tmp_path=tmp_path,
        expected_shapes=[(2, 5, 8)],
        expected_trainable=1,  # scale
        expected_non_trainable=0,
    )


def test_matches_numpy():
    x = rng.normal(size=(2, 5, 8)).astype("float32") * 3.0
    layer = RMSNorm(epsilon=1e-3)
    layer.build(x.shape)
    scale = rng.normal(size=(1, 1, 8)).astype("float32")
    layer.scale.assign(scale)
    want = x / np.sqrt(np.mean(np.square(x.astype(np.float64)), axis=-1, keepdims=True) + 1e-3) * scale
    np.testing.assert_allclose(np.asarray(layer(x)), want, atol=1e-5)


def test_computes_in_float32_under_mixed_precision():
    x = rng.normal(size=(2, 3, 8)).astype("float32") * 100.0
    layer = RMSNorm(dtype="mixed_bfloat16")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert layer.scale.dtype == "float32"
    want = x / np.sqrt(np.mean(np.square(x.astype(np.float64)), axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(keras.ops.cast(out, "float32")), want, rtol=2e-2, atol=2e-2)
