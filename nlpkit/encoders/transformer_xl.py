"""The Transformer-XL encoder: word embeddings + a `TransformerXL` stack with recurrence memory.

No position or token-type tables: positions enter through relative encodings and token types
through XLNet's relative segment attention, so there is no length limit.
"""

import keras

from nlpkit.encoders.base import EncoderBase, truncated_normal, unpack_inputs
from nlpkit.layers.blocks.xl import TransformerXL
from nlpkit.layers.embeddings import OnDeviceEmbedding


@keras.saving.register_keras_serializable(package="nlpkit")
class TransformerXLEncoder(EncoderBase):
    """Transformer-XL / XLNet-style encoder (one stream).

    Args:
      vocab_size: V, word vocabulary size.
      num_layers: L, number of `TransformerXLBlock`s.
      hidden_size: D, width of embeddings and blocks (even).
      num_attention_heads: N.
      head_size: H.
      inner_size: width of each feed-forward network.
      inner_activation: its activation.
      dropout_rate: dropout on embeddings, relative encodings and block outputs.
      attention_dropout_rate: dropout on attention probabilities.
      mem_len, reuse_len, same_length, attention_type, clamp_len, bi_data, tie_attention_biases:
        see `nlpkit.layers.blocks.xl.TransformerXL`.
      initializer_range: stddev of the truncated-normal initializer of all weights.

    Call: `encoder(dict(input_word_ids=..., input_mask=..., input_type_ids=...), memories=None,
    memory_mask=None)`, inputs int32 `[B, T]` (mask 1 = real token; type ids become segments),
    memories `[B, L, M, D]` from the previous segment's `new_memories`, memory_mask `[B, M]`
    (1 = memory position that may be attended; 0 e.g. at a document boundary). Returns a dict:
    `sequence_output` `[B, T, D]`, `pooled_output` `[B, D]` (tanh dense on the first token),
    `encoder_outputs` (list of L `[B, T, D]`), and when mem_len > 0 `new_memories`
    `[B, L, mem_len, D]` (and `new_memory_mask` `[B, mem_len]` when memory_mask is given).
    `nlpkit.models.recurrent_memory.RecurrentMemoryPretrainer` carries them from one training step to the next.
    """

    _constructor_arguments = (
        "vocab_size",
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "head_size",
        "inner_size",
        "inner_activation",
        "dropout_rate",
        "attention_dropout_rate",
        "mem_len",
        "reuse_len",
        "same_length",
        "attention_type",
        "clamp_len",
        "bi_data",
        "tie_attention_biases",
        "initializer_range",
    )

    def __init__(
        self,
        vocab_size: int,
        num_layers: int = 6,
        hidden_size: int = 256,
        num_attention_heads: int = 4,
        head_size: int = 64,
        inner_size: int = 1024,
        inner_activation: str = "relu",
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
        mem_len: int = 0,
        reuse_len: int = 0,
        same_length: bool = False,
        attention_type: str = "bi",
        clamp_len: int = -1,
        bi_data: bool = False,
        tie_attention_biases: bool = True,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        arguments = {name: value for name, value in locals().items() if name in self._constructor_arguments}
        super().__init__(**kwargs)
        for name, value in arguments.items():  # one attribute per constructor argument
            setattr(self, name, value)
        # A serialized initializer: each weight deserializes its own instance (own random draw).
        initializer = keras.initializers.serialize(truncated_normal(initializer_range))
        policy = self.dtype_policy
        self.word_embeddings = OnDeviceEmbedding(
            vocab_size, hidden_size, initializer=initializer, name="word_embeddings", dtype=policy
        )
        self.transformer = TransformerXL(
            num_layers=num_layers,
            hidden_size=hidden_size,
            num_attention_heads=num_attention_heads,
            head_size=head_size,
            inner_size=inner_size,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            inner_activation=inner_activation,
            tie_attention_biases=tie_attention_biases,
            mem_len=mem_len,
            reuse_len=reuse_len,
            same_length=same_length,
            attention_type=attention_type,
            clamp_len=clamp_len,
            bi_data=bi_data,
            kernel_initializer=initializer,
            name="transformer_xl",
            dtype=policy,
        )
        self.pooler = keras.layers.Dense(
            hidden_size, activation="tanh", kernel_initializer=initializer, name="pooler", dtype=policy
        )

    def call(self, inputs, memories=None, memory_mask=None, training=None):
        word_ids, mask, type_ids = unpack_inputs(inputs)
        embedded = self.word_embeddings(word_ids)
        result = self.transformer(
            embedded,
            padding_mask=mask,
            segment_ids=type_ids,
            memories=memories,
            memory_mask=memory_mask,
            training=training,
        )
        sequence = result["sequence_output"]
        outputs = dict(
            sequence_output=sequence,
            pooled_output=self.pooler(sequence[:, 0]),
            encoder_outputs=result["encoder_outputs"],
        )
        for key in ("new_memories", "new_memory_mask"):
            if key in result:
                outputs[key] = result[key]
        return outputs

    def _too_long(self, word_ids):
        return False  # relative positions: no position table, no length limit

    def compute_output_spec(self, inputs, memories=None, memory_mask=None, training=None):
        # Traced from `call` (the base class's given spec has no memories).
        return keras.layers.Layer.compute_output_spec(
            self, inputs, memories=memories, memory_mask=memory_mask, training=training
        )
