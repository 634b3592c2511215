"""Token and position embeddings."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError


@keras.saving.register_keras_serializable(package="nlpkit")
class OnDeviceEmbedding(keras.layers.Layer):
    """Looks up token ids in a `[V, W]` table, by gather or by a one-hot matmul.

    The one-hot path (`use_one_hot=True`) turns the lookup into a dense matmul, which is faster
    on TPUs for small vocabularies; both paths give the same result. The table is exposed as
    `.embeddings` so an output head (e.g. `MaskedLM`) can tie its weights to it.

    Args:
      vocab_size: V, number of rows of the table.
      embedding_width: W, size of each embedding vector.
      initializer: initializer of the table.
      use_one_hot: look up with `one_hot(ids) @ table` instead of a gather.
      scale_factor: if set, the looked-up vectors are multiplied by it (e.g. `sqrt(W)`).

    Call: `layer(ids)`; ids int `[B, T]` (any shape `[...]`). Output `[..., W]`.
    Ids must lie in `[0, V)`: out-of-range ids are not checked (backends differ on them).
    """

    def __init__(
        self,
        vocab_size,
        embedding_width,
        initializer="glorot_uniform",
        use_one_hot=False,
        scale_factor=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_width = embedding_width
        self.initializer = keras.initializers.get(initializer)
        self.use_one_hot = use_one_hot
        self.scale_factor = scale_factor

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocab_size, self.embedding_width),
            initializer=self.initializer,
        )

    def call(self, inputs):
        ids = ops.cast(inputs, "int32")
        if self.use_one_hot:
            one_hot = ops.one_hot(ids, self.vocab_size, dtype=self.compute_dtype)
            outputs = ops.matmul(one_hot, self.embeddings)
        else:
            outputs = ops.take(self.embeddings, ids, axis=0)
        if self.scale_factor:
            outputs = outputs * ops.cast(self.scale_factor, outputs.dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embedding_width)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            embedding_width=self.embedding_width,
            initializer=keras.initializers.serialize(self.initializer),
            use_one_hot=self.use_one_hot,
            scale_factor=self.scale_factor,
        )
        return config


@keras.saving.register_keras_serializable(package="nlpkit")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings (BERT): one trainable vector per position.

    Args:
      max_length: the longest sequence the table covers.
      initializer: initializer of the `[max_length, D]` table.
      seq_axis: the axis of the input that holds the positions (default 1).

    Call: `layer(x)`; x `[B, T, D]` (or any rank, positions along `seq_axis`, width last).
    Output: the position embeddings broadcast to the shape of x (add them to x yourself).
    A statically known T > max_length raises `NlpkitError`.
    """

    def __init__(self, max_length, initializer="glorot_uniform", seq_axis=1, **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length
        self.initializer = keras.initializers.get(initializer)
        self.seq_axis = seq_axis

    def build(self, input_shape):
        self._check_length(input_shape)
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_length, input_shape[-1]),
            initializer=self.initializer,
        )

    def _check_length(self, shape):
        length = shape[self.seq_axis]
        if length is not None and length > self.max_length:
            raise NlpkitError(
                f"PositionEmbedding: input length {length} exceeds max_length={self.max_length}",
                hint="truncate the inputs or build the layer with a larger max_length",
            )

    def call(self, inputs):
        self._check_length(inputs.shape)
        rank = len(inputs.shape)
        seq_axis = self.seq_axis % rank
        length = ops.shape(inputs)[seq_axis]
        table = ops.convert_to_tensor(self.position_embeddings)[:length]
        # Put the positions on seq_axis and the width last; size-1 everywhere else.
        table_shape = [1] * rank
        table_shape[seq_axis] = length
        table_shape[-1] = self.position_embeddings.shape[1]
        table = ops.reshape(table, table_shape)
        return ops.broadcast_to(ops.cast(table, self.compute_dtype), ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            max_length=self.max_length,
            initializer=keras.initializers.serialize(self.initializer),
            seq_axis=self.seq_axis,
        )
        return config
