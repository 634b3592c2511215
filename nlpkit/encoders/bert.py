"""The BERT encoder (Devlin et al., 2018) on the layer catalogue, with any attention of the catalogue."""

import keras

from nlpkit.encoders.base import EncoderBase, truncated_normal
from nlpkit.errors import NlpkitError
from nlpkit.layers.blocks.encoder import TransformerEncoderBlock
from nlpkit.layers.embeddings import OnDeviceEmbedding, PositionEmbedding


@keras.saving.register_keras_serializable(package="nlpkit")
class BertEncoder(EncoderBase):
    """Bi-directional transformer encoder: embeddings, N encoder blocks, a tanh pooler on [CLS].

    Embeddings: word (`OnDeviceEmbedding`), learned position and token-type embeddings, summed,
    layer-normalised and dropped out. With `embedding_width` E != D the embeddings live in a
    narrower space and are projected to D (ALBERT-style factorisation).

    Args:
      vocab_size: V, size of the word vocabulary.
      hidden_size: D, width of the encoder.
      num_layers: number of `TransformerEncoderBlock`s.
      num_attention_heads: N (D must be divisible by N).
      max_sequence_length: size of the position table; longer inputs raise `NlpkitError`, or are
        encoded in sliding windows with `long_inputs="sliding_window"`.
      type_vocab_size: number of token types (segments).
      inner_dim: width of the feed-forward networks.
      inner_activation: their activation ("gelu" is the exact, erf-based GELU of BERT).
      output_dropout: dropout on embeddings and block outputs.
      attention_dropout: dropout on the attention probabilities.
      initializer_range: stddev of the truncated-normal initializer.
      output_range: if set, the last block computes only the first `output_range` positions
        (e.g. 1 for CLS-only serving); `sequence_output` is then `[B, output_range, D]`.
      embedding_width: E, width of the embedding tables (default D).
      attention_type: the blocks' attention: a registered name (see
        `nlpkit.layers.attention.registry`) or a factory.
      attention_kwargs: extra keyword arguments for that attention.
      norm_first: pre-norm blocks (with a final layer norm) instead of BERT's post-norm.
      norm_epsilon: epsilon of all layer norms.
      long_inputs: "error" or "sliding_window" (see `EncoderBase._sliding_window`).

    Call: `encoder(dict(input_word_ids=..., input_mask=..., input_type_ids=...))`, each int32
    `[B, T]` (mask: 1 = real token). Returns a dict: `sequence_output` `[B, T, D]`,
    `pooled_output` `[B, D]` (tanh dense on the first token), `encoder_outputs` (list of the
    `[B, T, D]` output of each block).
    """

    _constructor_arguments = (
        "vocab_size",
        "hidden_size",
        "num_layers",
        "num_attention_heads",
        "max_sequence_length",
        "type_vocab_size",
        "inner_dim",
        "inner_activation",
        "output_dropout",
        "attention_dropout",
        "initializer_range",
        "output_range",
        "embedding_width",
        "attention_type",
        "attention_kwargs",
        "norm_first",
        "norm_epsilon",
        "long_inputs",
    )

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_attention_heads: int = 12,
        max_sequence_length: int = 512,
        type_vocab_size: int = 2,
        inner_dim: int = 3072,
        inner_activation: str = "gelu",
        output_dropout: float = 0.1,
        attention_dropout: float = 0.1,
        initializer_range: float = 0.02,
        output_range: int | None = None,
        embedding_width: int | None = None,
        attention_type: str = "multi_head",
        attention_kwargs: dict | None = None,
        norm_first: bool = False,
        norm_epsilon: float = 1e-12,
        long_inputs: str = "error",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_attention_heads:
            raise NlpkitError(
                f"BertEncoder: hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}",
                hint="choose sizes so that the head size is an integer",
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.max_sequence_length = max_sequence_length
        self.type_vocab_size = type_vocab_size
        self.inner_dim = inner_dim
        self.inner_activation = inner_activation
        self.output_dropout = output_dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.output_range = output_range
        self.embedding_width = embedding_width
        self.attention_type = attention_type
        self.attention_kwargs = attention_kwargs
        self.norm_first = norm_first
        self.norm_epsilon = norm_epsilon
        self.long_inputs = long_inputs
        self._check_long_inputs_mode()
        self._make_layers()

    def _make_layers(self):
        policy, width = self.dtype_policy, self.embedding_width or self.hidden_size
        init = self.initializer_range
        self.word_embeddings = OnDeviceEmbedding(
            self.vocab_size, width, initializer=truncated_normal(init), name="word_embeddings", dtype=policy
        )
        self.position_embedding = PositionEmbedding(
            self.max_sequence_length, initializer=truncated_normal(init), name="position_embedding", dtype=policy
        )
        self.type_embeddings = OnDeviceEmbedding(
            self.type_vocab_size, width, initializer=truncated_normal(init), name="type_embeddings", dtype=policy
        )
        self.embedding_norm = self._layer_norm("embedding_layer_norm")
        self.embedding_dropout = keras.layers.Dropout(self.output_dropout, dtype=policy)
        self.embedding_projection = None
        if width != self.hidden_size:
            self.embedding_projection = keras.layers.Dense(
                self.hidden_size, kernel_initializer=truncated_normal(init), name="embedding_projection", dtype=policy
            )
        self.transformer_layers = [
            TransformerEncoderBlock(
                num_attention_heads=self.num_attention_heads,
                inner_dim=self.inner_dim,
                inner_activation=self.inner_activation,
                output_dropout=self.output_dropout,
                attention_dropout=self.attention_dropout,
                norm_first=self.norm_first,
                norm_epsilon=self.norm_epsilon,
                kernel_initializer=truncated_normal(init),
                attention_type=self.attention_type,
                attention_kwargs=self.attention_kwargs,
                name=f"transformer_layer_{i}",
                dtype=policy,
            )
            for i in range(self.num_layers)
        ]
        self.final_layer_norm = self._layer_norm("final_layer_norm") if self.norm_first else None
        self.pooler = keras.layers.Dense(
            self.hidden_size,
            activation="tanh",
            kernel_initializer=truncated_normal(init),
            name="pooler_transform",
            dtype=policy,
        )

    def _layer_norm(self, name):
        # Keras' LayerNormalization computes in float32 under mixed precision.
        return keras.layers.LayerNormalization(epsilon=self.norm_epsilon, name=name, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        width = self.embedding_width or self.hidden_size
        ids_shape, wide_shape = (None, None), (None, None, width)
        hidden_shape = (None, None, self.hidden_size)
        self.word_embeddings.build(ids_shape)
        self.type_embeddings.build(ids_shape)
        self.position_embedding.build(wide_shape)
        self.embedding_norm.build(wide_shape)
        if self.embedding_projection is not None:
            self.embedding_projection.build(wide_shape)
        for layer in self.transformer_layers:
            layer.build(hidden_shape)
        if self.final_layer_norm is not None:
            self.final_layer_norm.build(hidden_shape)
        self.pooler.build((None, self.hidden_size))
        self.built = True

    def _embed(self, word_ids, type_ids, training):
        embeddings = self.word_embeddings(word_ids)
        embeddings = embeddings + self.position_embedding(embeddings) + self.type_embeddings(type_ids)
        embeddings = self.embedding_dropout(self.embedding_norm(embeddings), training=training)
        if self.embedding_projection is not None:
            embeddings = self.embedding_projection(embeddings)
        return embeddings

    def _encode(self, word_ids, mask, type_ids, output_range, training):
        hidden = self._embed(word_ids, type_ids, training)
        encoder_outputs = []
        for index, layer in enumerate(self.transformer_layers):
            last = index == len(self.transformer_layers) - 1
            # The [B, S] padding itself, never a [B, T, S] mask: the O(n) attentions stay O(n).
            hidden = layer(hidden, padding_mask=mask, output_range=output_range if last else None, training=training)
            encoder_outputs.append(hidden)
        if self.final_layer_norm is not None:
            hidden = self.final_layer_norm(hidden)
        pooled = self.pooler(hidden[:, 0])
        return hidden, pooled, encoder_outputs
