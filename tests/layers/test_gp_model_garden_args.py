"""Model Garden configs port to the GP layer and the SNGP head (issue #18): flat arguments, names and
defaults of `official/nlp/modeling/layers/gaussian_process.py` and `cls_head.py`, config round trips."""

import json

import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.gaussian_process import GaussianProcessClassificationHead, RandomFeatureGaussianProcess

# Argument names, aliases and config round trips are backend-independent Python (the GP layer and head
# run under JAX in test_gaussian_process.py): the JAX run leaves this file out.
pytestmark = pytest.mark.tf_only

rng = np.random.default_rng(11)

# Every argument of Model Garden's RandomFeatureGaussianProcess, by its name, non-default values.
MG_GP_LAYER = dict(
    units=5, num_inducing=24, gp_kernel_type="gaussian", gp_kernel_scale=2.5, gp_output_bias=0.25,
    normalize_input=True, gp_kernel_scale_trainable=False, gp_output_bias_trainable=True, gp_cov_momentum=-1.0,
    gp_cov_ridge_penalty=0.5, scale_random_features=False, use_custom_random_features=True,
    custom_random_features_initializer="random_normal", custom_random_features_activation="relu",
    l2_regularization=1e-4, gp_cov_likelihood="gaussian", return_gp_cov=True, return_random_features=True,
    name="random_feature_gaussian_process",
)

# Model Garden's GaussianProcessClassificationHead with its flat GP (extract_gp_layer_kwargs) and
# spectral-norm (extract_spec_norm_kwargs) arguments.
MG_HEAD = dict(
    inner_dim=8, num_classes=5, cls_token_idx=1, activation="tanh", dropout_rate=0.0, initializer="glorot_uniform",
    use_spec_norm=True, use_gp_layer=True, temperature=0.3,
    num_inducing=24, normalize_input=True, gp_cov_momentum=0.99, gp_cov_ridge_penalty=2.0,
    scale_random_features=False, l2_regularization=1e-5, gp_cov_likelihood="gaussian", return_gp_cov=True,
    return_random_features=False, use_custom_random_features=True,
    custom_random_features_initializer="random_normal", custom_random_features_activation=None,
    iteration=2, norm_multiplier=0.9,
)


def _round_trip(layer_class, layer):
    config = layer.get_config()
    json.dumps(config)  # a config is JSON
    rebuilt = layer_class.from_config(config)
    assert rebuilt.get_config() == config
    return rebuilt


def test_gp_layer_builds_from_model_garden_arguments_and_round_trips():
    layer = RandomFeatureGaussianProcess(**MG_GP_LAYER)
    config = layer.get_config()
    for key, value in MG_GP_LAYER.items():
        if key not in ("custom_random_features_initializer", "custom_random_features_activation"):
            assert config[key] == value, key
    assert config["custom_random_features_activation"] == "relu"
    x = rng.normal(size=(4, 6)).astype("float32")
    logits, covariance, features = layer(x)
    assert (tuple(logits.shape), tuple(covariance.shape), tuple(features.shape)) == ((4, 5), (4, 4), (4, 24))
    assert np.all(keras.ops.convert_to_numpy(features) >= 0)  # relu features
    assert len(layer.trainable_weights) == 4  # layer-norm gamma and beta, output kernel, output bias
    rebuilt = _round_trip(RandomFeatureGaussianProcess, layer)
    rebuilt(x)
    rebuilt.set_weights(layer.get_weights())
    for got, want in zip(rebuilt(x), (logits, covariance, features)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want), atol=1e-6)


def test_gp_layer_defaults_are_model_garden_defaults():
    config = RandomFeatureGaussianProcess(3).get_config()
    mg_defaults = dict(num_inducing=1024, gp_kernel_type="gaussian", gp_kernel_scale=1.0, gp_output_bias=0.0,
                       normalize_input=False, gp_kernel_scale_trainable=False, gp_output_bias_trainable=False,
                       gp_cov_momentum=0.999, gp_cov_ridge_penalty=1.0, scale_random_features=True,
                       use_custom_random_features=True, custom_random_features_initializer=None,
                       custom_random_features_activation=None, l2_regularization=1e-6,
                       gp_cov_likelihood="gaussian", return_gp_cov=True, return_random_features=False)
    assert {key: config[key] for key in mg_defaults} == mg_defaults


def test_head_builds_from_model_garden_arguments_and_round_trips():
    head = GaussianProcessClassificationHead(**MG_HEAD)
    gp_keys = set(MG_HEAD) - {"inner_dim", "num_classes", "cls_token_idx", "activation", "dropout_rate",
                              "initializer", "use_spec_norm", "use_gp_layer", "temperature", "return_gp_cov",
                              "iteration", "norm_multiplier"}
    assert {key: head.gp_layer_kwargs[key] for key in gp_keys} == {key: MG_HEAD[key] for key in gp_keys}
    assert head.spec_norm_kwargs == {"iteration": 2, "norm_multiplier": 0.9}
    assert head.temperature == 0.3
    sequence = rng.normal(size=(4, 3, 8)).astype("float32")
    logits, covariance = head(sequence, return_covariance=True)
    # The built sub-layers carry the values, not just the config.
    gp, norm = head.out_proj, head.dense
    assert (gp.num_inducing, gp.gp_cov_momentum, gp.gp_cov_ridge_penalty, gp.normalize_input) == (24, 0.99, 2.0, True)
    assert (gp.scale_random_features, gp.l2_regularization) == (False, 1e-5)
    assert (norm.iteration, norm.norm_multiplier) == (2, 0.9)
    rebuilt = _round_trip(GaussianProcessClassificationHead, head)
    rebuilt(sequence)
    rebuilt.set_weights(head.get_weights())
    got_logits, got_covariance = rebuilt(sequence, return_covariance=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got_logits), keras.ops.convert_to_numpy(logits), atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got_covariance), keras.ops.convert_to_numpy(covariance),
                               atol=1e-6)


def test_flat_and_nested_arguments_agree_or_fail():
    nested = GaussianProcessClassificationHead(
        4, 5, gp_layer_kwargs=dict(num_inducing=16, gp_cov_ridge_penalty=3.0), spec_norm_kwargs=dict(iteration=3))
    flat = GaussianProcessClassificationHead(4, 5, num_inducing=16, gp_cov_ridge_penalty=3.0, spec_norm_iteration=3)
    assert nested.get_config()["gp_layer_kwargs"] == flat.get_config()["gp_layer_kwargs"]
    assert nested.spec_norm_kwargs == flat.spec_norm_kwargs == {"iteration": 3, "norm_multiplier": 0.95}
    bound = GaussianProcessClassificationHead(4, 5, spec_norm_bound=0.8)
    assert bound.spec_norm_kwargs["norm_multiplier"] == 0.8
    with pytest.raises(NlpkitError, match="num_inducing=32 contradicts"):
        GaussianProcessClassificationHead(4, 5, num_inducing=32, gp_layer_kwargs=dict(num_inducing=16))
    with pytest.raises(NlpkitError, match="return_gp_cov=False"):
        GaussianProcessClassificationHead(4, 5, return_gp_cov=False)
    with pytest.raises(NlpkitError, match="gp_kernel_scale_trainable"):
        RandomFeatureGaussianProcess(2, gp_kernel_scale_trainable=True)


def test_head_config_saved_before_flat_arguments_keeps_its_scaled_features():
    # A config written by nlpkit 0.1.0 (no `temperature`, partial gp_layer_kwargs) was built with the
    # layer's default sqrt(2/M) feature scale; it must load as it was trained.
    old = {"name": "sngp", "trainable": True, "dtype": "float32", "inner_dim": 4, "num_classes": 3,
           "cls_token_idx": 0, "activation": "tanh", "dropout_rate": 0.0, "initializer": "glorot_uniform",
           "use_spec_norm": True, "spec_norm_kwargs": {}, "use_gp_layer": True,
           "gp_layer_kwargs": {"num_inducing": 16, "gp_cov_momentum": -1.0}, "pooling": "mean"}
    head = GaussianProcessClassificationHead.from_config(old)
    assert head.out_proj.scale_random_features is True
    assert GaussianProcessClassificationHead(4, 3).out_proj.scale_random_features is False


def test_head_config_saved_before_the_kernel_scale_default_keeps_kernel_scale_one():
    old = {"inner_dim": 4, "num_classes": 3, "gp_layer_kwargs": {"num_inducing": 16}, "pooling": "mean"}
    assert GaussianProcessClassificationHead.from_config(old).out_proj.gp_kernel_scale == 1.0
    assert GaussianProcessClassificationHead(4, 3).out_proj.gp_kernel_scale == 10.0


def test_classifier_sngp_kwargs_state_new_or_old_gp_defaults_unless_given():
    from nlpkit.models.classifier import sngp_feature_scale

    new = sngp_feature_scale({}, False)["gp_layer_kwargs"]
    assert new == {"scale_random_features": False, "gp_kernel_scale": 10.0}
    # A config saved before (or between) the changed defaults: what it does not state is the old value.
    saved = {"gp_layer_kwargs": {"scale_random_features": False, "num_inducing": 64}}
    assert sngp_feature_scale(saved, True)["gp_layer_kwargs"] == {
        "scale_random_features": False, "num_inducing": 64, "gp_kernel_scale": 1.0}
    flat = sngp_feature_scale({"gp_kernel_scale": 3.0}, True)
    assert (flat["gp_kernel_scale"], flat["gp_layer_kwargs"]) == (3.0, {"scale_random_features": True})
