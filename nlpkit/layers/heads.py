"""Output heads: masked language model, classification, and dual-encoder scores with a margin."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError, check_choice
from nlpkit.layers.feedforward import clone_initializer
from nlpkit.errors import one_of_names

_MASKED_LM_OUTPUTS = ("logits", "predictions")
POOLINGS = ("cls", "mean")


def pool_sequence(sequence, pooling="cls", cls_token_idx=0, input_mask=None):
    """`[B, T, D]` -> `[B, D]`: the token at `cls_token_idx`, or the mean over tokens with mask 1.

    Mean pooling averages over the real tokens (`input_mask` `[B, T]`, 1 = token, 0 = padding;
    None = every position). It is less sensitive to dropout noise than one token's state, which
    matters for a distance-aware head on a weakly pretrained encoder.
    """
    if pooling == "cls":
        return sequence[:, cls_token_idx, :]
    if input_mask is None:
        return ops.mean(sequence, axis=1)
    weights = ops.expand_dims(ops.cast(input_mask, sequence.dtype), -1)
    total = ops.sum(sequence * weights, axis=1)
    return total / ops.maximum(ops.sum(weights, axis=1), ops.cast(1.0, sequence.dtype))


# The activation default depends on the form: BERT's gelu with an embedding layer (nlpkit's),
# none with an embedding table (Model Garden's `activation=None`).
_ACTIVATION_BY_FORM = "by form"


@keras.saving.register_keras_serializable(package="nlpkit")
class MaskedLM(keras.layers.Layer):
    """Masked-LM head whose output projection is tied to a token embedding table.

    At the masked positions: `h = LayerNorm(act(x W + b))`, `logits = h E^T + bias`, where E is the
    `[V, W]` embedding table (read at call time, so the head and the embedding train one shared
    table). Two forms: nlpkit's takes the layer that owns the table (`embedding_layer`), Model
    Garden's the table itself (`embedding_table`, e.g. `encoder.get_embedding_table()`).

    Tied weights survive saving in the `embedding_layer` form: the config holds the embedding
    layer itself, and Keras' `.keras` saving serialises an object shared by several layers once
    and gives every user the same object back on loading, so a functional model holding the
    embedding layer and this head is loaded with the tie intact (tested). Two cases break that
    sharing, and the model must then re-tie on loading by building the head from its embedding
    layer again (as `MaskedLMPretrainer.from_config` does): a head rebuilt from its config alone
    (it gets its own copy of the embedding), and an embedding inside a *nested* functional model
    (Keras deep-copies a nested model's config, so the mark that says "shared" never reaches it).
    In the `embedding_table` form the tie holds while the model lives; the config records only
    the table's shape and dtype (a variable is not configuration), so a head rebuilt from it (or
    loaded from a `.keras` file) has its own table variable of that shape, which loading fills
    with the saved values. (Model Garden's head refuses `get_config` altogether.)

    Args:
      embedding_layer: the layer that owns the table, exposing `.embeddings` `[V, W]` (an
        `OnDeviceEmbedding`); it must be built (called once) before the head is built.
      embedding_table: Model Garden's form instead of `embedding_layer`: the `[V, W]` table, a
        Keras variable (shared, and tracked as one of the head's weights) or an array (copied
        into a new trainable variable of the head).
      activation: activation of the transform before the projection; default "gelu" with
        `embedding_layer`, None (identity) with `embedding_table`, as in Model Garden.
      initializer: initializer of the transform's kernel.
      output_type: "logits" or "predictions" (log-probabilities, float32). `output` is Model
        Garden's name of it (give one, or both equal); the config carries both.
      norm_epsilon: epsilon of the transform's layer norm.

    Call: `head(sequence_output, masked_positions)` (Model Garden names the first argument
    `sequence_data`: pass it positionally); sequence_output `[B, T, D]`, masked_positions int
    `[B, P]` (indices into T). Output `[B, P, V]`.
    """

    def __init__(
        self,
        embedding_layer=None,
        activation=_ACTIVATION_BY_FORM,
        initializer="glorot_uniform",
        output_type=None,
        norm_epsilon=1e-12,
        embedding_table=None,
        output=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (embedding_layer is None) == (embedding_table is None):
            raise NlpkitError(
                "MaskedLM needs exactly one of embedding_layer and embedding_table",
                hint="pass the embedding layer (nlpkit) or its table (Model Garden), not both",
            )
        output_type = one_of_names("MaskedLM", ("output_type", "output"), (output_type, output)) or "logits"
        check_choice("MaskedLM", "output_type", output_type, _MASKED_LM_OUTPUTS)
        if activation == _ACTIVATION_BY_FORM:
            activation = "gelu" if embedding_layer is not None else None
        self.embedding_layer = embedding_layer
        self.embedding_table = None if embedding_table is None else _table_variable(embedding_table)
        self.activation = keras.activations.get(activation)
        self.initializer = keras.initializers.get(initializer)
        self.output_type = output_type
        self.norm_epsilon = norm_epsilon

    def _table(self):
        return self.embedding_table if self.embedding_table is not None else self.embedding_layer.embeddings

    def build(self, sequence_output_shape, masked_positions_shape=None):
        if self.embedding_table is None and getattr(self.embedding_layer, "embeddings", None) is None:
            raise NlpkitError(
                "MaskedLM: the embedding layer has no table yet",
                hint="call (or build) the embedding layer before the head",
            )
        vocab_size, width = self._table().shape
        self.transform = keras.layers.Dense(
            width,
            activation=self.activation,
            kernel_initializer=clone_initializer(self.initializer),
            dtype=self.dtype_policy,
            name="transform",
        )
        self.transform.build(sequence_output_shape)
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )
        self.layer_norm.build((*sequence_output_shape[:-1], width))
        self.bias = self.add_weight(name="output_bias", shape=(vocab_size,), initializer="zeros")

    def call(self, sequence_output, masked_positions):
        positions = ops.expand_dims(ops.cast(masked_positions, "int32"), axis=-1)
        gathered = ops.take_along_axis(sequence_output, positions, axis=1)  # [B, P, D]
        hidden = self.layer_norm(self.transform(gathered))
        table = ops.cast(self._table(), hidden.dtype)
        logits = ops.matmul(hidden, ops.transpose(table)) + ops.cast(self.bias, hidden.dtype)
        if self.output_type == "predictions":
            return ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        return logits

    def compute_output_shape(self, sequence_output_shape, masked_positions_shape):
        return (*masked_positions_shape, self._table().shape[0])

    def compute_output_spec(self, sequence_output, masked_positions):
        dtype = "float32" if self.output_type == "predictions" else self.compute_dtype
        return keras.KerasTensor(self.compute_output_shape(sequence_output.shape, masked_positions.shape), dtype=dtype)

    def get_config(self):
        config = super().get_config()
        table = self.embedding_table
        config.update(
            embedding_layer=None if table is not None else keras.saving.serialize_keras_object(self.embedding_layer),
            embedding_table=None if table is None else {"shape": list(table.shape), "dtype": table.dtype},
            activation=keras.activations.serialize(self.activation),
            initializer=keras.initializers.serialize(self.initializer),
            output_type=self.output_type,
            output=self.output_type,
            norm_epsilon=self.norm_epsilon,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("embedding_layer") is not None:
            config["embedding_layer"] = keras.saving.deserialize_keras_object(config["embedding_layer"])
        table = config.get("embedding_table")
        if table is not None:
            # Model Garden's BERT initialises its tables N(0, 0.02); a loaded model overwrites it.
            initializer = keras.initializers.TruncatedNormal(stddev=0.02)
            shape, dtype = table["shape"], table["dtype"]
            config["embedding_table"] = keras.Variable(initializer, shape=shape, dtype=dtype, name="embedding_table")
        return cls(**config)


def _table_variable(table):
    """A Keras variable as given (shared); anything else copied into a new trainable variable."""
    if isinstance(table, keras.Variable):
        return table
    return keras.Variable(ops.convert_to_tensor(table), name="embedding_table")


@keras.saving.register_keras_serializable(package="nlpkit")
class ClassificationHead(keras.layers.Layer):
    """Pools the sequence (CLS token or mean) and classifies it: `logits = dropout(act(x W)) V`.

    Args:
      inner_dim: size of the pooling projection (0 = no projection: classify the pooled x directly).
      num_classes: number of output logits.
      cls_token_idx: the position that is pooled with `pooling="cls"`.
      activation: activation of the pooling projection.
      dropout_rate: dropout rate after the pooling projection.
      initializer: initializer of both kernels.
      pooling: "cls" (the token at cls_token_idx) or "mean" (mean over tokens where input_mask is 1).

    Call: `head(sequence_output, input_mask=None, training=None)`; sequence_output `[B, T, D]`,
    input_mask `[B, T]` (1 = token, 0 = padding; used by mean pooling).
    Output: logits `[B, num_classes]`.
    """

    def __init__(
        self,
        inner_dim,
        num_classes,
        cls_token_idx=0,
        activation="tanh",
        dropout_rate=0.0,
        initializer="glorot_uniform",
        pooling="cls",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.inner_dim = inner_dim
        self.num_classes = num_classes
        self.cls_token_idx = cls_token_idx
        self.pooling = check_choice(type(self).__name__, "pooling", pooling, POOLINGS)
        self.activation = keras.activations.get(activation)
        self.dropout_rate = dropout_rate
        self.initializer = keras.initializers.get(initializer)
        self.pooler = None
        if inner_dim:
            self.pooler = self._dense(inner_dim, "pooler", self.activation)
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)
        self.classifier = self._dense(num_classes, "logits")

    def _dense(self, units, name, activation=None):
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=clone_initializer(self.initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, sequence_output_shape, input_mask_shape=None):
        batch, width = sequence_output_shape[0], sequence_output_shape[-1]
        pooled_shape = (batch, width)
        if self.pooler is not None:
            self.pooler.build(pooled_shape)
            pooled_shape = (batch, self.inner_dim)
        self.classifier.build(pooled_shape)

    def call(self, sequence_output, input_mask=None, training=None):
        pooled = pool_sequence(sequence_output, self.pooling, self.cls_token_idx, input_mask)
        if self.pooler is not None:
            pooled = self.pooler(pooled)
        return self.classifier(self.dropout(pooled, training=training))

    def compute_output_shape(self, sequence_output_shape, input_mask_shape=None):
        return (sequence_output_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            inner_dim=self.inner_dim,
            num_classes=self.num_classes,
            cls_token_idx=self.cls_token_idx,
            activation=keras.activations.serialize(self.activation),
            dropout_rate=self.dropout_rate,
            initializer=keras.initializers.serialize(self.initializer),
            pooling=self.pooling,
        )
        return config


@keras.saving.register_keras_serializable(package="nlpkit")
class MatMulWithMargin(keras.layers.Layer):
    """In-batch dual-encoder scores with an additive margin on the matching pairs.

    `left_logits = logit_scale * (L R^T - logit_margin * I)`: row i scores left item i against
    every right item of the batch, with the true pair (the diagonal) made harder by the margin
    ("additive margin softmax"). `right_logits` is its transpose.

    Args:
      logit_scale: multiplier of the scores (inverse temperature).
      logit_margin: subtracted from the diagonal before scaling.

    Call: `layer(left_encodings, right_encodings)`; both `[B, D]`.
    Output: `(left_logits, right_logits)`, both `[B, B]`.
    """

    def __init__(self, logit_scale=1.0, logit_margin=0.0, **kwargs):
        super().__init__(**kwargs)
        self.logit_scale = logit_scale
        self.logit_margin = logit_margin

    def call(self, left_encodings, right_encodings):
        scores = ops.matmul(left_encodings, ops.transpose(right_encodings))
        margin = self.logit_margin * ops.eye(ops.shape(scores)[0], dtype=scores.dtype)
        left_logits = self.logit_scale * (scores - margin)
        return left_logits, ops.transpose(left_logits)

    def compute_output_shape(self, left_encodings_shape, right_encodings_shape):
        left, right = left_encodings_shape[0], right_encodings_shape[0]
        return (left, right), (right, left)

    def get_config(self):
        config = super().get_config()
        config.update(logit_scale=self.logit_scale, logit_margin=self.logit_margin)
        return config
