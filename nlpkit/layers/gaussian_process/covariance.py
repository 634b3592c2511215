"""Laplace posterior covariance of a random-feature GP's output weights, and its per-epoch reset.

Everything here computes in float32, also under mixed precision: a Cholesky factorisation needs
the precision.
"""

import keras
from keras import ops

from nlpkit.errors import NlpkitError, check_choice

GP_COV_LIKELIHOODS = ("gaussian", "binary_logistic")


def float32_weight(layer, name, shape, initializer, trainable=False, regularizer=None):
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
        self.precision_matrix = float32_weight(
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
