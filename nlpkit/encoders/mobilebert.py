"""The MobileBERT encoder (Sun et al., 2020): a deep, thin BERT with bottlenecked blocks."""

import keras

from nlpkit.encoders.base import EncoderBase, truncated_normal
from nlpkit.layers.blocks.mobilebert import MobileBertEmbedding, MobileBertTransformer


@keras.saving.register_keras_serializable(package="nlpkit")
class MobileBertEncoder(EncoderBase):
    """MobileBERT: trigram embedding, N `MobileBertTransformer` blocks, first-token pooling.

    Args:
      vocab_size: V, word vocabulary size.
      embedding_width: E, width of the word-embedding table (trigrams make it 3E before the
        projection to `hidden_size`).
      type_vocab_size: number of token types.
      max_sequence_length: size of the position table; longer inputs raise `NlpkitError`, or are
        windowed with `long_inputs="sliding_window"`.
      num_layers: number of blocks.
      hidden_size: D, the inter-block width.
      num_attention_heads: N.
      inner_dim: width of each feed-forward network.
      inner_activation: their activation (MobileBERT: relu).
      output_dropout: dropout on embeddings and block outputs.
      attention_dropout: dropout on attention probabilities.
      intra_bottleneck_size: width inside the blocks.
      use_bottleneck_attention, key_query_shared_bottleneck, num_feedforward_networks,
        normalization_type: see `MobileBertTransformer`.
      classifier_activation: pool with a tanh dense layer on the first token (True) or take
        the first token as it is (False, as MobileBERT does).
      initializer_range: stddev of the truncated-normal initializer.
      output_range: if set, only the first `output_range` positions are returned.
      attention_type: the blocks' attention, as a registered name or a factory.
      long_inputs: "error" or "sliding_window".

    Call: `encoder(dict(input_word_ids=..., input_mask=..., input_type_ids=...))`, each int32
    `[B, T]`. Returns a dict: `sequence_output` `[B, T, D]`, `pooled_output` `[B, D]`,
    `encoder_outputs` (list of each block's `[B, T, D]` output).
    """

    _constructor_arguments = (
        "vocab_size",
        "embedding_width",
        "type_vocab_size",
        "max_sequence_length",
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "inner_dim",
        "inner_activation",
        "output_dropout",
        "attention_dropout",
        "intra_bottleneck_size",
        "use_bottleneck_attention",
        "key_query_shared_bottleneck",
        "num_feedforward_networks",
        "normalization_type",
        "classifier_activation",
        "initializer_range",
        "output_range",
        "attention_type",
        "long_inputs",
    )

    def __init__(
        self,
        vocab_size: int,
        embedding_width: int = 128,
        type_vocab_size: int = 2,
        max_sequence_length: int = 512,
        num_layers: int = 24,
        hidden_size: int = 512,
        num_attention_heads: int = 4,
        inner_dim: int = 512,
        inner_activation: str = "relu",
        output_dropout: float = 0.1,
        attention_dropout: float = 0.1,
        intra_bottleneck_size: int = 128,
        use_bottleneck_attention: bool = False,
        key_query_shared_bottleneck: bool = True,
        num_feedforward_networks: int = 4,
        normalization_type: str = "no_norm",
        classifier_activation: bool = False,
        initializer_range: float = 0.02,
        output_range: int | None = None,
        attention_type: str = "multi_head",
        long_inputs: str = "error",
        **kwargs,
    ):
        arguments = {name: value for name, value in locals().items() if name in self._constructor_arguments}
        super().__init__(**kwargs)
        for name, value in arguments.items():  # one attribute per constructor argument
            setattr(self, name, value)
        self._check_long_inputs_mode()
        policy = self.dtype_policy
        self.embedding_layer = MobileBertEmbedding(
            vocab_size=vocab_size,
            embedding_width=embedding_width,
            type_vocab_size=type_vocab_size,
            output_width=hidden_size,
            max_sequence_length=max_sequence_length,
            normalization_type=normalization_type,
            initializer=truncated_normal(initializer_range),
            dropout_rate=output_dropout,
            name="mobilebert_embedding",
            dtype=policy,
        )
        self.word_embeddings = self.embedding_layer.word_embedding
        self.transformer_layers = [
            MobileBertTransformer(
                hidden_size=hidden_size,
                num_attention_heads=num_attention_heads,
                inner_dim=inner_dim,
                inner_activation=inner_activation,
                output_dropout=output_dropout,
                attention_dropout=attention_dropout,
                intra_bottleneck_size=intra_bottleneck_size,
                use_bottleneck_attention=use_bottleneck_attention,
                key_query_shared_bottleneck=key_query_shared_bottleneck,
                num_feedforward_networks=num_feedforward_networks,
                normalization_type=normalization_type,
                initializer=truncated_normal(initializer_range),
                attention_type=attention_type,
                name=f"transformer_layer_{i}",
                dtype=policy,
            )
            for i in range(num_layers)
        ]
        self.pooler = None
        if classifier_activation:
            self.pooler = keras.layers.Dense(
                hidden_size,
                activation="tanh",
                kernel_initializer=truncated_normal(initializer_range),
                name="pooler",
                dtype=policy,
            )

    def build(self, input_shape=None):
        ids_shape, hidden_shape = (None, None), (None, None, self.hidden_size)
        self.embedding_layer.build(ids_shape, ids_shape)
        for layer in self.transformer_layers:
            layer.build(hidden_shape)
        if self.pooler is not None:
            self.pooler.build((None, self.hidden_size))
        self.built = True

    def _encode(self, word_ids, mask, type_ids, output_range, training):
        hidden = self.embedding_layer(word_ids, type_ids, training=training)
        encoder_outputs = []
        for layer in self.transformer_layers:
            hidden = layer(hidden, padding_mask=mask, training=training)
            encoder_outputs.append(hidden)
        if output_range is not None:
            # The blocks have no partial-query path; slicing the last output is equivalent.
            hidden = hidden[:, :output_range]
            encoder_outputs[-1] = hidden
        first_token = hidden[:, 0]
        pooled = first_token if self.pooler is None else self.pooler(first_token)
        return hidden, pooled, encoder_outputs
