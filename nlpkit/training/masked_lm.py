"""The masked-LM pretraining model: an encoder + a `MaskedLM` head tied to its word embeddings.

Backend-agnostic Keras 3: the same model trains under TensorFlow (`nlpkit pretrain`) and JAX
(`benchmarks/pretrain_step.py`).
"""

import keras

from nlpkit.encoders.base import INPUT_NAMES

MLM_FEATURES = (*INPUT_NAMES, "masked_lm_positions")


def masked_lm_head(encoder):
    """The `MaskedLM` head for `encoder`, its output projection tied to the word-embedding table."""
    from nlpkit.layers.heads import MaskedLM

    return MaskedLM(
        embedding_layer=encoder.word_embeddings,
        activation=getattr(encoder, "inner_activation", "gelu"),
        initializer=keras.initializers.TruncatedNormal(stddev=getattr(encoder, "initializer_range", 0.02)),
        norm_epsilon=getattr(encoder, "norm_epsilon", 1e-12),
        name="masked_lm",
        dtype=encoder.dtype_policy,
    )


@keras.saving.register_keras_serializable(package="nlpkit")
class MaskedLMPretrainer(keras.Model):
    """Encoder + masked-LM head.

    Args:
      encoder: an nlpkit encoder (dict in, dict with `sequence_output` `[B, T, D]` out) whose word
        embeddings are the `word_embeddings` attribute.
      head: the head layer, called `head(sequence_output, masked_lm_positions)`; default
        `masked_lm_head(encoder)`.

    Call: `model(features)` with `input_word_ids`, `input_mask`, `input_type_ids` (int `[B, T]`)
    and `masked_lm_positions` (int `[B, P]`). Output: logits `[B, P, V]` (float32).
    Train with `masked_lm_loss()` as loss, `masked_lm_ids` as targets and `masked_lm_weights`
    as sample weights.
    """

    def __init__(self, encoder, head=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head if head is not None else masked_lm_head(encoder)

    def call(self, features, training=None):
        encoded = self.encoder({name: features[name] for name in INPUT_NAMES}, training=training)
        logits = self.head(encoded["sequence_output"], features["masked_lm_positions"])
        return keras.ops.cast(logits, "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            head=keras.saving.serialize_keras_object(self.head),
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        config.pop("head", None)  # rebuilt from the encoder, so that the tie is restored
        return cls(encoder, **config)


def masked_lm_loss():
    """Cross-entropy on the logits, averaged over the real targets (weights 1), not the padding."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
