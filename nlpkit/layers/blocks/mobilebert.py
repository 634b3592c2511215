"""MobileBERT's embedding and transformer block (Sun et al., 2020, "MobileBERT: a Compact
Task-Agnostic BERT for Resource-Limited Devices").

MobileBERT keeps a wide inter-block width (e.g. 512) but runs attention and feed-forward networks
in a narrow bottleneck (e.g. 128): each block projects in, runs attention and a stack of small
feed-forward networks, and projects back out to the inter-block width.
"""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.registry import make_attention
from nlpkit.layers.blocks.encoder import merge_padding_mask
from nlpkit.layers.embeddings import OnDeviceEmbedding, PositionEmbedding
from nlpkit.layers.feedforward import clone_initializer

NORMALIZATION_TYPES = ("no_norm", "layer_norm")


@keras.saving.register_keras_serializable(package="nlpkit")
class NoNorm(keras.layers.Layer):
    """MobileBERT's replacement for layer normalisation: an element-wise affine map `x * g + b`.

    Call: `layer(x)`; x `[..., D]`; output the same shape. Weights: `gamma` `[D]` (ones), `beta` `[D]` (zeros).
    """

    def build(self, input_shape):
        width = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(width,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(width,), initializer="zeros")

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype) + ops.cast(self.beta, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def make_normalization(normalization_type, name, dtype, epsilon=1e-12):
    """`no_norm` -> NoNorm, `layer_norm` -> LayerNormalization (float32 under mixed precision)."""
    if normalization_type == "no_norm":
        return NoNorm(name=name, dtype=dtype)
    if normalization_type == "layer_norm":
        return keras.layers.LayerNormalization(epsilon=epsilon, name=name, dtype=dtype)
    raise NlpkitError(
        f"unknown normalization_type '{normalization_type}'", hint=f"choose one of: {', '.join(NORMALIZATION_TYPES)}"
    )


@keras.saving.register_keras_serializable(package="nlpkit")
class MobileBertEmbedding(keras.layers.Layer):
    """MobileBERT input embedding: narrow word vectors seen as trigrams, projected to the block width.

    Each token's embedding is the concatenation of the word vectors of the next, the current and
    the previous token (zeros beyond the ends), `[B, T, 3E]`, projected to `output_width` D; then
    position and token-type embeddings (width D) are added, normalised and dropped out.

    Args:
      vocab_size: V, word vocabulary size.
      embedding_width: E, width of the word-embedding table.
      type_vocab_size: number of token types (segments).
      output_width: D, width of the output (the encoder's inter-block width).
      max_sequence_length: size of the position table.
      normalization_type: `no_norm` (MobileBERT's element-wise affine) or `layer_norm`.
      initializer: initializer of the tables and the projection.
      dropout_rate: dropout on the output.

    Call: `layer(input_word_ids, input_type_ids=None, training=None)`; both int `[B, T]`;
    without type ids no type embedding is added (as in Model Garden).
    Output: `[B, T, D]`. The word table is `.word_embedding.embeddings` `[V, E]`.
    """

    def __init__(
        self,
        vocab_size,
        embedding_width,
        type_vocab_size,
        output_width,
        max_sequence_length=512,
        normalization_type="no_norm",
        initializer="glorot_uniform",
        dropout_rate=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_width = embedding_width
        self.type_vocab_size = type_vocab_size
        self.output_width = output_width
        self.max_sequence_length = max_sequence_length
        self.normalization_type = normalization_type
        self.initializer = keras.initializers.get(initializer)
        self.dropout_rate = dropout_rate
        policy = self.dtype_policy
        self.word_embedding = OnDeviceEmbedding(
            vocab_size, embedding_width, initializer=self._init(), name="word_embedding", dtype=policy
        )
        self.type_embedding = OnDeviceEmbedding(
            type_vocab_size, output_width, initializer=self._init(), name="type_embedding", dtype=policy
        )
        self.position_embedding = PositionEmbedding(
            max_sequence_length, initializer=self._init(), name="position_embedding", dtype=policy
        )
        self.projection = keras.layers.Dense(
            output_width, kernel_initializer=self._init(), name="embedding_projection", dtype=policy
        )
        self.norm = make_normalization(normalization_type, "embedding_norm", policy)
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=policy)

    def _init(self):
        return clone_initializer(self.initializer)

    def build(self, input_word_ids_shape, input_type_ids_shape=None):
        batch, length = input_word_ids_shape[0], input_word_ids_shape[1]
        self.word_embedding.build(input_word_ids_shape)
        self.type_embedding.build(input_word_ids_shape)
        self.projection.build((batch, length, 3 * self.embedding_width))
        self.position_embedding.build((batch, length, self.output_width))
        self.norm.build((batch, length, self.output_width))

    def call(self, input_word_ids, input_type_ids=None, training=None):
        words = self.word_embedding(input_word_ids)  # [B, T, E]
        zeros = ops.zeros_like(words[:, :1])
        next_words = ops.concatenate([words[:, 1:], zeros], axis=1)
        previous_words = ops.concatenate([zeros, words[:, :-1]], axis=1)
        trigram = ops.concatenate([next_words, words, previous_words], axis=-1)  # [B, T, 3E]
        embeddings = self.projection(trigram)
        embeddings = embeddings + self.position_embedding(embeddings)
        if input_type_ids is not None:
            embeddings = embeddings + self.type_embedding(input_type_ids)
        return self.dropout(self.norm(embeddings), training=training)

    def compute_output_shape(self, input_word_ids_shape, input_type_ids_shape=None):
        return (*input_word_ids_shape, self.output_width)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            embedding_width=self.embedding_width,
            type_vocab_size=self.type_vocab_size,
            output_width=self.output_width,
            max_sequence_length=self.max_sequence_length,
            normalization_type=self.normalization_type,
            initializer=keras.initializers.serialize(self.initializer),
            dropout_rate=self.dropout_rate,
        )
        return config


@keras.saving.register_keras_serializable(package="nlpkit")
class MobileBertTransformer(keras.layers.Layer):
    """One MobileBERT block: bottleneck in, attention, stacked feed-forward networks, bottleneck out.

    With D = `hidden_size` (inter-block width) and C = `intra_bottleneck_size`:
      1. `x_c = norm(dense_C(x))` (the bottleneck input);
      2. attention with output width C; queries and keys are
         - `x_c` if `use_bottleneck_attention` (values too),
         - else `norm(dense_C'(x))`, one extra projection shared by queries and keys, if
           `key_query_shared_bottleneck` (values are the wide `x`),
         - else `x` itself (queries, keys and values from the wide input);
         then `a = norm(attention + x_c)`;
      3. `num_feedforward_networks` times: `a = norm(dense_C(act(dense_I(a))) + a)`;
      4. `y = norm(dropout(dense_D(a)) + x)`.

    Args:
      hidden_size: D, the block's input/output width.
      num_attention_heads: N; C must be divisible by N (head size C / N).
      inner_dim: I, width of each feed-forward network.
      inner_activation: activation of the feed-forward networks.
      output_dropout: dropout on the attention output and the block output.
      attention_dropout: dropout on the attention probabilities.
      intra_bottleneck_size: C, width inside the block.
      use_bottleneck_attention: queries, keys and values all from the bottleneck input.
      key_query_shared_bottleneck: queries and keys from one shared bottleneck projection
        (cannot be combined with `use_bottleneck_attention`).
      num_feedforward_networks: how many feed-forward networks are stacked.
      normalization_type: `no_norm` or `layer_norm`.
      initializer: kernel initializer.
      attention_type: registered attention name or factory (see `make_attention`).

    Call: `layer(inputs, attention_mask=None, return_attention_scores=False, training=None,
    padding_mask=None)`; inputs `[B, T, D]`, attention_mask `[B, T, T]` (1 = may attend),
    padding_mask `[B, T]` (1 = real token; AND-ed in as `[B, 1, T]`). Output `[B, T, D]`
    (and the attention scores `[B, N, T, T]` if asked).
    """

    def __init__(
        self,
        hidden_size=512,
        num_attention_heads=4,
        inner_dim=512,
        inner_activation="relu",
        output_dropout=0.1,
        attention_dropout=0.1,
        intra_bottleneck_size=128,
        use_bottleneck_attention=False,
        key_query_shared_bottleneck=True,
        num_feedforward_networks=4,
        normalization_type="no_norm",
        initializer="glorot_uniform",
        attention_type="multi_head",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if intra_bottleneck_size % num_attention_heads:
            raise NlpkitError(
                f"MobileBertTransformer: intra_bottleneck_size={intra_bottleneck_size} is not divisible by "
                f"num_attention_heads={num_attention_heads}",
                hint="choose sizes so that the head size is an integer",
            )
        if use_bottleneck_attention and key_query_shared_bottleneck:
            raise NlpkitError(
                "MobileBertTransformer: use_bottleneck_attention and key_query_shared_bottleneck exclude each other",
                hint="set one of them to false",
            )
        if num_feedforward_networks < 1:
            raise NlpkitError("MobileBertTransformer: num_feedforward_networks must be >= 1", hint="set it to 1 or more")
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.inner_dim = inner_dim
        self.inner_activation = inner_activation
        self.output_dropout = output_dropout
        self.attention_dropout = attention_dropout
        self.intra_bottleneck_size = intra_bottleneck_size
        self.use_bottleneck_attention = use_bottleneck_attention
        self.key_query_shared_bottleneck = key_query_shared_bottleneck
        self.num_feedforward_networks = num_feedforward_networks
        self.normalization_type = normalization_type
        self.initializer = keras.initializers.get(initializer)
        self.attention_type = attention_type
        self._make_sublayers()

    def _dense(self, units, name, activation=None):
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=clone_initializer(self.initializer),
            name=name,
            dtype=self.dtype_policy,
        )

    def _norm(self, name):
        return make_normalization(self.normalization_type, name, self.dtype_policy)

    def _make_sublayers(self):
        bottleneck = self.intra_bottleneck_size
        self.bottleneck_input = self._dense(bottleneck, "bottleneck_input")
        self.bottleneck_input_norm = self._norm("bottleneck_input_norm")
        if self.key_query_shared_bottleneck:
            self.shared_query_key = self._dense(bottleneck, "shared_query_key")
            self.shared_query_key_norm = self._norm("shared_query_key_norm")
        self.attention = make_attention(
            self.attention_type,
            num_heads=self.num_attention_heads,
            key_dim=bottleneck // self.num_attention_heads,
            output_shape=bottleneck,
            dropout=self.attention_dropout,
            kernel_initializer=clone_initializer(self.initializer),
            name="self_attention",
            dtype=self.dtype_policy,
        )
        self.attention_output_dropout = keras.layers.Dropout(self.output_dropout, dtype=self.dtype_policy)
        self.attention_norm = self._norm("attention_norm")
        # Three flat lists (not a list of tuples) so Keras tracks every sub-layer.
        stack = range(self.num_feedforward_networks)
        self.ffn_inner = [self._dense(self.inner_dim, f"ffn_{i}_inner", self.inner_activation) for i in stack]
        self.ffn_output = [self._dense(bottleneck, f"ffn_{i}_output") for i in stack]
        self.ffn_norm = [self._norm(f"ffn_{i}_norm") for i in stack]
        self.bottleneck_output = self._dense(self.hidden_size, "bottleneck_output")
        self.output_dropout_layer = keras.layers.Dropout(self.output_dropout, dtype=self.dtype_policy)
        self.output_norm = self._norm("output_norm")

    def build(self, inputs_shape, attention_mask_shape=None):
        inputs_shape = tuple(inputs_shape)  # a list when restored from a saved config; Keras compares them
        batch, length = inputs_shape[0], inputs_shape[1]
        narrow = (batch, length, self.intra_bottleneck_size)
        self.bottleneck_input.build(inputs_shape)
        self.bottleneck_input_norm.build(narrow)
        if self.key_query_shared_bottleneck:
            self.shared_query_key.build(inputs_shape)
            self.shared_query_key_norm.build(narrow)
        query_shape = narrow if (self.use_bottleneck_attention or self.key_query_shared_bottleneck) else inputs_shape
        value_shape = narrow if self.use_bottleneck_attention else inputs_shape
        self.attention.build(query_shape, value_shape, query_shape)
        self.attention_norm.build(narrow)
        for inner, output, norm in zip(self.ffn_inner, self.ffn_output, self.ffn_norm):
            inner.build(narrow)
            output.build((batch, length, self.inner_dim))
            norm.build(narrow)
        self.bottleneck_output.build(narrow)
        self.output_norm.build(inputs_shape)

    def _attention_inputs(self, inputs, bottleneck):
        """(query_and_key, value) as chosen by the bottleneck options."""
        if self.use_bottleneck_attention:
            return bottleneck, bottleneck
        if self.key_query_shared_bottleneck:
            return self.shared_query_key_norm(self.shared_query_key(inputs)), inputs
        return inputs, inputs

    def call(self, inputs, attention_mask=None, return_attention_scores=False, training=None, padding_mask=None):
        attention_mask = merge_padding_mask(attention_mask, padding_mask)
        bottleneck = self.bottleneck_input_norm(self.bottleneck_input(inputs))
        query_key, value = self._attention_inputs(inputs, bottleneck)
        attended, scores = self.attention(
            query_key,
            value,
            key=query_key,
            attention_mask=attention_mask,
            return_attention_scores=True,
            training=training,
        )
        attended = self.attention_output_dropout(attended, training=training)
        hidden = self.attention_norm(attended + bottleneck)
        for inner, output, norm in zip(self.ffn_inner, self.ffn_output, self.ffn_norm):
            hidden = norm(output(inner(hidden)) + hidden)
        outputs = self.output_dropout_layer(self.bottleneck_output(hidden), training=training)
        outputs = self.output_norm(outputs + inputs)
        return (outputs, scores) if return_attention_scores else outputs

    def compute_output_shape(self, inputs_shape, attention_mask_shape=None):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            inner_dim=self.inner_dim,
            inner_activation=self.inner_activation,
            output_dropout=self.output_dropout,
            attention_dropout=self.attention_dropout,
            intra_bottleneck_size=self.intra_bottleneck_size,
            use_bottleneck_attention=self.use_bottleneck_attention,
            key_query_shared_bottleneck=self.key_query_shared_bottleneck,
            num_feedforward_networks=self.num_feedforward_networks,
            normalization_type=self.normalization_type,
            initializer=keras.initializers.serialize(self.initializer),
            attention_type=self.attention_type,
        )
        return config
