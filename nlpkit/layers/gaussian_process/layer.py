"""Random-feature Gaussian process output layer and the mean-field approximation of its predictions.

A Gaussian process with an RBF kernel is approximated by Bayesian linear regression on random
Fourier features ("Random Features for Large-Scale Kernel Machines"): phi(x) = sqrt(2/M) cos(W x + b)
with fixed W ~ N(0, 1/kernel_scale) and b ~ U(0, 2 pi), so that phi(x) . phi(y) ~ exp(-|x-y|^2 / (2 kernel_scale)).
The posterior over the output weights is Laplace-approximated by a precision matrix accumulated
during training (`LaplaceRandomFeatureCovariance`); its inverse gives the predictive covariance
used for uncertainty ("Simple and Principled Uncertainty Estimation with Deterministic Deep
Learning via Distance Awareness").

Everything here computes in float32, also under mixed precision: random phases in bfloat16 would
be off by several hundredths.
"""

import math

import keras
from keras import ops

from nlpkit.errors import NlpkitError, check_choice
from nlpkit.layers.gaussian_process.covariance import LaplaceRandomFeatureCovariance, float32_weight

GP_KERNEL_TYPES = ("gaussian", "linear")

# The usual mean-field factor for a logistic/softmax likelihood (the probit approximation).
DEFAULT_MEAN_FIELD_FACTOR = math.pi / 8


@keras.saving.register_keras_serializable(package="nlpkit")
class RandomFeatureGaussianProcess(keras.layers.Layer):
    """Gaussian-process output layer on random Fourier features, with a Laplace covariance.

    logits = phi(x) @ beta + bias, where phi are M fixed random features and beta the trainable
    output weights (L2-regularised). With `gp_kernel_type="gaussian"`,
    phi(x) = s * a(x W / sqrt(gp_kernel_scale) + b), a = cos (or `custom_random_features_activation`),
    W ~ N(0, 1) (or the custom initializer), b ~ U(0, 2 pi), s = sqrt(2 / M) when
    `scale_random_features` (else 1), approximating the kernel s^2 M / 2 * exp(-|x - y|^2 /
    (2 gp_kernel_scale)) (gp_kernel_scale is a squared length scale; with `normalize_input` the
    inputs are layer-normalised first and then scaled too, where Model Garden skips the scale).
    With `"linear"`, phi(x) = x (M = D; `num_inducing`, `gp_kernel_scale` and the random-feature
    arguments are ignored): Bayesian linear regression on the inputs, kernel x . y.

    As the output layer of a network, keep `scale_random_features=False` (Model Garden's advice):
    with s = sqrt(2/M), |phi| = 1 and the logits are bounded by |beta|, which a fine-tuning
    learning rate barely moves, so softmax probabilities stay flat (see `GaussianProcessClassificationHead`).

    The covariance of the logits is kept by a `LaplaceRandomFeatureCovariance`: updated by
    training calls, returned by inference calls. Reset it every epoch with
    `reset_covariance_matrix()` (or the `ResetCovarianceCallback`).

    Args (names and defaults of Model Garden's layer):
      units: K, number of outputs (classes).
      num_inducing: M, number of random features.
      gp_kernel_type: "gaussian" (random Fourier features) or "linear".
      gp_kernel_scale: squared length scale of the RBF kernel (> 0).
      gp_output_bias: initial value of the bias added to every logit.
      normalize_input: layer-normalise the inputs before the random features.
      gp_kernel_scale_trainable: must be False (the length scale is fixed).
      gp_output_bias_trainable: learn the bias (a `[K]` weight) instead of a constant.
      gp_cov_momentum: momentum of the precision update (< 0: exact sum).
      gp_cov_ridge_penalty: prior precision of the output weights.
      scale_random_features: multiply the features by sqrt(2 / M).
      use_custom_random_features: draw W with `custom_random_features_initializer`; if False, W ~ N(0, 1).
      custom_random_features_initializer: initializer of W (default N(0, 1)); used only with
        `use_custom_random_features`.
      custom_random_features_activation: activation of the random features (default cos: RBF kernel).
      l2_regularization: L2 penalty on the output weights beta.
      gp_cov_likelihood: "gaussian" or "binary_logistic" (for K = 1).
      return_gp_cov: also return the `[B, B]` covariance.
      return_random_features: also return the random features phi `[B, M]`.
      kernel_initializer: initializer of the output weights beta.

    Input: `[B, D]`. Output: logits `[B, K]` float32, or a tuple of logits, the covariance `[B, B]`
    (when `return_gp_cov`; the identity in training calls) and the features `[B, M]` (when
    `return_random_features`), all float32.
    """

    def __init__(
        self,
        units,
        num_inducing=1024,
        gp_kernel_type="gaussian",
        gp_kernel_scale=1.0,
        gp_output_bias=0.0,
        normalize_input=False,
        gp_kernel_scale_trainable=False,
        gp_output_bias_trainable=False,
        gp_cov_momentum=0.999,
        gp_cov_ridge_penalty=1.0,
        scale_random_features=True,
        use_custom_random_features=True,
        custom_random_features_initializer=None,
        custom_random_features_activation=None,
        l2_regularization=1e-6,
        gp_cov_likelihood="gaussian",
        return_gp_cov=True,
        return_random_features=False,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__
        check_choice(name, "gp_kernel_type", gp_kernel_type, GP_KERNEL_TYPES)
        if float(gp_kernel_scale) <= 0.0:
            raise NlpkitError(f"{name}(gp_kernel_scale={gp_kernel_scale}) must be > 0")
        if int(units) < 1 or int(num_inducing) < 1:
            raise NlpkitError(f"{name}(units={units}, num_inducing={num_inducing}) must both be >= 1")
        if gp_kernel_scale_trainable:
            raise NlpkitError(f"{name}(gp_kernel_scale_trainable=True) is not supported",
                              hint="the length scale is fixed: set gp_kernel_scale")
        self.units = int(units)
        self.num_inducing = int(num_inducing)
        self.gp_kernel_type = gp_kernel_type
        self.gp_kernel_scale = float(gp_kernel_scale)
        self.gp_output_bias = float(gp_output_bias)
        self.normalize_input = bool(normalize_input)
        self.gp_kernel_scale_trainable = False
        self.gp_output_bias_trainable = bool(gp_output_bias_trainable)
        self.gp_cov_momentum = float(gp_cov_momentum)
        self.gp_cov_ridge_penalty = float(gp_cov_ridge_penalty)
        self.scale_random_features = bool(scale_random_features)
        self.use_custom_random_features = bool(use_custom_random_features)
        self.custom_random_features_initializer = _optional(keras.initializers.get, custom_random_features_initializer)
        self.custom_random_features_activation = _optional(keras.activations.get, custom_random_features_activation)
        self.l2_regularization = float(l2_regularization)
        self.gp_cov_likelihood = gp_cov_likelihood
        self.return_gp_cov = bool(return_gp_cov)
        self.return_random_features = bool(return_random_features)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

        self.input_normalization = (
            keras.layers.LayerNormalization(dtype=self.dtype_policy, name="input_normalization")
            if self.normalize_input
            else None
        )
        self.covariance = LaplaceRandomFeatureCovariance(
            momentum=self.gp_cov_momentum,
            ridge_penalty=self.gp_cov_ridge_penalty,
            likelihood=self.gp_cov_likelihood,
            dtype=self.dtype_policy,
            name="covariance",
        )

    def _feature_initializer(self):
        if self.use_custom_random_features and self.custom_random_features_initializer is not None:
            return self.custom_random_features_initializer
        return keras.initializers.RandomNormal(stddev=1.0)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise NlpkitError(
                f"{type(self).__name__} takes [batch, features] inputs, got shape {tuple(input_shape)}",
                hint="pool the sequence first (e.g. take the CLS token)",
            )
        input_dim = input_shape[-1]
        if self.input_normalization is not None:
            self.input_normalization.build(input_shape)
        num_features = input_dim
        if self.gp_kernel_type == "gaussian":
            num_features = self.num_inducing
            self.random_kernel = float32_weight(
                self, "random_kernel", (input_dim, num_features), self._feature_initializer()
            )
            self.random_bias = float32_weight(
                self, "random_bias", (num_features,), keras.initializers.RandomUniform(0.0, 2.0 * math.pi)
            )
        regularizer = keras.regularizers.L2(self.l2_regularization) if self.l2_regularization > 0 else None
        self.output_kernel = float32_weight(
            self, "output_kernel", (num_features, self.units), self.kernel_initializer, trainable=True,
            regularizer=regularizer,
        )
        if self.gp_output_bias_trainable:  # only then a weight: older saved layers have none
            self.output_bias = float32_weight(
                self, "output_bias", (self.units,), keras.initializers.Constant(self.gp_output_bias), trainable=True
            )
        self.covariance.build((input_shape[0], num_features), (input_shape[0], self.units))

    def random_features(self, inputs):
        """phi(inputs): `[B, D]` -> `[B, M]` float32."""
        if self.input_normalization is not None:
            inputs = self.input_normalization(inputs)
        inputs = ops.cast(inputs, "float32")
        if self.gp_kernel_type == "linear":
            return inputs
        inputs = inputs / math.sqrt(self.gp_kernel_scale)
        activation = self.custom_random_features_activation or ops.cos
        features = activation(ops.matmul(inputs, self.random_kernel) + self.random_bias)
        if self.scale_random_features:
            features = features * math.sqrt(2.0 / self.num_inducing)
        return features

    def reset_covariance_matrix(self):
        """Reset the precision matrix to the prior (call at the start of every epoch)."""
        self.covariance.reset_precision_matrix()

    def call(self, inputs, training=None):
        features = self.random_features(inputs)
        bias = self.output_bias if self.gp_output_bias_trainable else self.gp_output_bias
        logits = ops.matmul(features, self.output_kernel) + bias
        outputs = [logits]
        if self.return_gp_cov:
            outputs.append(self.covariance(features, logits, training=training))
        elif training:
            self.covariance(features, logits, training=True)  # the precision update, even when not returned
        if self.return_random_features:
            outputs.append(features)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def compute_output_shape(self, input_shape):
        shapes = [(input_shape[0], self.units)]
        if self.return_gp_cov:
            shapes.append((input_shape[0], input_shape[0]))
        if self.return_random_features:
            shapes.append((input_shape[0], self.num_inducing if self.gp_kernel_type == "gaussian" else input_shape[-1]))
        return shapes[0] if len(shapes) == 1 else tuple(shapes)

    def get_config(self):
        initializer, activation = self.custom_random_features_initializer, self.custom_random_features_activation
        return {
            **super().get_config(),
            "units": self.units,
            "num_inducing": self.num_inducing,
            "gp_kernel_type": self.gp_kernel_type,
            "gp_kernel_scale": self.gp_kernel_scale,
            "gp_output_bias": self.gp_output_bias,
            "normalize_input": self.normalize_input,
            "gp_kernel_scale_trainable": self.gp_kernel_scale_trainable,
            "gp_output_bias_trainable": self.gp_output_bias_trainable,
            "gp_cov_momentum": self.gp_cov_momentum,
            "gp_cov_ridge_penalty": self.gp_cov_ridge_penalty,
            "scale_random_features": self.scale_random_features,
            "use_custom_random_features": self.use_custom_random_features,
            "custom_random_features_initializer": _optional(keras.initializers.serialize, initializer),
            "custom_random_features_activation": _optional(keras.activations.serialize, activation),
            "l2_regularization": self.l2_regularization,
            "gp_cov_likelihood": self.gp_cov_likelihood,
            "return_gp_cov": self.return_gp_cov,
            "return_random_features": self.return_random_features,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


def _optional(convert, value):
    return None if value is None else convert(value)


def mean_field_logits(logits, covariance=None, mean_field_factor=DEFAULT_MEAN_FIELD_FACTOR):
    """Mean-field approximation of the predictive distribution: logits / sqrt(1 + factor * variance).

    Approximates E[softmax(z)], z ~ N(logits, variance), by softmax of the scaled logits (with
    factor pi/8 it is the probit approximation of a logistic-normal integral).

    Args:
      logits: `[B, K]`.
      covariance: `[B, B]` covariance (its diagonal is used) or `[B]` variances; None: no change.
      mean_field_factor: the factor; None or negative: logits returned unchanged.
    Returns:
      `[B, K]` adjusted logits, in the dtype of `logits`.
    """
    if covariance is None or mean_field_factor is None or mean_field_factor < 0:
        return logits
    variances = ops.cast(covariance, "float32")
    if len(variances.shape) == 2:
        variances = ops.diagonal(variances)
    scale = ops.sqrt(1.0 + mean_field_factor * variances)
    return ops.cast(ops.cast(logits, "float32") / ops.expand_dims(scale, -1), logits.dtype)
