"""One Transformer-XL / XLNet layer: relative self-attention (one or two streams), then a feed-forward network."""

import keras

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.relative import MultiHeadRelativeAttention, TwoStreamRelativeAttention


@keras.saving.register_keras_serializable(package="nlpkit")
class TransformerXLBlock(keras.layers.Layer):
    """One Transformer-XL layer: relative self-attention, then a feed-forward network, each followed
    by dropout, a residual connection and layer norm (post-norm). With `two_stream=True` it is an
    XLNet layer: both the content and the query stream go through the two-stream attention and the
    same feed-forward network.

    Args:
      hidden_size: D, width of the streams.
      num_attention_heads: N.
      head_size: H.
      inner_size: width of the feed-forward hidden layer.
      dropout_rate: dropout after the attention and after the feed-forward output.
      attention_dropout_rate: dropout on the attention probabilities.
      two_stream: use `TwoStreamRelativeAttention` (then `query_stream` is required).
      norm_epsilon: layer norm epsilon.
      inner_activation: activation of the feed-forward hidden layer.
      inner_dropout: dropout after the feed-forward hidden layer.
      kernel_initializer: initializer of all kernels.

    Call: `block(content_stream, relative_position_encoding, content_attention_bias=None,
    positional_attention_bias=None, segment_matrix=None, segment_encoding=None,
    segment_attention_bias=None, state=None, content_attention_mask=None, query_stream=None,
    query_attention_mask=None, target_mapping=None, training=None)`; shapes as for
    `TwoStreamRelativeAttention` (content `[B, T, D]`, memory `state` `[B, M, D]`, encodings
    `[B, M+2T, D]`, masks `[B, T, M+T]`, query stream `[B, P, D]`, target_mapping `[B, P, T]`).
    Output: content `[B, T, D]`; with two streams, (content `[B, T, D]`, query `[B, P, D]`).
    """

    def __init__(
        self,
        hidden_size,
        num_attention_heads,
        head_size,
        inner_size,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        two_stream=False,
        norm_epsilon=1e-12,
        inner_activation="relu",
        inner_dropout=0.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.head_size = head_size
        self.inner_size = inner_size
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.two_stream = two_stream
        self.norm_epsilon = norm_epsilon
        self.inner_activation = inner_activation
        self.inner_dropout = inner_dropout
        self.kernel_initializer = kernel_initializer

        common = dict(dtype=self.dtype_policy)
        dense = dict(kernel_initializer=kernel_initializer, **common)
        attention_class = TwoStreamRelativeAttention if two_stream else MultiHeadRelativeAttention
        self._attention = attention_class(
            num_heads=num_attention_heads,
            key_dim=head_size,
            dropout=attention_dropout_rate,
            use_bias=False,
            name="relative_attention",
            **dense,
        )
        self._attention_dropout = keras.layers.Dropout(dropout_rate, **common)
        self._attention_norm = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="attention_norm", **common)
        self._inner_dense = keras.layers.Dense(inner_size, activation=inner_activation, name="inner", **dense)
        self._inner_dropout = keras.layers.Dropout(inner_dropout, **common)
        self._output_dense = keras.layers.Dense(hidden_size, name="output", **dense)
        self._output_dropout = keras.layers.Dropout(dropout_rate, **common)
        self._output_norm = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="output_norm", **common)

    @property
    def attention(self):
        return self._attention

    def call(
        self,
        content_stream,
        relative_position_encoding,
        content_attention_bias=None,
        positional_attention_bias=None,
        segment_matrix=None,
        segment_encoding=None,
        segment_attention_bias=None,
        state=None,
        content_attention_mask=None,
        query_stream=None,
        query_attention_mask=None,
        target_mapping=None,
        training=None,
    ):
        self._check_streams(query_stream, query_attention_mask, target_mapping)
        shared = dict(
            relative_position_encoding=relative_position_encoding,
            content_attention_bias=content_attention_bias,
            positional_attention_bias=positional_attention_bias,
            segment_matrix=segment_matrix,
            segment_encoding=segment_encoding,
            segment_attention_bias=segment_attention_bias,
            state=state,
            training=training,
        )
        if not self.two_stream:
            attended = self._attention(content_stream, content_stream, attention_mask=content_attention_mask, **shared)
            return self._residual_feedforward(attended, content_stream, training)
        content, query = self._attention(
            content_stream,
            query_stream,
            target_mapping=target_mapping,
            content_attention_mask=content_attention_mask,
            query_attention_mask=query_attention_mask,
            **shared,
        )
        return (
            self._residual_feedforward(content, content_stream, training),
            self._residual_feedforward(query, query_stream, training),
        )

    def _check_streams(self, query_stream, query_attention_mask, target_mapping):
        if self.two_stream and query_stream is None:
            raise NlpkitError(
                f"{self.name}: two_stream=True needs query_stream",
                hint="pass query_stream [B, P, D] (and target_mapping)",
            )
        if not self.two_stream and any(x is not None for x in (query_stream, query_attention_mask, target_mapping)):
            raise NlpkitError(
                f"{self.name}: query_stream/query_attention_mask/target_mapping given to a one-stream block",
                hint="build the block with two_stream=True to use the query stream",
            )

    def _residual_feedforward(self, attended, stream, training):
        """Post-norm: norm(x + dropout(attention)), then norm(y + dropout(ffn(y)))."""
        attended = self._attention_norm(stream + self._attention_dropout(attended, training=training))
        inner = self._inner_dropout(self._inner_dense(attended), training=training)
        output = self._output_dropout(self._output_dense(inner), training=training)
        return self._output_norm(attended + output)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            head_size=self.head_size,
            inner_size=self.inner_size,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            two_stream=self.two_stream,
            norm_epsilon=self.norm_epsilon,
            inner_activation=self.inner_activation,
            inner_dropout=self.inner_dropout,
            kernel_initializer=self.kernel_initializer,
        )
        return config
