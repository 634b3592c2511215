"""The SNGP classification head: pooling -> spectral-normalised dense -> random-feature GP output layer."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError, check_choice
from nlpkit.layers.gaussian_process.layer import RandomFeatureGaussianProcess, mean_field_logits
from nlpkit.layers.heads import POOLINGS, pool_sequence
from nlpkit.layers.spectral_norm import SpectralNormalization

# Flat GP-layer arguments the head takes (Model Garden's `extract_gp_layer_kwargs` names, plus
# nlpkit's kernel arguments), and the head's defaults for them. Unscaled random features: with
# the sqrt(2/M) scale |phi| = 1 and the logits can only be as large as the output weights, which
# start at |beta_k| ~ 1.4 (Glorot over M = 1024 inputs) and move by ~lr x steps x sqrt(M) ~ 0.1 in a
# fine-tuning run; softmax over K classes then tops out near e^g / (e^g + K - 1) for a logit gap
# g ~ 1, e.g. 0.36 for K = 6 (see benchmarks/sngp_calibration.py). Model Garden's head also
# turns the scale off. Squared length scale 10, not Model Garden's 1: mean-pooled MiniLM sentences
# are a median 4.35 apart after the spectral-normalised tanh layer (nearest of 400: ~3), so
# exp(-d^2 / 2) ~ 1e-4 for a typical pair, below the random-feature noise (~1 / sqrt(M)): the GP can
# only memorise. With 10 it is 0.39 (0.6 to the nearest); on frozen features (benchmarks/sngp_head_screen.py)
# reviews accuracy 0.687 -> 0.745 (classification head 0.743). `normalize_input` stays off: a layer
# norm makes |x|^2 = D and the distances ~sqrt(2 D), farther still.
GP_HEAD_DEFAULTS = {
    "num_inducing": 1024,
    "gp_kernel_type": "gaussian",
    "gp_kernel_scale": 10.0,
    "gp_output_bias": 0.0,
    "normalize_input": False,
    "gp_cov_momentum": 0.999,
    "gp_cov_ridge_penalty": 1.0,
    "scale_random_features": False,
    "l2_regularization": 1e-6,
    "gp_cov_likelihood": "gaussian",
    "return_random_features": False,
    "use_custom_random_features": True,
    "custom_random_features_initializer": None,
    "custom_random_features_activation": None,
}
# What a head saved before the flat arguments existed was built with (see `from_config`), for
# each default changed since; `nlpkit.models.classifier.sngp_feature_scale` fills the same values.
LEGACY_GP_DEFAULTS = {"scale_random_features": True, "gp_kernel_scale": 1.0}
# Flat spectral-norm arguments: Model Garden's head names, and the names SNGP write-ups use.
_SPEC_NORM_ALIASES = {"iteration": "iteration", "norm_multiplier": "norm_multiplier",
                      "spec_norm_iteration": "iteration", "spec_norm_bound": "norm_multiplier"}
SPEC_NORM_DEFAULTS = {"iteration": 1, "norm_multiplier": 0.95}


def _merge(owner, defaults, nested, flat):
    """defaults < nested dict < flat arguments; a flat value that contradicts the nested one is an error."""
    for key, value in flat.items():
        if key in nested and nested[key] != value:
            raise NlpkitError(f"{owner}: {key}={value!r} contradicts {key}={nested[key]!r} in the nested kwargs",
                              hint="give it once")
    return {**defaults, **nested, **flat}


@keras.saving.register_keras_serializable(package="nlpkit")
class GaussianProcessClassificationHead(keras.layers.Layer):
    """SNGP classification head: pooling (CLS or mean) -> spectral-normalised dense -> GP output layer.

    Takes Model Garden's flat arguments (`num_inducing`, `normalize_input`, `gp_cov_momentum`,
    `gp_cov_ridge_penalty`, `scale_random_features`, `l2_regularization`, `gp_cov_likelihood`,
    `return_gp_cov`, `return_random_features`, `use_custom_random_features`,
    `custom_random_features_initializer`, `custom_random_features_activation`, `iteration`,
    `norm_multiplier`, `temperature`; also `gp_kernel_type`, `gp_kernel_scale`, `gp_output_bias`,
    and `spec_norm_iteration` / `spec_norm_bound` for `iteration` / `norm_multiplier`) alongside the
    nested `gp_layer_kwargs` / `spec_norm_kwargs`; a flat value wins over the defaults
    (`GP_HEAD_DEFAULTS`, `SPEC_NORM_DEFAULTS`) and must agree with a nested one. The config holds
    the resolved values in both forms.

    Args:
      inner_dim: width of the hidden dense layer (0: no hidden layer, the pooled vector goes to the GP).
      num_classes: K, number of classes.
      cls_token_idx: position of the token pooled from the sequence with `pooling="cls"`.
      activation: activation of the hidden layer.
      dropout_rate: dropout before the output layer (as in `ClassificationHead`).
      initializer: kernel initializer of the hidden layer and of the output weights.
      use_spec_norm: wrap the hidden layer in `SpectralNormalization`.
      spec_norm_kwargs: arguments of `SpectralNormalization` (iteration, norm_multiplier).
      use_gp_layer: output through `RandomFeatureGaussianProcess`; False: a plain dense layer.
      gp_layer_kwargs: arguments of `RandomFeatureGaussianProcess` except `units`, `return_gp_cov`
        and `kernel_initializer`.
      pooling: "cls" or "mean" (mean over the tokens where input_mask is 1). The random features
        are not linear, so dropout noise in one token's state is not averaged out by training as it
        is for a linear head: on a weakly pretrained encoder "mean" is the one that learns.
      temperature: Model Garden's name for the mean-field factor applied to the logits of
        inference calls (`mean_field_logits`); None: raw logits (`TextClassifier` applies its own).
      return_gp_cov: must be True (the head decides with `return_covariance`).
      **flat: the flat GP and spectral-norm arguments listed above; other keys go to `keras.layers.Layer`.

    Call: `head(sequence [B, T, D], input_mask=None, training=None, return_covariance=False)` ->
    logits `[B, K]`, or `(logits, covariance [B, B])` with `return_covariance` (needs `use_gp_layer`);
    with `return_random_features` the random features `[B, M]` are appended (a tuple).
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
        temperature=None,
        return_gp_cov=True,
        **kwargs,
    ):
        owner = type(self).__name__
        flat_gp = {key: kwargs.pop(key) for key in list(kwargs) if key in GP_HEAD_DEFAULTS}
        flat_norm = {_SPEC_NORM_ALIASES[key]: kwargs.pop(key) for key in list(kwargs) if key in _SPEC_NORM_ALIASES}
        super().__init__(**kwargs)
        reserved = {"units", "return_gp_cov", "kernel_initializer"} & set(gp_layer_kwargs or {})
        if reserved or not return_gp_cov:
            raise NlpkitError(
                f"{owner}: gp_layer_kwargs must not set {', '.join(sorted(reserved))}" if reserved
                else f"{owner}(return_gp_cov=False) is not supported",
                hint="the head sets units from num_classes, the covariance from return_covariance, "
                     "the output weights' initializer from initializer",
            )
        self.inner_dim = int(inner_dim or 0)
        self.num_classes = int(num_classes)
        self.cls_token_idx = int(cls_token_idx)
        self.activation = keras.activations.get(activation)
        self.dropout_rate = float(dropout_rate)
        self.initializer = keras.initializers.get(initializer)
        self.use_spec_norm = bool(use_spec_norm)
        self.spec_norm_kwargs = _merge(owner, SPEC_NORM_DEFAULTS, dict(spec_norm_kwargs or {}), flat_norm)
        self.use_gp_layer = bool(use_gp_layer)
        self.gp_layer_kwargs = _merge(owner, GP_HEAD_DEFAULTS, dict(gp_layer_kwargs or {}), flat_gp)
        self.pooling = check_choice(owner, "pooling", pooling, POOLINGS)
        self.temperature = None if temperature is None else float(temperature)
        self.return_gp_cov = True

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
                self.num_classes, **self.gp_layer_kwargs, return_gp_cov=True,
                kernel_initializer=keras.initializers.get(keras.initializers.serialize(self.initializer)),
                dtype=self.dtype_policy, name="gp",
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
        logits, covariance, *features = self.out_proj(x, training=training)
        if not training and self.temperature is not None:
            logits = mean_field_logits(logits, covariance, self.temperature)
        outputs = (logits, covariance) if return_covariance else (logits,)
        outputs += tuple(features)
        return outputs[0] if len(outputs) == 1 else outputs

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
            "spec_norm_kwargs": dict(self.spec_norm_kwargs),
            "use_gp_layer": self.use_gp_layer,
            "gp_layer_kwargs": dict(self.gp_layer_kwargs),
            "pooling": self.pooling,
            "temperature": self.temperature,
            "return_gp_cov": self.return_gp_cov,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "temperature" not in config:  # saved before the flat arguments: its defaults were the layer's
            config["gp_layer_kwargs"] = {**LEGACY_GP_DEFAULTS, **(config.get("gp_layer_kwargs") or {})}
        return cls(**config)
