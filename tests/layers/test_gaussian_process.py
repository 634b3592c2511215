import math

import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_numpy

from nlpkit.errors import NlpkitError
from nlpkit.layers.gaussian_process import (
    GaussianProcessClassificationHead,
    LaplaceRandomFeatureCovariance,
    RandomFeatureGaussianProcess,
    ResetCovarianceCallback,
    mean_field_logits,
)
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _rbf_kernel(x, kernel_scale):
    squared_distances = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    return np.exp(-squared_distances / (2.0 * kernel_scale))


def _numpy_random_features(layer, x):
    """phi(x) = sqrt(2/M) cos(x W / sqrt(scale) + b) from the layer's fixed weights."""
    kernel, bias = to_numpy(layer.random_kernel), to_numpy(layer.random_bias)
    return math.sqrt(2.0 / kernel.shape[1]) * np.cos(x @ kernel / math.sqrt(layer.gp_kernel_scale) + bias)


def _numpy_logits(layer, features):
    return features @ to_numpy(layer.output_kernel) + layer.gp_output_bias


# Few distinct shapes: under JAX every new shape of an eager op (Cholesky above all) compiles anew.
M = 16


def _batch(size, dim=4):
    return rng.normal(size=(size, dim)).astype("float32")


# --- layer contract -----------------------------------------------------------------------------


def test_contract_random_feature_gp(tmp_path):
    kwargs = dict(
        units=3,
        num_inducing=M,
        gp_kernel_scale=2.0,
        gp_output_bias=0.5,
        normalize_input=True,
        gp_cov_momentum=0.9,
        gp_cov_ridge_penalty=0.5,
        scale_random_features=True,
        use_custom_random_features=True,
        custom_random_features_initializer=keras.initializers.RandomNormal(stddev=0.5),
        return_gp_cov=True,
    )
    shapes = [(4, 3), (4, 4)]
    check_layer(
        RandomFeatureGaussianProcess, kwargs, args=[_batch(4)], tmp_path=tmp_path, expected_shapes=shapes,
        expected_trainable=3,
        expected_non_trainable=3,
        float32_outputs=(0, 1),
    )


def test_contract_laplace_covariance(tmp_path):
    features, logits = _batch(4, dim=M), _batch(4, dim=1)
    check_layer(
        LaplaceRandomFeatureCovariance,
        dict(momentum=-1.0, ridge_penalty=2.0, likelihood="binary_logistic"),
        args=[features, logits],
        tmp_path=tmp_path,
        expected_shapes=[(4, 4)],
        expected_trainable=0,
        expected_non_trainable=1,  # the precision matrix
        float32_outputs=(0,),  # documented: the GP layers compute in float32
    )


def test_contract_classification_head(tmp_path):
    sequence = rng.normal(size=(4, 5, 8)).astype("float32")
    check_layer(
        GaussianProcessClassificationHead,
        dict(
            inner_dim=6,
            num_classes=2,
            cls_token_idx=1,
            activation="tanh",
            dropout_rate=0.1,
            initializer="glorot_uniform",
            use_spec_norm=True,
            spec_norm_kwargs=dict(iteration=2, norm_multiplier=0.9),
            use_gp_layer=True,
            gp_layer_kwargs=dict(num_inducing=M, gp_cov_momentum=-1.0),
        ),
        args=[sequence],
        static_kwargs=dict(return_covariance=True),
        tmp_path=tmp_path,
        expected_shapes=[(4, 2), (4, 4)],
        # pooler kernel and bias, GP output kernel; spectral-norm vector, random features (2), precision
        expected_trainable=3,
        expected_non_trainable=4,
        float32_outputs=(0, 1),
    )


def test_contract_classification_head_mean_pooling(tmp_path):
    sequence = rng.normal(size=(4, 5, 8)).astype("float32")
    mask = (np.arange(5)[None, :] < np.array([[5], [2], [4], [1]])).astype("int32")
    check_layer(
        GaussianProcessClassificationHead,
        dict(inner_dim=6, num_classes=2, pooling="mean", gp_layer_kwargs=dict(num_inducing=M, gp_cov_momentum=-1.0)),
        args=[sequence],
        kwargs=dict(input_mask=mask),
        static_kwargs=dict(return_covariance=True),
        tmp_path=tmp_path,
        expected_shapes=[(4, 2), (4, 4)],
        expected_trainable=3,
        expected_non_trainable=4,
        float32_outputs=(0, 1),
    )


def test_head_mean_pooling_averages_only_real_tokens():
    sequence = rng.normal(size=(3, 5, 8)).astype("float32")
    mask = (np.arange(5)[None, :] < np.array([[5], [2], [3]])).astype("int32")
    head = GaussianProcessClassificationHead(6, 2, pooling="mean", use_spec_norm=False, use_gp_layer=False)
    logits = np.asarray(head(sequence, input_mask=mask))
    pooled = (sequence * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    hidden = np.tanh(pooled @ to_numpy(head.dense.kernel) + to_numpy(head.dense.bias))
    want = hidden @ to_numpy(head.out_proj.kernel) + to_numpy(head.out_proj.bias)
    np.testing.assert_allclose(logits, want, atol=1e-5)


def test_head_without_gp_or_spectral_norm_is_cls_pooling_and_two_dense_layers():
    sequence = rng.normal(size=(3, 5, 8)).astype("float32")
    head = GaussianProcessClassificationHead(6, 2, cls_token_idx=2, use_spec_norm=False, use_gp_layer=False)
    logits = np.asarray(head(sequence))
    hidden = np.tanh(sequence[:, 2] @ to_numpy(head.dense.kernel) + to_numpy(head.dense.bias))
    want = hidden @ to_numpy(head.out_proj.kernel) + to_numpy(head.out_proj.bias)
    np.testing.assert_allclose(logits, want, atol=1e-5)


# --- random features approximate the RBF kernel ---------------------------------------------------


def test_random_features_match_numpy_formula():
    layer = RandomFeatureGaussianProcess(2, num_inducing=M, gp_kernel_scale=3.0)
    x = _batch(4)
    layer.build(x.shape)
    np.testing.assert_allclose(np.asarray(layer.random_features(x)), _numpy_random_features(layer, x), atol=1e-5)


def test_random_feature_kernel_approaches_rbf_kernel():
    x = 0.7 * _batch(12)
    exact = _rbf_kernel(x.astype("float64"), kernel_scale=2.0)
    errors = {}
    for num_inducing in (M, 4096):
        layer = RandomFeatureGaussianProcess(1, num_inducing=num_inducing, gp_kernel_scale=2.0)
        layer.build(x.shape)
        features = np.asarray(layer.random_features(x), dtype="float64")
        errors[num_inducing] = np.abs(features @ features.T - exact)
    # Monte-Carlo error shrinks like 1/sqrt(M): about 16x from 16 to 4096 features (std <= 1/sqrt(M) per entry).
    assert errors[4096].mean() < errors[M].mean() / 4
    assert errors[4096].mean() < 0.03
    assert errors[4096].max() < 0.08


def test_prior_covariance_is_the_random_feature_kernel():
    layer = RandomFeatureGaussianProcess(2, num_inducing=M, gp_cov_ridge_penalty=3.0)
    x = _batch(4)
    _, covariance = layer(x, training=False)
    features = _numpy_random_features(layer, x)
    np.testing.assert_allclose(np.asarray(covariance), features @ features.T, atol=1e-5)


def test_linear_kernel_prior_covariance_is_the_gram_matrix():
    layer = RandomFeatureGaussianProcess(2, gp_kernel_type="linear", gp_cov_ridge_penalty=2.0)
    x = _batch(6)
    logits, covariance = layer(x, training=False)
    np.testing.assert_allclose(np.asarray(covariance), x @ x.T, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), x @ to_numpy(layer.output_kernel), atol=1e-5)


# --- Laplace covariance: closed forms -------------------------------------------------------------


def test_exact_laplace_covariance_matches_closed_form_binary_logistic():
    ridge = 0.5
    layer = RandomFeatureGaussianProcess(
        1, num_inducing=M, gp_cov_momentum=-1.0, gp_cov_ridge_penalty=ridge, gp_cov_likelihood="binary_logistic"
    )
    batches = [_batch(4), _batch(8)]
    layer.build(batches[0].shape)
    precision = ridge * np.eye(M)
    for x in batches:
        _, training_covariance = layer(x, training=True)
        np.testing.assert_array_equal(np.asarray(training_covariance), np.eye(len(x)))
        features = _numpy_random_features(layer, x)
        probs = _sigmoid(_numpy_logits(layer, features))[:, 0]
        precision += features.T @ np.diag(probs * (1 - probs)) @ features
    np.testing.assert_allclose(to_numpy(layer.covariance.precision_matrix), precision, atol=1e-5)

    x_test = _batch(4)
    _, covariance = layer(x_test, training=False)
    features = _numpy_random_features(layer, x_test)
    want = ridge * features @ np.linalg.inv(precision) @ features.T
    np.testing.assert_allclose(np.asarray(covariance), want, atol=1e-5)


def test_momentum_laplace_precision_matches_closed_form_gaussian():
    ridge, momentum = 2.0, 0.9
    layer = RandomFeatureGaussianProcess(3, num_inducing=M, gp_cov_momentum=momentum, gp_cov_ridge_penalty=ridge)
    precision = ridge * np.eye(M)
    for x in (_batch(4), _batch(8)):
        layer(x, training=True)
        features = _numpy_random_features(layer, x)
        precision = momentum * precision + (1 - momentum) * features.T @ features / len(x)
    np.testing.assert_allclose(to_numpy(layer.covariance.precision_matrix), precision, atol=1e-5)

    layer.reset_covariance_matrix()
    np.testing.assert_allclose(to_numpy(layer.covariance.precision_matrix), ridge * np.eye(M), atol=0)


def test_precision_is_updated_even_when_covariance_is_not_returned():
    layer = RandomFeatureGaussianProcess(2, num_inducing=M, gp_cov_momentum=-1.0, return_gp_cov=False)
    x = _batch(4)
    layer(x, training=True)
    features = _numpy_random_features(layer, x)
    want = np.eye(M) + features.T @ features
    np.testing.assert_allclose(to_numpy(layer.covariance.precision_matrix), want, atol=1e-5)


def test_callback_resets_covariance_each_epoch():
    # Fixed random features (non-trainable) and a Gaussian likelihood: every epoch adds the same
    # Phi^T Phi, so after 2 epochs the precision holds one epoch's sum only if it was reset.
    layer = RandomFeatureGaussianProcess(2, num_inducing=M, gp_cov_momentum=-1.0)
    x = _batch(8)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(inputs)[0])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x, np.zeros((8, 2)), batch_size=4, epochs=2, verbose=0, callbacks=[ResetCovarianceCallback()])
    features = _numpy_random_features(layer, x)
    want = np.eye(M) + features.T @ features
    np.testing.assert_allclose(to_numpy(layer.covariance.precision_matrix), want, atol=1e-4)


def test_callback_refuses_a_model_without_gp_layer():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(NlpkitError, match="reset_covariance_matrix"):
        model.fit(_batch(4), np.zeros((4, 2)), epochs=1, verbose=0, callbacks=[ResetCovarianceCallback()])


# --- SNGP is distance aware ------------------------------------------------------------------------


def _two_blobs(per_class=100):
    x = np.concatenate([rng.normal([-2.0, 0.0], 0.5, (per_class, 2)), rng.normal([2.0, 0.0], 0.5, (per_class, 2))])
    y = np.repeat([0, 1], per_class)
    order = rng.permutation(len(y))
    return x[order].astype("float32")[:, None, :], y[order].astype("int32")  # length-1 "sequences"


def test_sngp_variance_is_larger_far_from_training_data():
    x, y = _two_blobs()
    head = GaussianProcessClassificationHead(
        16, 2, gp_layer_kwargs=dict(num_inducing=64, gp_cov_momentum=-1.0), spec_norm_kwargs=dict(norm_multiplier=0.95)
    )
    inputs = keras.Input((1, 2))
    model = keras.Model(inputs, head(inputs))
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=20, epochs=4, verbose=0, callbacks=[ResetCovarianceCallback()])

    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    far = (10.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype("float32")[:, None, :]
    logits, near_covariance = head(x, training=False, return_covariance=True)
    _, far_covariance = head(far, training=False, return_covariance=True)
    assert np.mean(np.argmax(np.asarray(logits), -1) == y) > 0.95
    near_variance, far_variance = np.diag(np.asarray(near_covariance)), np.diag(np.asarray(far_covariance))
    assert far_variance.min() > near_variance.max()
    assert far_variance.mean() > 5 * near_variance.mean()


# --- mean-field logits -----------------------------------------------------------------------------


def test_mean_field_logits_closed_form():
    logits = rng.normal(size=(4, 3)).astype("float32")
    factor = rng.normal(size=(4, 4))
    covariance = (factor @ factor.T).astype("float32")
    want = logits / np.sqrt(1.0 + 0.3 * np.diag(covariance))[:, None]
    np.testing.assert_allclose(np.asarray(mean_field_logits(logits, covariance, 0.3)), want, atol=1e-6)
    variances = np.diag(covariance).copy()
    np.testing.assert_allclose(np.asarray(mean_field_logits(logits, variances, 0.3)), want, atol=1e-6)
    for unchanged in (mean_field_logits(logits, None), mean_field_logits(logits, covariance, None)):
        np.testing.assert_array_equal(np.asarray(unchanged), logits)
    np.testing.assert_array_equal(np.asarray(mean_field_logits(logits, covariance, -1.0)), logits)


def test_mean_field_approximates_the_logistic_normal_integral():
    # E[sigmoid(z)], z ~ N(mu, var), by quadrature; the default factor pi/8 is the probit approximation.
    mu = np.array([-3.0, -1.0, 0.5, 2.0, 4.0])
    var = np.array([0.5, 4.0, 1.0, 9.0, 2.0])
    z = np.linspace(-40, 40, 20001)
    density = np.exp(-((z[None] - mu[:, None]) ** 2) / (2 * var[:, None])) / np.sqrt(2 * np.pi * var[:, None])
    expected = np.sum(_sigmoid(z)[None] * density, axis=1) * (z[1] - z[0])
    approx = _sigmoid(np.asarray(mean_field_logits(mu[:, None].astype("float32"), var.astype("float32")))[:, 0])
    np.testing.assert_allclose(approx, expected, atol=0.02)
    assert not np.allclose(_sigmoid(mu), expected, atol=0.02)  # without the adjustment it is off


# --- bad input -------------------------------------------------------------------------------------


def test_bad_arguments_raise():
    with pytest.raises(NlpkitError, match="gp_kernel_type"):
        RandomFeatureGaussianProcess(2, gp_kernel_type="cosine")
    with pytest.raises(NlpkitError, match="momentum"):
        RandomFeatureGaussianProcess(2, gp_cov_momentum=1.0)
    with pytest.raises(NlpkitError, match=r"\[batch, features\]"):
        RandomFeatureGaussianProcess(2)(rng.normal(size=(2, 3, 4)).astype("float32"))
    with pytest.raises(NlpkitError, match="1 logit"):
        RandomFeatureGaussianProcess(2, num_inducing=M, gp_cov_likelihood="binary_logistic")(_batch(4))
    with pytest.raises(NlpkitError, match="units"):
        GaussianProcessClassificationHead(4, 2, gp_layer_kwargs=dict(units=3))
    head = GaussianProcessClassificationHead(4, 2, use_gp_layer=False)
    with pytest.raises(NlpkitError, match="use_gp_layer"):
        head(rng.normal(size=(2, 3, 4)).astype("float32"), return_covariance=True)
