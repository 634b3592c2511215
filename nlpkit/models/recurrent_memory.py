"""Transformer-XL recurrence during training: the memory of each batch slot, carried from step to step.

Backend-agnostic Keras 3. The data (`nlpkit.data.segments`) lays the corpus out as B parallel
streams: batch slot i of step t+1 is the next segment of the document in slot i of step t, and
`document_start` [B] is 1 where a slot begins a new document. `RecurrentMemoryPretrainer` keeps
each slot's memory in non-trainable variables, so it crosses `fit`'s steps under TensorFlow
(assigned in the train function) and JAX (threaded through the stateless train step), and it is
saved and restored with the other model variables by the pretraining checkpoints (exact resume).
"""

import keras
from keras import ops

from nlpkit.encoders.base import INPUT_NAMES
from nlpkit.models.pretrainer import MaskedLMPretrainer

# Feature of a stream batch: int [B], 1 = this segment starts a document (its memory is forgotten).
DOCUMENT_START = "document_start"


def carries_memory(encoder):
    """True for an encoder that returns `new_memories` to feed back (a Transformer-XL with mem_len > 0)."""
    from nlpkit.encoders.transformer_xl import TransformerXLEncoder

    return isinstance(encoder, TransformerXLEncoder) and encoder.mem_len > 0


@keras.saving.register_keras_serializable(package="nlpkit")
class RecurrentMemoryPretrainer(MaskedLMPretrainer):
    """`MaskedLMPretrainer` whose Transformer-XL encoder sees the previous segment of each batch slot.

    Args:
      encoder: a `TransformerXLEncoder` with mem_len > 0 (L layers, width D).
      batch_size: B, the (per-step) batch of the streams; every training batch must have it.
      head: as for `MaskedLMPretrainer`.

    Variables (non-trainable, float32): `memory` `[B, L, mem_len, D]`, the encoder's last
    `new_memories`, and `memory_mask` `[B, mem_len]`, 1 where that memory holds a real token of the
    slot's current document.

    Call: `model(features)` as for `MaskedLMPretrainer`, plus `document_start` (int `[B]`). The
    encoder gets the memory as `memories` with `memory_mask` zeroed in the rows that start a
    document, then the memory becomes its `new_memories` (stop-gradient). Features without
    `document_start` (e.g. the build call on a dummy batch) are encoded without memory and leave it
    untouched. Output: the masked-LM logits `[B, P, V]` (float32).
    """

    def __init__(self, encoder, batch_size, head=None, **kwargs):
        # Streams of segments carry no sentence-pair labels: never a sentence head.
        super().__init__(encoder, head=head, sentence_classes=0, **kwargs)
        self.batch_size = int(batch_size)

    def build(self, input_shape=None):
        encoder = self.encoder
        slots = (self.batch_size, encoder.mem_len)
        self.memory = self.add_weight(
            shape=(self.batch_size, encoder.num_layers, encoder.mem_len, encoder.hidden_size),
            initializer="zeros", dtype="float32", trainable=False, name="memory",
        )  # fmt: skip
        self.memory_mask = self.add_weight(
            shape=slots, initializer="zeros", dtype="float32", trainable=False, name="memory_mask"
        )
        self.built = True

    def encode(self, features, training=None):
        if DOCUMENT_START not in features:
            return super().encode(features, training=training)
        keep = 1.0 - ops.cast(features[DOCUMENT_START], "float32")
        memory_mask = ops.convert_to_tensor(self.memory_mask) * ops.expand_dims(keep, 1)
        memories = ops.cast(self.memory, self.encoder.compute_dtype)
        encoded = self.encoder(
            {name: features[name] for name in INPUT_NAMES},
            memories=memories,
            memory_mask=memory_mask,
            training=training,
        )
        self.memory.assign(ops.cast(ops.stop_gradient(encoded["new_memories"]), "float32"))
        self.memory_mask.assign(ops.cast(encoded["new_memory_mask"], "float32"))
        return encoded

    def get_config(self):
        config = super().get_config()
        config.pop("sentence_classes", None)
        config["batch_size"] = self.batch_size
        return config
