"""SNGP on several classes against NumPy: posterior variance, mean-field probabilities, random features,
and a separable 6-class toy that must end confident and calibrated (issue #17: flat probabilities)."""

import math

import keras
import numpy as np
from keras.ops import convert_to_numpy as to_numpy

from nlpkit.layers.gaussian_process import (
    GaussianProcessClassificationHead,
    RandomFeatureGaussianProcess,
    ResetCovarianceCallback,
    mean_field_logits,
)

rng = np.random.default_rng(7)
K, D, M = 6, 5, 32


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _features(gp, x, scaled):
    """phi(x) = s cos(x W / sqrt(l) + b), s = sqrt(2/M) or 1, from the layer's fixed weights."""
    scale = math.sqrt(2.0 / gp.num_inducing) if scaled else 1.0
    kernel, bias = to_numpy(gp.random_kernel).astype("float64"), to_numpy(gp.random_bias).astype("float64")
    return scale * np.cos(x.astype("float64") @ kernel / math.sqrt(gp.gp_kernel_scale) + bias)


def test_head_variance_and_mean_field_probabilities_equal_numpy_six_classes():
    ridge, factor = 0.7, 0.45
    head = GaussianProcessClassificationHead(
        0, K, num_inducing=M, gp_kernel_scale=2.0, gp_cov_momentum=-1.0, gp_cov_ridge_penalty=ridge,
        return_random_features=True,
    )
    batches = [rng.normal(size=(8, 1, D)).astype("float32") for _ in range(3)]
    for x in batches:  # training calls accumulate the precision matrix
        head(x, training=True)
    gp = head.out_proj
    precision = ridge * np.eye(M)
    for x in batches:
        phi = _features(gp, x[:, 0], scaled=False)  # the head's default: unscaled features
        precision += phi.T @ phi

    x_test = rng.normal(size=(7, 1, D)).astype("float32")
    logits, covariance, features = head(x_test, training=False, return_covariance=True)
    phi = _features(gp, x_test[:, 0], scaled=False)
    want_logits = phi @ to_numpy(gp.output_kernel).astype("float64")
    want_variance = ridge * np.einsum("bm,mn,bn->b", phi, np.linalg.inv(precision), phi)
    np.testing.assert_allclose(to_numpy(features), phi, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(logits), want_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.diag(to_numpy(covariance)), want_variance, rtol=1e-3, atol=1e-5)

    want_probs = _softmax(want_logits / np.sqrt(1.0 + factor * want_variance)[:, None])
    probs = _softmax(to_numpy(mean_field_logits(logits, covariance, factor)).astype("float64"))
    np.testing.assert_allclose(probs, want_probs, atol=1e-5)
    # Model Garden's `temperature`: the head applies the same mean field in inference calls.
    tempered = GaussianProcessClassificationHead.from_config({**head.get_config(), "temperature": factor})
    tempered(x_test)
    tempered.set_weights(head.get_weights())
    np.testing.assert_allclose(_softmax(to_numpy(tempered(x_test)[0]).astype("float64")), want_probs, atol=1e-5)


def test_return_random_features_equal_numpy():
    for scaled, activation in ((True, None), (False, "relu")):
        gp = RandomFeatureGaussianProcess(
            K, num_inducing=M, gp_kernel_scale=3.0, scale_random_features=scaled, return_gp_cov=False,
            return_random_features=True, custom_random_features_activation=activation,
        )
        x = rng.normal(size=(4, D)).astype("float32")
        logits, features = gp(x)
        kernel, bias = to_numpy(gp.random_kernel), to_numpy(gp.random_bias)
        pre = x @ kernel / math.sqrt(3.0) + bias
        want = np.cos(pre) * math.sqrt(2.0 / M) if scaled else np.maximum(pre, 0.0)
        np.testing.assert_allclose(to_numpy(features), want, atol=1e-5)
        np.testing.assert_allclose(to_numpy(logits), want @ to_numpy(gp.output_kernel), atol=1e-4)


# --- the separable toy ---------------------------------------------------------------------------


def _blobs(per_class, centers, spread=0.3):
    x = np.concatenate([rng.normal(c, spread, (per_class, centers.shape[1])) for c in centers])
    y = np.repeat(np.arange(len(centers)), per_class)
    order = rng.permutation(len(y))
    return x[order].astype("float32")[:, None, :], y[order].astype("int32")


def _ece(probabilities, labels, bins=15):
    confidence, correct = probabilities.max(1), probabilities.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    return sum(
        np.mean(inside) * abs(correct[inside].mean() - confidence[inside].mean())
        for inside in ((confidence > lo) & (confidence <= hi) for lo, hi in zip(edges[:-1], edges[1:]))
        if inside.any()
    )


def test_separable_six_class_toy_is_confident_and_calibrated():
    # Six well-separated clusters, a fine-tuning-like optimiser (Adam at 2e-3, 3 epochs). With the
    # old sqrt(2/M) feature scale |phi| = 1 bounds the logits by |beta| and the top probability
    # stayed near 0.4: the flat probabilities of issue #17. The clusters are 6 sqrt(2) apart, a few
    # of the default length scales sqrt(10) (at 3 sqrt(2) they overlap in the kernel's view).
    keras.utils.set_random_seed(1)
    centers = 6.0 * np.eye(K, 8)
    x, y = _blobs(100, centers)
    head = GaussianProcessClassificationHead(16, K, gp_cov_momentum=-1.0, num_inducing=256)
    inputs = keras.Input((1, 8))
    model = keras.Model(inputs, head(inputs))
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[ResetCovarianceCallback()])

    x_test, y_test = _blobs(40, centers)
    logits, covariance = head(x_test, training=False, return_covariance=True)
    probs = _softmax(to_numpy(mean_field_logits(logits, covariance)).astype("float64"))
    assert np.mean(probs.argmax(1) == y_test) == 1.0
    # Confident: nearly every in-distribution point at >= 0.9 (a point drawn far out in its
    # cluster's tail may have more variance).
    assert np.mean(probs.max(1) >= 0.9) >= 0.95
    assert np.mean(probs.max(1)) >= 0.95
    assert _ece(probs, y_test) <= 0.05
    # Far from every cluster the variance is large and the mean field flattens the prediction.
    far = (12.0 * rng.normal(size=(50, 1, 8))).astype("float32")
    far_logits, far_covariance = head(far, training=False, return_covariance=True)
    far_probs = _softmax(to_numpy(mean_field_logits(far_logits, far_covariance)).astype("float64"))
    assert np.mean(far_probs.max(1)) < np.mean(probs.max(1)) - 0.3


def test_default_head_kernel_is_rbf_with_squared_length_scale_ten():
    # The head's default gp_kernel_scale is 10 (issue #17): a spectral-normalised tanh layer of
    # encoder width (384) puts pooled sentences ~4.5 apart, where exp(-d^2 / 2) ~ 4e-5 is below the
    # random-feature noise and the GP learns like a lookup table. exp(-d^2 / 20) ~ 0.4 is a kernel.
    head = GaussianProcessClassificationHead(8, 3, num_inducing=8192)
    head(np.zeros((2, 1, 8), "float32"))
    x = rng.normal(size=(20, 8)).astype("float32")
    features = to_numpy(head.out_proj.random_features(x)).astype("float64")
    approximated = features @ features.T * 2.0 / head.out_proj.num_inducing
    squared = ((x[:, None, :].astype("float64") - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(approximated, np.exp(-squared / 20.0), atol=0.06)
