"""Text classification: any nlpkit encoder + a ClassificationHead or an SNGP head."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError

HEADS = ("classification", "sngp")
# Per-head defaults of TextClassifier's pooling and dropout_rate. The SNGP head's random features
# are not linear in their input, so noise there does not average out in training as it does for a
# linear head: on a weakly pretrained encoder, dropout noise in the CLS state was ten times the
# distance between examples and the head learned nothing. The mean over tokens is far less noisy.
HEAD_DEFAULTS = {
    "classification": {"pooling": "cls", "dropout_rate": 0.1},
    "sngp": {"pooling": "mean", "dropout_rate": 0.0},
}


def _make_head(head, num_classes, inner_dim, dropout_rate, head_kwargs, dtype):
    if head == "classification":
        from nlpkit.layers.heads import ClassificationHead

        return ClassificationHead(
            inner_dim=inner_dim, num_classes=num_classes, dropout_rate=dropout_rate, **head_kwargs, dtype=dtype
        )
    from nlpkit.layers.gaussian_process import GaussianProcessClassificationHead

    # The training loop resets the precision matrix every epoch, so it can be the exact sum over
    # one epoch's features (momentum < 0). A moving average with momentum 0.999 would stay near
    # its ridge prior over a fine-tuning epoch of a few hundred steps, and the variance would
    # then barely depend on the input. The head's other defaults (`GP_HEAD_DEFAULTS`: unscaled
    # random features, so the logits can grow at a fine-tuning learning rate) apply.
    gp_layer_kwargs = {"gp_cov_momentum": -1.0, **head_kwargs.get("gp_layer_kwargs", {})}
    head_kwargs = {**head_kwargs, "gp_layer_kwargs": gp_layer_kwargs}
    return GaussianProcessClassificationHead(
        inner_dim=inner_dim, num_classes=num_classes, dropout_rate=dropout_rate, **head_kwargs, dtype=dtype
    )


def sngp_feature_scale(head_kwargs, default):
    """SNGP head arguments that state each GP default that has changed (`LEGACY_GP_DEFAULTS`:
    `scale_random_features`, `gp_kernel_scale`) unless given: new heads (`default` False) take
    today's `GP_HEAD_DEFAULTS` (unscaled features, kernel scale 10), heads saved before (`default`
    True) the old values (scaled features, kernel scale 1); a saved config then says which it is
    (see `TextClassifier.from_config`)."""
    from nlpkit.layers.gaussian_process.head import GP_HEAD_DEFAULTS, LEGACY_GP_DEFAULTS

    values = LEGACY_GP_DEFAULTS if default else {key: GP_HEAD_DEFAULTS[key] for key in LEGACY_GP_DEFAULTS}
    unstated = {key: value for key, value in values.items() if key not in head_kwargs}  # flat form: as given
    return {**head_kwargs, "gp_layer_kwargs": {**unstated, **head_kwargs.get("gp_layer_kwargs", {})}}


# Uncalibrated inference: temperature 1 (classification head) and the probit mean-field factor
# pi/8 (SNGP head), what a directory without a fitted calibration applies.
UNCALIBRATED_MEAN_FIELD_FACTOR = 3.14159265 / 8.0
UNCALIBRATED = {"temperature": 1.0, "mean_field_factor": UNCALIBRATED_MEAN_FIELD_FACTOR}


def calibrated_logits(logits, variance=None, temperature=1.0, mean_field_factor=UNCALIBRATED_MEAN_FIELD_FACTOR):
    """Post-hoc calibrated logits `[B, C]` (float32): the SNGP head's mean-field logits
    `logits / sqrt(1 + mean_field_factor * variance)` when `variance [B]` is given, else `logits / temperature`."""
    from nlpkit.layers.gaussian_process import mean_field_logits

    logits = ops.cast(logits, "float32")
    if variance is not None:
        return mean_field_logits(logits, ops.cast(variance, "float32"), mean_field_factor)
    return logits / temperature


def _check_calibration(head, temperature, mean_field_factor):
    import math

    if not (math.isfinite(temperature) and temperature > 0):
        raise NlpkitError(f"TextClassifier(temperature={temperature}) must be a finite number > 0")
    if head == "sngp" and temperature != 1.0:
        raise NlpkitError("TextClassifier: a temperature is for the classification head; SNGP calibrates "
                          "with mean_field_factor", hint="the model directory is damaged")
    if not (math.isfinite(mean_field_factor) and mean_field_factor >= 0):
        raise NlpkitError(f"TextClassifier(mean_field_factor={mean_field_factor}) must be a finite number >= 0")


@keras.saving.register_keras_serializable(package="nlpkit")
class TextClassifier(keras.Model):
    """An encoder with a classification head on its `sequence_output` (the head pools it).

    Args:
      encoder: an nlpkit encoder (dict of `input_word_ids`, `input_mask`, `input_type_ids` in,
        dict with `sequence_output [B, T, D]` out).
      num_classes: C.
      head: "classification" (`ClassificationHead`) or "sngp" (`GaussianProcessClassificationHead`:
        spectral-normalised hidden layer + random-feature Gaussian process output).
      inner_dim: width of the head's hidden dense layer (default: the encoder width D).
      dropout_rate: dropout in the head (None: 0.1 for "classification", 0 for "sngp").
      head_kwargs: further arguments of the head layer.
      pooling: how the head pools the sequence: "cls" (the first token) or "mean" (over the
        tokens of `input_mask`); None: "cls" for "classification", "mean" for "sngp".
      mean_field_factor: SNGP only: the lambda (>= 0) of the mean-field approximation
        `logits / sqrt(1 + lambda * variance)` used for probabilities at inference (fitted on the
        validation split by `nlpkit finetune --calibrate`).
      temperature: classification head only: T > 0 of the post-hoc calibration `logits / T` used
        for probabilities at inference (fitted by `nlpkit finetune --calibrate`; 1: none).

    Call: `model(inputs)` -> logits `[B, C]` (float32); what `fit` trains.
    `model.predict_outputs(inputs)` -> dict `logits` (calibrated), `probabilities`, `label` (and
    `variance` for SNGP); it is `outputs_from_head(head_outputs(inputs))`.
    """

    def __init__(
        self,
        encoder,
        num_classes: int,
        head: str = "classification",
        inner_dim: int | None = None,
        dropout_rate: float | None = None,
        head_kwargs: dict | None = None,
        mean_field_factor: float = UNCALIBRATED_MEAN_FIELD_FACTOR,
        pooling: str | None = None,
        temperature: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise NlpkitError(f"a classifier needs at least 2 classes, got {num_classes}", hint="check the labels")
        if head not in HEADS:
            raise NlpkitError(f"unknown head '{head}'", hint=f"use one of: {', '.join(HEADS)}")
        defaults = HEAD_DEFAULTS[head]
        self.encoder = encoder
        self.num_classes = num_classes
        self.head = head
        self.inner_dim = inner_dim
        self.dropout_rate = defaults["dropout_rate"] if dropout_rate is None else dropout_rate
        self.head_kwargs = dict(head_kwargs or {})
        if head == "sngp":
            self.head_kwargs = sngp_feature_scale(self.head_kwargs, False)
        self.mean_field_factor = float(mean_field_factor)
        self.temperature = float(temperature)
        _check_calibration(head, self.temperature, self.mean_field_factor)
        self.pooling = pooling or defaults["pooling"]
        width = inner_dim or encoder.get_config().get("hidden_size") or 128
        head_kwargs = {"pooling": self.pooling, **self.head_kwargs}
        self.head_layer = _make_head(head, num_classes, width, self.dropout_rate, head_kwargs, self.dtype_policy)

    def call(self, inputs, training=None):
        sequence = self.encoder(inputs, training=training)["sequence_output"]
        logits = self.head_layer(sequence, input_mask=inputs["input_mask"], training=training)
        return ops.cast(logits, "float32")

    def head_outputs(self, inputs):
        """Uncalibrated inference outputs: `logits [B, C]` (float32) and, for SNGP, `variance [B]`."""
        sequence = self.encoder(inputs, training=False)["sequence_output"]
        if self.head != "sngp":
            return {"logits": ops.cast(self.head_layer(sequence, input_mask=inputs["input_mask"], training=False),
                                       "float32")}
        logits, covariance = self.head_layer(
            sequence, input_mask=inputs["input_mask"], training=False, return_covariance=True
        )
        return {"logits": ops.cast(logits, "float32"), "variance": ops.diagonal(ops.cast(covariance, "float32"))}

    def outputs_from_head(self, head_outputs, calibration=None):
        """Inference outputs from `head_outputs`: calibrated `logits`, `probabilities`, `label` (int32)
        (and `variance` for SNGP). `calibration`: {"temperature": T} or {"mean_field_factor": lambda}
        overriding the model's own (e.g. `UNCALIBRATED` for the raw outputs)."""
        calibration = {"temperature": self.temperature, "mean_field_factor": self.mean_field_factor,
                       **(calibration or {})}
        logits = calibrated_logits(head_outputs["logits"], head_outputs.get("variance"), **calibration)
        outputs = {"logits": logits, "probabilities": ops.softmax(logits, axis=-1),
                   "label": ops.cast(ops.argmax(logits, axis=-1), "int32")}
        if "variance" in head_outputs:
            outputs["variance"] = ops.cast(head_outputs["variance"], "float32")
        return outputs

    def predict_outputs(self, inputs):
        """Inference outputs (calibrated): logits, probabilities, label (int32) and, for SNGP, variance."""
        return self.outputs_from_head(self.head_outputs(inputs))

    @property
    def calibration(self):
        """The post-hoc calibration this head applies: {"temperature": T} or {"mean_field_factor": lambda}."""
        if self.head == "sngp":
            return {"mean_field_factor": self.mean_field_factor}
        return {"temperature": self.temperature}

    def reset_covariance_matrix(self):
        """SNGP: start a new precision-matrix estimate (called at the start of every epoch)."""
        if hasattr(self.head_layer, "reset_covariance_matrix"):
            self.head_layer.reset_covariance_matrix()

    def get_build_config(self):
        # Only `__call__` records the input shapes Keras rebuilds a loaded model from; a model used
        # through `predict_outputs` alone has built weights but none recorded, and would load unbuilt
        # and without its weights. Its encoder was called with the same inputs, so it has them.
        return super().get_build_config() or self.encoder.get_build_config()

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            num_classes=self.num_classes,
            head=self.head,
            inner_dim=self.inner_dim,
            dropout_rate=self.dropout_rate,
            head_kwargs=self.head_kwargs,
            mean_field_factor=self.mean_field_factor,
            pooling=self.pooling,
            temperature=self.temperature,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config.setdefault("pooling", "cls")  # saved before pooling was an option: they pooled CLS
        if config.get("head") == "sngp":  # saved before unscaled random features: they were scaled
            config["head_kwargs"] = sngp_feature_scale(config.get("head_kwargs") or {}, True)
        return cls(**config)
