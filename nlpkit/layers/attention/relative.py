"""Relative-position attention: Transformer-XL (with XLNet's segment attention) and XLNet two-stream.

Scores for query i and key j are the sum of (Dai et al. 2019, Yang et al. 2019)
  content:  (q_i + u) . k_j                       u = content attention bias   [N, H]
  position: (q_i + v) . r_(i+M-j)                 v = positional attention bias [N, H]
  segment:  (q_i + b) . s_(seg_i != seg_j)        b = segment attention bias, s = segment encoding [2, N, H]
all divided by sqrt(H). r_d is the projected encoding of the relative distance d; M is the memory
length (queries are the last T of the M + T keys). Encodings come as `[B, S + T, D]` for the
distances `S, ..., -T+1` (see `nlpkit.layers.relative_position`), turned into `[.., T, S]` by the
vectorised relative shift below.
"""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
import nlpkit.layers.attention.keras_mha as keras_mha
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import register_attention
from nlpkit.layers.masks import combine_masks, masked_softmax
from nlpkit.layers.relative_position import RelativePositionEncoding


def relative_shift(position_scores, key_length):
    """`[B, N, T, S+T]` scores per distance -> `[B, N, T, S]` scores per key.

    `out[..., i, j] = in[..., i, j + T - i]`, i.e. the score of the distance `(i + S - T) - j`.
    Vectorised with the reshape trick: viewing the `T x L` block as `L x T`, dropping its first
    row (T entries) and viewing the rest as `T x (L-1)` moves row i left by T - i columns.
    """
    heads = position_scores.shape[1]
    query_length, width = ops.shape(position_scores)[2], ops.shape(position_scores)[3]
    shifted = ops.reshape(position_scores, (-1, heads, width, query_length))[:, :, 1:, :]
    shifted = ops.reshape(shifted, (-1, heads, query_length, width - 1))
    return shifted[:, :, :, :key_length]


def _plus_bias(projected, bias):
    """`[B, T, N, H]` + optional `[N, H]` bias."""
    return projected if bias is None else projected + ops.cast(bias, projected.dtype)


def not_self_mask(query_length, key_length):
    """`[T, S]`: False where key j is query i's own position (j = i + S - T), True elsewhere."""
    rows = ops.expand_dims(ops.arange(query_length), 1) + (key_length - query_length)
    return ops.not_equal(rows, ops.expand_dims(ops.arange(key_length), 0))


@keras.saving.register_keras_serializable(package="nlpkit")
class MultiHeadRelativeAttention(MultiHeadAttention):
    """Transformer-XL relative-position attention, with XLNet's segment attention.

    Projections (query, key, value, output) are those of `MultiHeadAttention`; an extra bias-free
    projection maps the relative position encodings to `[B, S+T, N, H]`. Memory (`state`) is
    concatenated in front of the keys and values; queries are the last T positions.

    Args: those of `MultiHeadAttention` (num_heads N, key_dim H, value_dim, dropout, use_bias,
      output_shape, kernel_initializer, bias_initializer, ...). Only the sequence layout
      `[B, T, D]` is supported: `attention_axes` must be None or (1,).

    Call: `layer(query, value, key=None, relative_position_encoding=..., content_attention_bias=None,
    positional_attention_bias=None, segment_matrix=None, segment_encoding=None,
    segment_attention_bias=None, state=None, attention_mask=None, return_attention_scores=False,
    training=None)`.
      query `[B, T, D]`; value/key `[B, S, D]`; state (memory) `[B, M, D]` or None;
      relative_position_encoding `[B, M+S+T, E]` (required; distances M+S, ..., -T+1);
      biases `[N, H]` (None = zero); segment_matrix `[B, T, M+S]` (True = different segments,
      requires segment_encoding `[2, N, H]`: row 0 for same, row 1 for different);
      attention_mask `[B, T, M+S]` (1 = may attend).
    Output `[B, T, D]` (or `output_shape`); with scores, also probabilities `[B, N, T, M+S]`.
    """

    def __init__(self, num_heads, key_dim, attention_axes=None, **kwargs):
        if attention_axes not in (None, 1, (1,), [1]):
            raise NlpkitError(
                f"{type(self).__name__}: attention_axes={attention_axes} is not supported",
                hint="relative attention runs over the sequence axis only; leave attention_axes unset",
            )
        super().__init__(num_heads=num_heads, key_dim=key_dim, attention_axes=attention_axes, **kwargs)

    def build(self, query_shape, value_shape, key_shape=None, relative_position_encoding_shape=None):
        super().build(query_shape, value_shape, key_shape)
        encoding_width = (relative_position_encoding_shape or query_shape)[-1]
        self._encoding_dense = keras.layers.EinsumDense(
            "bld,dnh->blnh",
            output_shape=(None, self.num_heads, self.key_dim),
            name="encoding",
            **keras_mha.sublayer_kwargs(self),
        )
        self._encoding_dense.build((None, None, encoding_width))

    @property
    def encoding_dense(self):
        return self._encoding_dense

    def call(
        self,
        query,
        value,
        key=None,
        relative_position_encoding=None,
        content_attention_bias=None,
        positional_attention_bias=None,
        segment_matrix=None,
        segment_encoding=None,
        segment_attention_bias=None,
        state=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
    ):
        key = value if key is None else key
        if state is not None:
            state = ops.cast(state, key.dtype)
            key, value = ops.concatenate([state, key], axis=1), ops.concatenate([state, value], axis=1)
        output, probs = self._relative_attention(
            self.query_dense(query),
            self.key_dense(key),
            self.value_dense(value),
            relative_position_encoding,
            dict(
                content=content_attention_bias,
                positional=positional_attention_bias,
                segment=segment_attention_bias,
            ),
            segment_matrix,
            segment_encoding,
            attention_mask,
            training,
        )
        output = self.output_dense(output)
        return (output, probs) if return_attention_scores else output

    def _relative_attention(
        self, query, key, value, relative_position_encoding, biases, segment_matrix, segment_encoding, mask, training
    ):
        """Projected query `[B, T, N, H]`, key/value `[B, S, N, H]` -> context `[B, T, N, H]`, probs."""
        if relative_position_encoding is None:
            raise NlpkitError(
                f"{type(self).__name__}: relative_position_encoding is required",
                hint="pass RelativePositionEncoding()(query, key) ([B, S+T, D]), or use the 'relative' attention",
            )
        key_length = ops.shape(key)[1]
        position = self._encoding_dense(ops.cast(relative_position_encoding, query.dtype))
        content_scores = ops.einsum("bsnh,btnh->bnts", key, _plus_bias(query, biases["content"]))
        position_scores = ops.einsum("blnh,btnh->bntl", position, _plus_bias(query, biases["positional"]))
        scores = content_scores + relative_shift(position_scores, key_length)
        if segment_matrix is not None:
            scores = scores + self._segment_scores(query, segment_matrix, segment_encoding, biases["segment"])
        scores = scores * ops.cast(keras_mha.logit_scale(self), scores.dtype)
        # Softmax over the last axis (an axis tuple breaks TF graphs with an unknown batch size).
        probs = masked_softmax(scores, None if mask is None else ops.expand_dims(mask, 1), axis=-1)
        probs = ops.cast(probs, query.dtype)
        dropped = keras_mha.probability_dropout(self)(probs, training=training) if self.dropout > 0.0 else probs
        return ops.einsum("bnts,bsnh->btnh", dropped, value), probs

    def _segment_scores(self, query, segment_matrix, segment_encoding, segment_bias):
        """`[B, N, T, S]`: (q_i + b) . s_0 where i, j share a segment, (q_i + b) . s_1 where not."""
        if segment_encoding is None:
            raise NlpkitError(
                f"{type(self).__name__}: segment_matrix given without segment_encoding",
                hint="pass segment_encoding [2, N, H] together with segment_matrix",
            )
        segment_encoding = ops.cast(segment_encoding, query.dtype)
        per_kind = ops.einsum("btnh,knh->bntk", _plus_bias(query, segment_bias), segment_encoding)
        different = ops.expand_dims(ops.cast(segment_matrix, "bool"), 1)
        return ops.where(different, per_kind[..., 1:], per_kind[..., :1])

    def compute_output_spec(self, query, value, key=None, state=None, return_attention_scores=False, **kwargs):
        output_shape = tuple(query.shape[:-1]) + tuple(keras_mha.output_shape(self) or (query.shape[-1],))
        output = keras.KerasTensor(output_shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        memory_length = 0 if state is None else state.shape[1]
        key_length = None if None in (memory_length, value.shape[1]) else memory_length + value.shape[1]
        probs_shape = (query.shape[0], self.num_heads, query.shape[1], key_length)
        return output, keras.KerasTensor(probs_shape, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="nlpkit")
class TwoStreamRelativeAttention(MultiHeadRelativeAttention):
    """XLNet two-stream relative attention: a content stream and a query stream over one set of keys.

    The content stream is relative self-attention over memory + content (it sees its own token).
    The query stream attends to the same keys and values (memory + content) but never to its own
    position: the layer always removes key `i + M` for query position i, whatever the mask says,
    so what it predicts at i cannot depend on the content of token i. Both streams share all
    projections.

    Args: those of `MultiHeadRelativeAttention`.

    Call: `layer(content_stream, query_stream=None, relative_position_encoding=..., target_mapping=None,
    content_attention_bias=None, positional_attention_bias=None, segment_matrix=None,
    segment_encoding=None, segment_attention_bias=None, state=None, content_attention_mask=None,
    query_attention_mask=None, training=None)`.
      content_stream `[B, T, D]`; query_stream `[B, T, D]`, or `[B, P, D]` for P prediction targets
      with target_mapping `[B, P, T]` (one-hot rows: target p sits at position t);
      masks `[B, T, M+T]` (1 = may attend); other arguments as for `MultiHeadRelativeAttention`.
    Output: content `[B, T, D]` if query_stream is None, else (content `[B, T, D]`, query `[B, P, D]`).
    """

    def build(self, content_stream_shape, relative_position_encoding_shape=None):
        super().build(content_stream_shape, content_stream_shape, None, relative_position_encoding_shape)

    def call(
        self,
        content_stream,
        query_stream=None,
        relative_position_encoding=None,
        target_mapping=None,
        content_attention_bias=None,
        positional_attention_bias=None,
        segment_matrix=None,
        segment_encoding=None,
        segment_attention_bias=None,
        state=None,
        content_attention_mask=None,
        query_attention_mask=None,
        training=None,
    ):
        keys = content_stream
        if state is not None:
            keys = ops.concatenate([ops.cast(state, content_stream.dtype), content_stream], axis=1)
        key, value = self.key_dense(keys), self.value_dense(keys)
        biases = dict(
            content=content_attention_bias, positional=positional_attention_bias, segment=segment_attention_bias
        )
        shared = (relative_position_encoding, biases, segment_matrix, segment_encoding)
        content, _ = self._relative_attention(
            self.query_dense(content_stream), key, value, *shared, content_attention_mask, training
        )
        content = self.output_dense(content)
        if query_stream is None:
            return content

        query = self.query_dense(query_stream)
        if target_mapping is not None:  # place each target's query at its position in the sequence
            query = ops.einsum("bpnh,bpt->btnh", query, ops.cast(target_mapping, query.dtype))
        own_position = not_self_mask(ops.shape(query)[1], ops.shape(key)[1])
        mask = combine_masks(query_attention_mask, ops.expand_dims(own_position, 0))
        queried, _ = self._relative_attention(query, key, value, *shared, mask, training)
        if target_mapping is not None:
            queried = ops.einsum("btnh,bpt->bpnh", queried, ops.cast(target_mapping, queried.dtype))
        return content, self.output_dense(queried)

    def compute_output_spec(self, content_stream, query_stream=None, **kwargs):
        content = super().compute_output_spec(content_stream, content_stream)
        if query_stream is None:
            return content
        return content, super().compute_output_spec(query_stream, content_stream)


@keras.saving.register_keras_serializable(package="nlpkit")
class SinusoidalRelativeAttention(MultiHeadRelativeAttention):
    """Relative attention with the plain `MultiHeadAttention` call signature (registry name "relative").

    Owns its content and positional biases (`[N, H]`, initialised by `bias_initializer`) and
    computes sinusoidal encodings of the relative distances from the query and key lengths, so it
    drops into any block that takes an attention by name. Queries are the last T of the S keys.

    Args: those of `MultiHeadRelativeAttention`, plus
      clamp_len: distances beyond +-clamp_len share one encoding (-1 = no clamping).

    Call: `layer(query, value, key=None, attention_mask=None, return_attention_scores=False,
    training=None)`; query `[B, T, D]` (D even), value/key `[B, S, D]`, attention_mask `[B, T, S]`.
    Output `[B, T, D]` (or `output_shape`); with scores, also probabilities `[B, N, T, S]`.
    """

    def __init__(self, num_heads, key_dim, clamp_len=-1, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.clamp_len = clamp_len

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        self._position_encoding = RelativePositionEncoding(
            query_shape[-1], clamp_len=self.clamp_len, dtype=self.dtype_policy, name="relative_position_encoding"
        )
        bias_kwargs = dict(shape=(self.num_heads, self.key_dim), initializer=keras_mha.bias_initializer(self))
        self.content_attention_bias = self.add_weight(name="content_attention_bias", **bias_kwargs)
        self.positional_attention_bias = self.add_weight(name="positional_attention_bias", **bias_kwargs)

    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False, training=None):
        return super().call(
            query,
            value,
            key=key,
            relative_position_encoding=self._position_encoding(query, value),
            content_attention_bias=self.content_attention_bias,
            positional_attention_bias=self.positional_attention_bias,
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
        )

    def get_config(self):
        config = super().get_config()
        config.update(clamp_len=self.clamp_len)
        return config


register_attention("relative")(SinusoidalRelativeAttention)
