"""Random-feature Gaussian process output layer and the SNGP classification head.

A Gaussian process with an RBF kernel is approximated by Bayesian linear regression on random
Fourier features ("Random Features for Large-Scale Kernel Machines"): phi(x) = sqrt(2/M) cos(W x + b)
with fixed W ~ N(0, 1/kernel_scale) and b ~ U(0, 2 pi), so that phi(x) . phi(y) ~ exp(-|x-y|^2 / (2 kernel_scale)).
The posterior over the output weights is Laplace-approximated by a precision matrix accumulated
during training; its inverse gives the predictive covariance used for uncertainty ("Simple and
Principled Uncertainty Estimation with Deterministic Deep Learning via Distance Awareness").

Everything here computes in float32, also under mixed precision: random phases in bfloat16 would
be off by several hundredths and a Cholesky factorisation needs the precision.
"""

import math

import keras
from keras import ops

from nlpkit.errors import NlpkitError, check_choice
from nlpkit.layers.heads import POOLINGS, pool_sequence
from nlpkit.layers.spectral_norm import SpectralNormalization

GP_KERNEL_TYPES = ("gaussian", "linear")
GP_COV_LIKELIHOODS = ("gaussian", "binary_logistic")

# The usual mean-field factor for a logistic/softmax likelihood (the probit approximation).
DEFAULT_MEAN_FIELD_FACTOR = math.pi / 8


def _float32_weight(layer, name, shape, initializer, trainable=False, regularizer=None):
    """A float32 variable that stays float32 inside mixed-precision calls.

    Replicas of a data-parallel strategy each assign their own update to the non-trainable ones;
    "mean" aggregation averages them (for the momentum update that is the update of the global batch).
    """
    return layer.add_weight(
        name=name,
        shape=shape,
        initializer=initializer,
        trainable=trainable,
        regularizer=regularizer,
        dtype="float32",
        autocast=False,
        aggregation="none" if trainable else "mean",
    )


@keras.saving.register_keras_serializable(package="nlpkit")
class LaplaceRandomFeatureCovariance(keras.layers.Layer):
    """Laplace approximation of the posterior covariance of a random-feature GP's output weights.

    Holds a precision matrix P `[M, M]` (non-trainable, float32), initially `ridge_penalty * I`.
    In a training call it is updated from the batch features Phi `[B, M]` and logits `[B, K]`:
    with the batch precision S = Phi^T diag(w) Phi, where w = 1 (`likelihood="gaussian"`) or
    w = p (1 - p), p = sigmoid(logit) (`"binary_logistic"`, K must be 1),
      - `momentum` in [0, 1): P <- momentum * P + (1 - momentum) * S / B (moving average), or
      - `momentum` < 0: P <- P + S (exact sum; reset P at the start of every epoch; with R
        data-parallel replicas each adds its own S and the average is kept, i.e. the sum / R).
    A training call returns the identity `[B, B]` (the covariance is not needed for the loss and
    costs an M x M factorisation). An inference call returns the predictive covariance
    `ridge_penalty * Phi P^-1 Phi^T` `[B, B]`; for P = ridge_penalty * I it is Phi Phi^T, the
    prior kernel matrix.

    Args:
      momentum: see above; must be < 1.
      ridge_penalty: the prior precision (> 0).
      likelihood: "gaussian" or "binary_logistic".

    Call: `layer(features [B, M], logits [B, K], training=None)` -> `[B, B]` float32.
    """

    def __init__(self, momentum=0.999, ridge_penalty=1.0, likelihood="gaussian", **kwargs):
        super().__init__(**kwargs)
        if float(momentum) >= 1.0:
            raise NlpkitError(f"{type(self).__name__}(momentum={momentum}) must be < 1 (negative: exact sum)")
        if float(ridge_penalty) <= 0.0:
            raise NlpkitError(f"{type(self).__name__}(ridge_penalty={ridge_penalty}) must be > 0")
        check_choice(type(self).__name__, "likelihood", likelihood, GP_COV_LIKELIHOODS)
        self.momentum = float(momentum)
        self.ridge_penalty = float(ridge_penalty)
        self.likelihood = likelihood

    def build(self, features_shape, logits_shape=None):
        if self.likelihood == "binary_logistic" and logits_shape is not None and logits_shape[-1] != 1:
            raise NlpkitError(
                f'{type(self).__name__}(likelihood="binary_logistic") needs 1 logit per example, '
                f"got {logits_shape[-1]}",
                hint='use likelihood="gaussian" for several classes',
            )
        num_features = features_shape[-1]
        self.precision_matrix = _float32_weight(
            self, "precision_matrix", (num_features, num_features), keras.initializers.Identity(self.ridge_penalty)
        )

    def reset_precision_matrix(self):
        """Back to the prior, `ridge_penalty * I` (call at the start of every epoch)."""
        self.precision_matrix.assign(self.ridge_penalty * ops.eye(self.precision_matrix.shape[0], dtype="float32"))

    def _batch_precision(self, features, logits):
        if self.likelihood == "binary_logistic":
            probs = ops.sigmoid(ops.cast(logits, "float32"))
            features = features * ops.sqrt(probs * (1.0 - probs))
        return ops.matmul(ops.transpose(features), features)

    def _update_precision_matrix(self, features, logits):
        batch_precision = self._batch_precision(features, logits)
        if self.momentum < 0:
            updated = self.precision_matrix + batch_precision
        else:
            batch_size = ops.cast(ops.shape(features)[0], "float32")
            updated = self.momentum * self.precision_matrix + (1.0 - self.momentum) * batch_precision / batch_size
        self.precision_matrix.assign(updated)

    def predictive_covariance(self, features):
        """`ridge_penalty * Phi P^-1 Phi^T` via a Cholesky factor P = L L^T (symmetric by construction)."""
        features = ops.cast(features, "float32")
        lower = ops.cholesky(self.precision_matrix)
        whitened = ops.solve_triangular(lower, ops.transpose(features), lower=True)  # L^-1 Phi^T, [M, B]
        return self.ridge_penalty * ops.matmul(ops.transpose(whitened), whitened)

    def call(self, features, logits, training=None):
        features = ops.stop_gradient(ops.cast(features, "float32"))
        if training:
            self._update_precision_matrix(features, ops.stop_gradient(logits))
            return ops.eye(ops.shape(features)[0], dtype="float32")
        return self.predictive_covariance(features)

    def compute_output_shape(self, features_shape, logits_shape=None):
        return (features_shape[0], features_shape[0])

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "ridge_penalty": self.ridge_penalty,
            "likelihood": self.likelihood,
        }


@keras.saving.register_keras_serializable(package="nlpkit")
class RandomFeatureGaussianProcess(keras.layers.Layer):
    """Gaussian-process output layer on random Fourier features, with a Laplace covariance.

    logits = phi(x) @ beta + gp_output_bias, where phi are M fixed random features and beta the
    trainable output weights (L2-regularised). With `gp_kernel_type="gaussian"`,
    phi(x) = s * cos(x W / sqrt(gp_kernel_scale) + b), W ~ N(0, 1) (or the custom initializer),
    b ~ U(0, 2 pi), s = sqrt(2 / M) when `scale_random_features` (else 1), approximating the RBF
    kernel exp(-|x - y|^2 / (2 gp_kernel_scale)) (gp_kernel_scale is a squared length scale).
    With `"linear"`, phi(x) = x (M = D; `num_inducing`, `gp_kernel_scale` and the random-feature
    arguments are ignored): Bayesian linear regression on the inputs, kernel x . y.

    The covariance of the logits is kept by a `LaplaceRandomFeatureCovariance` (see there):
    updated by training calls, returned by inference calls. Reset it every epoch with
    `reset_covariance_matrix()` (or the `ResetCovarianceCallback`).

    Args:
      units: K, number of outputs (classes).
      num_inducing: M, number of random features.
      gp_kernel_type: "gaussian" (random Fourier features) or "linear".
      gp_kernel_scale: squared length scale of the RBF kernel (> 0).
      gp_output_bias: constant added to every logit.
      normalize_input: layer-normalise the inputs before the random features.
      gp_cov_momentum: momentum of the precision update (< 0: exact sum).
      gp_cov_ridge_penalty: prior precision of the output weights.
      gp_cov_likelihood: "gaussian" or "binary_logistic" (for K = 1).
      scale_random_features: multiply the features by sqrt(2 / M).
      use_custom_random_features: draw W with `custom_random_features_initializer`; if False, W ~ N(0, 1).
      custom_random_features_initializer: initializer of W (default N(0, 1)); used only with
        `use_custom_random_features`.
      l2_regularization: L2 penalty on the output weights beta.
      return_gp_cov: also return the `[B, B]` covariance.

    Input: `[B, D]`. Output: logits `[B, K]` float32, and the covariance `[B, B]` float32 when
    `return_gp_cov` (the identity in training calls).
    """

    def __init__(
        self,
        units,
        num_inducing=1024,
        gp_kernel_type="gaussian",
        gp_kernel_scale=1.0,
        gp_output_bias=0.0,
        normalize_input=False,
        gp_cov_momentum=0.999,
        gp_cov_ridge_penalty=1.0,
        gp_cov_likelihood="gaussian",
        scale_random_features=True,
        use_custom_random_features=True,
        custom_random_features_initializer=None,
        l2_regularization=1e-6,
        return_gp_cov=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__
        check_choice(name, "gp_kernel_type", gp_kernel_type, GP_KERNEL_TYPES)
        if float(gp_kernel_scale) <= 0.0:
            raise NlpkitError(f"{name}(gp_kernel_scale={gp_kernel_scale}) must be > 0")
        if int(units) < 1 or int(num_inducing) < 1:
            raise NlpkitError(f"{name}(units={units}, num_inducing={num_inducing}) must both be >= 1")
        self.units = int(units)
        self.num_inducing = int(num_inducing)
        self.gp_kernel_type = gp_kernel_type
        self.gp_kernel_scale = float(gp_kernel_scale)
        self.gp_output_bias = float(gp_output_bias)
        self.normalize_input = bool(normalize_input)
        self.gp_cov_momentum = float(gp_cov_momentum)
        self.gp_cov_ridge_penalty = float(gp_cov_ridge_penalty)
        self.gp_cov_likelihood = gp_cov_likelihood
        self.scale_random_features = bool(scale_random_features)
        self.use_custom_random_features = bool(use_custom_random_features)
        if custom_random_features_initializer is not None:
            custom_random_features_initializer = keras.initializers.get(custom_random_features_initializer)
        self.custom_random_features_initializer = custom_random_features_initializer
        self.l2_regularization = float(l2_regularization)
        self.return_gp_cov = bool(return_gp_cov)

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
            self.random_kernel = _float32_weight(
                self, "random_kernel", (input_dim, num_features), self._feature_initializer()
            )
            self.random_bias = _float32_weight(
                self, "random_bias", (num_features,), keras.initializers.RandomUniform(0.0, 2.0 * math.pi)
            )
        regularizer = keras.regularizers.L2(self.l2_regularization) if self.l2_regularization > 0 else None
        self.output_kernel = _float32_weight(
            self, "output_kernel", (num_features, self.units), "glorot_uniform", trainable=True, regularizer=regularizer
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
        features = ops.cos(ops.matmul(inputs, self.random_kernel) + self.random_bias)
        if self.scale_random_features:
            features = features * math.sqrt(2.0 / self.num_inducing)
        return features

    def reset_covariance_matrix(self):
        """Reset the precision matrix to the prior (call at the start of every epoch)."""
        self.covariance.reset_precision_matrix()

    def call(self, inputs, training=None):
        features = self.random_features(inputs)
        logits = ops.matmul(features, self.output_kernel) + self.gp_output_bias
        if self.return_gp_cov:
            return logits, self.covariance(features, logits, training=training)
        if training:
            self.covariance(features, logits, training=True)  # the precision update, even when not returned
        return logits

    def compute_output_shape(self, input_shape):
        logits_shape = (input_shape[0], self.units)
        return (logits_shape, (input_shape[0], input_shape[0])) if self.return_gp_cov else logits_shape

    def get_config(self):
        initializer = self.custom_random_features_initializer
        return {
            **super().get_config(),
            "units": self.units,
            "num_inducing": self.num_inducing,
            "gp_kernel_type": self.gp_kernel_type,
            "gp_kernel_scale": self.gp_kernel_scale,
            "gp_output_bias": self.gp_output_bias,
            "normalize_input": self.normalize_input,
            "gp_cov_momentum": self.gp_cov_momentum,
            "gp_cov_ridge_penalty": self.gp_cov_ridge_penalty,
            "gp_cov_likelihood": self.gp_cov_likelihood,
            "scale_random_features": self.scale_random_features,
            "use_custom_random_features": self.use_custom_random_features,
            "custom_random_features_initializer": (
                None if initializer is None else keras.initializers.serialize(initializer)
            ),
            "l2_regularization": self.l2_regularization,
            "return_gp_cov": self.return_gp_cov,
        }


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


@keras.saving.register_keras_serializable(package="nlpkit")
class GaussianProcessClassificationHead(keras.layers.Layer):
    """SNGP classification head: pooling (CLS or mean) -> spectral-normalised dense -> GP output layer.

    Args:
      inner_dim: width of the hidden dense layer (0: no hidden layer, the pooled vector goes to the GP).
      num_classes: K, number of classes.
      cls_token_idx: position of the token pooled from the sequence with `pooling="cls"`.
      activation: activation of the hidden layer.
      dropout_rate: dropout before the output layer (as in `ClassificationHead`).
      initializer: kernel initializer of the hidden layer (and of the dense output without GP).
      use_spec_norm: wrap the hidden layer in `SpectralNormalization`.
      spec_norm_kwargs: arguments of `SpectralNormalization` (iteration, norm_multiplier).
      use_gp_layer: output through `RandomFeatureGaussianProcess`; False: a plain dense layer.
      gp_layer_kwargs: arguments of `RandomFeatureGaussianProcess` except `units` and `return_gp_cov`.
      pooling: "cls" or "mean" (mean over the tokens where input_mask is 1). The random features
        are not linear, so dropout noise in one token's state is not averaged out by training as it
        is for a linear head: on a weakly pretrained encoder "mean" is the one that learns.

    Call: `head(sequence [B, T, D], input_mask=None, training=None, return_covariance=False)` ->
    logits `[B, K]`, or `(logits, covariance [B, B])` with `return_covariance` (needs `use_gp_layer`);
    input_mask `[B, T]` (1 = token, 0 = padding) is used by mean pooling.
    """

    def __init__(
        self,
        inner_dim,
        num_classes,
        cls_token_idx=0,
        activation="tanh",
        dropout_rate=0.0,
        initializer="glorot_uniform",
        use_spec_norm=True,
        spec_norm_kwargs=None,
        use_gp_layer=True,
        gp_layer_kwargs=None,
        pooling="cls",
        **kwargs,
    ):
        super().__init__(**kwargs)
        reserved = {"units", "return_gp_cov"} & set(gp_layer_kwargs or {})
        if reserved:
            raise NlpkitError(
                f"{type(self).__name__}(gp_layer_kwargs=...) must not set {', '.join(sorted(reserved))}",
                hint="the head sets them from num_classes and return_covariance",
            )
        self.inner_dim = int(inner_dim)
        self.num_classes = int(num_classes)
        self.cls_token_idx = int(cls_token_idx)
        self.activation = keras.activations.get(activation)
        self.dropout_rate = float(dropout_rate)
        self.initializer = keras.initializers.get(initializer)
        self.use_spec_norm = bool(use_spec_norm)
        self.spec_norm_kwargs = dict(spec_norm_kwargs or {})
        self.use_gp_layer = bool(use_gp_layer)
        self.gp_layer_kwargs = dict(gp_layer_kwargs or {})
        self.pooling = check_choice(type(self).__name__, "pooling", pooling, POOLINGS)

        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy, name="dropout")
        self.dense = self._hidden_layer() if self.inner_dim else None
        self.out_proj = self._output_layer()

    def _hidden_layer(self):
        dense = keras.layers.Dense(
            self.inner_dim,
            activation=self.activation,
            kernel_initializer=self.initializer,
            dtype=self.dtype_policy,
            name="pooler_dense",
        )
        if not self.use_spec_norm:
            return dense
        return SpectralNormalization(dense, **self.spec_norm_kwargs, dtype=self.dtype_policy, name="spectral_norm")

    def _output_layer(self):
        if self.use_gp_layer:
            return RandomFeatureGaussianProcess(
                self.num_classes, **self.gp_layer_kwargs, return_gp_cov=True, dtype=self.dtype_policy, name="gp"
            )
        return keras.layers.Dense(
            self.num_classes,
            kernel_initializer=self.initializer,
            dtype=self.dtype_policy,
            name="logits",
        )

    def build(self, inputs_shape, input_mask_shape=None):
        if len(inputs_shape) != 3:
            raise NlpkitError(
                f"{type(self).__name__} takes a [batch, length, width] sequence, got shape {tuple(inputs_shape)}",
                hint="pass the encoder's sequence_output",
            )
        pooled_shape = (inputs_shape[0], inputs_shape[-1])
        if self.dense is not None:
            self.dense.build(pooled_shape)
            pooled_shape = (inputs_shape[0], self.inner_dim)
        self.out_proj.build(pooled_shape)

    def reset_covariance_matrix(self):
        """Reset the GP layer's precision matrix (nothing to do without a GP layer)."""
        if self.use_gp_layer:
            self.out_proj.reset_covariance_matrix()

    def call(self, inputs, input_mask=None, training=None, return_covariance=False):
        if return_covariance and not self.use_gp_layer:
            raise NlpkitError(f"{type(self).__name__}: return_covariance=True needs use_gp_layer=True")
        x = pool_sequence(inputs, self.pooling, self.cls_token_idx, input_mask)
        if self.dense is not None:
            x = self.dense(x, training=training)
        x = self.dropout(x, training=training)
        if not self.use_gp_layer:
            return ops.cast(self.out_proj(x), "float32")
        logits, covariance = self.out_proj(x, training=training)
        return (logits, covariance) if return_covariance else logits

    def get_config(self):
        return {
            **super().get_config(),
            "inner_dim": self.inner_dim,
            "num_classes": self.num_classes,
            "cls_token_idx": self.cls_token_idx,
            "activation": keras.activations.serialize(self.activation),
            "dropout_rate": self.dropout_rate,
            "initializer": keras.initializers.serialize(self.initializer),
            "use_spec_norm": self.use_spec_norm,
            "spec_norm_kwargs": self.spec_norm_kwargs,
            "use_gp_layer": self.use_gp_layer,
            "gp_layer_kwargs": self.gp_layer_kwargs,
            "pooling": self.pooling,
        }


class ResetCovarianceCallback(keras.callbacks.Callback):
    """Resets every GP layer's precision matrix at the start of every epoch.

    Finds the layers with a `reset_covariance_matrix()` method among `model.layers` (and those of
    nested models); `GaussianProcessClassificationHead` and `RandomFeatureGaussianProcess` have one.
    With `gp_cov_momentum < 0` the precision is then an exact sum over one epoch's data.
    """

    def on_train_begin(self, logs=None):
        if not _layers_with_covariance(self.model):
            raise NlpkitError(
                "ResetCovarianceCallback: the model has no layer with reset_covariance_matrix()",
                hint="use it with an SNGP head (GaussianProcessClassificationHead) or drop the callback",
            )

    def on_epoch_begin(self, epoch, logs=None):
        for layer in _layers_with_covariance(self.model):
            layer.reset_covariance_matrix()


def _layers_with_covariance(model):
    found, pending = [], [model]
    while pending:
        layer = pending.pop()
        if hasattr(layer, "reset_covariance_matrix"):
            found.append(layer)
        else:
            pending.extend(getattr(layer, "layers", []))
    return found
