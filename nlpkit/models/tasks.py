"""Task models beyond single-label classification (the recipes that train them: `nlpkit.training.tasks`).

Models (backend-agnostic Keras 3; each takes an nlpkit encoder: dict of `input_word_ids`,
`input_mask`, `input_type_ids` `[B, T]` in, `sequence_output [B, T, D]` out):
- `MultiLabelClassifier`: pooled sequence -> L logits; sigmoid probabilities, binary cross-entropy.
- `TextRegressor`: pooled sequence -> one value (the standardised target); mean squared error.
- `TokenTagger`: every token -> C tag logits; sparse cross-entropy that ignores IGNORE_INDEX (-100).
"""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.text.alignment import IGNORE_INDEX


def _encoder_width(encoder, inner_dim):
    return inner_dim or encoder.get_config().get("hidden_size") or 128


class _EncoderModel(keras.Model):
    """What the task models share: the encoder, its (de)serialisation, and a build config."""

    def __init__(self, encoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder

    def get_build_config(self):
        # As TextClassifier: a model only used through predict_outputs records no input shapes.
        return super().get_build_config() or self.encoder.get_build_config()

    def get_config(self):
        config = super().get_config()
        config["encoder"] = keras.saving.serialize_keras_object(self.encoder)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


class _PooledHeadModel(_EncoderModel):
    """Encoder + `ClassificationHead` (pooling, dense, dropout, `num_outputs` units)."""

    def __init__(self, encoder, num_outputs, inner_dim=None, dropout_rate=0.1, pooling="cls", **kwargs):
        super().__init__(encoder, **kwargs)
        from nlpkit.layers.heads import ClassificationHead

        self.inner_dim = inner_dim
        self.dropout_rate = dropout_rate
        self.pooling = pooling
        self.head_layer = ClassificationHead(
            inner_dim=_encoder_width(encoder, inner_dim), num_classes=num_outputs, dropout_rate=dropout_rate,
            pooling=pooling, dtype=self.dtype_policy,
        )

    def _head_outputs(self, inputs, training):
        sequence = self.encoder(inputs, training=training)["sequence_output"]
        return ops.cast(self.head_layer(sequence, input_mask=inputs["input_mask"], training=training), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(inner_dim=self.inner_dim, dropout_rate=self.dropout_rate, pooling=self.pooling)
        return config


@keras.saving.register_keras_serializable(package="nlpkit")
class MultiLabelClassifier(_PooledHeadModel):
    """Several independent yes/no labels per text.

    Args: encoder; num_labels: L; inner_dim: head's hidden width (default: encoder width D);
    dropout_rate: in the head; pooling: "cls" or "mean"; thresholds: L decision thresholds
    (default 0.5 each; `nlpkit finetune` fits them on the validation split).
    Call: logits `[B, L]` float32 (train with `binary_crossentropy(from_logits=True)`).
    `predict_outputs(inputs)`: dict `logits`, `probabilities` (sigmoid) `[B, L]`, and `labels` int32
    `[B, L]` (1 where the probability is at or above its label's threshold).
    """

    def __init__(self, encoder, num_labels, inner_dim=None, dropout_rate=0.1, pooling="cls", thresholds=None,
                 **kwargs):
        if num_labels < 2:
            raise NlpkitError(f"a multi-label model needs at least 2 labels, got {num_labels}", hint="check the labels")
        super().__init__(encoder, num_labels, inner_dim, dropout_rate, pooling, **kwargs)
        self.num_labels = num_labels
        self.thresholds = [0.5] * num_labels if thresholds is None else [float(t) for t in thresholds]
        if len(self.thresholds) != num_labels:
            raise NlpkitError(f"{len(self.thresholds)} thresholds for {num_labels} labels",
                              hint="the model directory is damaged")

    def call(self, inputs, training=None):
        return self._head_outputs(inputs, training)

    def predict_outputs(self, inputs):
        logits = self._head_outputs(inputs, False)
        probabilities = ops.sigmoid(logits)
        chosen = probabilities >= ops.convert_to_tensor(self.thresholds, "float32")[None, :]
        return {"logits": logits, "probabilities": probabilities, "labels": ops.cast(chosen, "int32")}

    def get_config(self):
        return {**super().get_config(), "num_labels": self.num_labels, "thresholds": list(self.thresholds)}


@keras.saving.register_keras_serializable(package="nlpkit")
class TextRegressor(_PooledHeadModel):
    """One real value per text, trained in standardised units, predicted in the label's units.

    Args: encoder; inner_dim, dropout_rate, pooling as `MultiLabelClassifier`; target_mean,
    target_std: the training labels' mean and standard deviation (`TargetScaler`).
    Call: `[B]` float32 standardised (train with mean squared error on standardised targets).
    `predict_outputs(inputs)`: dict `value` `[B]` in the label's units (`call * target_std + target_mean`).
    """

    def __init__(self, encoder, inner_dim=None, dropout_rate=0.1, pooling="cls", target_mean=0.0, target_std=1.0,
                 **kwargs):
        super().__init__(encoder, 1, inner_dim, dropout_rate, pooling, **kwargs)
        self.target_mean, self.target_std = float(target_mean), float(target_std)

    def call(self, inputs, training=None):
        return self._head_outputs(inputs, training)[:, 0]

    def predict_outputs(self, inputs):
        return {"value": self.call(inputs, training=False) * self.target_std + self.target_mean}

    def get_config(self):
        return {**super().get_config(), "target_mean": self.target_mean, "target_std": self.target_std}


@keras.saving.register_keras_serializable(package="nlpkit")
class TokenTagger(_EncoderModel):
    """A tag for every token: dropout and a dense layer on each position of `sequence_output`.

    Args: encoder; num_tags: C; dropout_rate: before the dense layer.
    Call: logits `[B, T, C]` float32 (train with sparse cross-entropy ignoring IGNORE_INDEX).
    `predict_outputs(inputs)`: dict `logits`, `probabilities` (softmax) `[B, T, C]`, `label` int32 `[B, T]`.
    """

    def __init__(self, encoder, num_tags, dropout_rate=0.1, **kwargs):
        super().__init__(encoder, **kwargs)
        if num_tags < 2:
            raise NlpkitError(f"a tagger needs at least 2 tags, got {num_tags}", hint="check the tags")
        self.num_tags = num_tags
        self.dropout_rate = dropout_rate
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(num_tags, dtype=self.dtype_policy, name="tag_logits")

    def call(self, inputs, training=None):
        sequence = self.encoder(inputs, training=training)["sequence_output"]
        return ops.cast(self.classifier(self.dropout(sequence, training=training)), "float32")

    def predict_outputs(self, inputs):
        logits = self.call(inputs, training=False)
        return {"logits": logits, "probabilities": ops.softmax(logits, axis=-1),
                "label": ops.cast(ops.argmax(logits, axis=-1), "int32")}

    def get_config(self):
        return {**super().get_config(), "num_tags": self.num_tags, "dropout_rate": self.dropout_rate}


def token_loss():
    """Mean sparse cross-entropy over the positions whose label is not IGNORE_INDEX."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_INDEX)
