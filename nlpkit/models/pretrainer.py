"""The masked-LM pretraining model: an encoder + a `MaskedLM` head tied to its word embeddings,
and optionally a sentence-pair head (next-sentence or sentence-order prediction) on the pooled output.

Backend-agnostic Keras 3: the same model trains under TensorFlow (`nlpkit pretrain`) and JAX
(`benchmarks/pretrain_step.py`).
"""

import keras

from nlpkit.encoders.base import INPUT_NAMES

MLM_FEATURES = (*INPUT_NAMES, "masked_lm_positions")
# Output names of a pretrainer with a sentence head (the keys of its targets and sample weights).
MLM_OUTPUT, SENTENCE_OUTPUT = "masked_lm", "sentence"


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
    """Encoder + masked-LM head (+ a sentence-pair head when `sentence_classes` > 0).

    Args:
      encoder: an nlpkit encoder (dict in, dict with `sequence_output` `[B, T, D]` and
        `pooled_output` `[B, D]` out) whose word embeddings are the `word_embeddings` attribute.
      head: the head layer, called `head(sequence_output, masked_lm_positions)`; default
        `masked_lm_head(encoder)`.
      sentence_classes: 0 (masked-LM only) or the number of classes of a dense head on
        `pooled_output` (2 for next-sentence or sentence-order prediction).

    Call: `model(features)` with `input_word_ids`, `input_mask`, `input_type_ids` (int `[B, T]`)
    and `masked_lm_positions` (int `[B, P]`). Output: logits `[B, P, V]` (float32); with a sentence
    head, the dict {"masked_lm": those logits, "sentence": logits `[B, sentence_classes]`}.
    Train with `masked_lm_loss()` as loss, `masked_lm_ids` as targets and `masked_lm_weights`
    as sample weights (with a sentence head: `pretraining_losses()` and dicts of both).
    """

    def __init__(self, encoder, head=None, sentence_classes=0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head if head is not None else masked_lm_head(encoder)
        self.sentence_classes = int(sentence_classes)
        self.sentence_head = None
        if self.sentence_classes:
            self.sentence_head = keras.layers.Dense(
                self.sentence_classes,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=getattr(encoder, "initializer_range", 0.02)),
                name="sentence_head",
                dtype=encoder.dtype_policy,
            )

    def call(self, features, training=None):
        encoded = self.encode(features, training=training)
        logits = keras.ops.cast(self.head(encoded["sequence_output"], features["masked_lm_positions"]), "float32")
        if self.sentence_head is None:
            return logits
        sentence_logits = keras.ops.cast(self.sentence_head(encoded["pooled_output"]), "float32")
        return {MLM_OUTPUT: logits, SENTENCE_OUTPUT: sentence_logits}

    def encode(self, features, training=None):
        """The encoder's output dict for `features` (a subclass may add state, e.g. recurrence memory)."""
        return self.encoder({name: features[name] for name in INPUT_NAMES}, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            head=keras.saving.serialize_keras_object(self.head),
            sentence_classes=self.sentence_classes,
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


def pretraining_losses():
    """Losses of a pretrainer with a sentence head: Keras sums them (masked-LM + sentence cross-entropy)."""
    return {
        MLM_OUTPUT: masked_lm_loss(),
        SENTENCE_OUTPUT: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    }
