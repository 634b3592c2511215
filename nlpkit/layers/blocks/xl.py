"""Transformer-XL / XLNet blocks: relative attention + feed-forward, and the stack with recurrence memory."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.relative import MultiHeadRelativeAttention, TwoStreamRelativeAttention, not_self_mask
from nlpkit.layers.masks import causal_mask, combine_masks
from nlpkit.layers.relative_position import RelativePositionEncoding


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


def xl_attention_masks(
    query_length,
    memory_length,
    padding_mask=None,
    permutation_mask=None,
    causal=False,
    same_length=False,
    memory_mask=None,
):
    """Content-stream and query-stream masks `[B or 1, T, M+T]` (1 = may attend), or (None, None).

    Keys are the M memory positions followed by the T current ones.
      causal: query i sees keys j <= i + M (itself and what precedes it).
      same_length: with causal, also j >= i, so every query sees exactly M + 1 keys.
      padding_mask `[B, T]`: 1 = real token.
      permutation_mask `[B, T, T]` over the current tokens: 1 = may attend (XLNet's factorisation order).
      memory_mask `[B, M]`: 1 = a memory position that may be attended (0: e.g. memory of another
        document, after a stream moved on to a new one); None = all memory is visible.
    The query stream gets all of these; the content stream additionally always sees its own token.
    """
    key_length = memory_length + query_length
    structure = None
    if causal:
        structure = causal_mask(query_length, key_length, offset=memory_length)
        if same_length:
            rows = ops.expand_dims(ops.arange(query_length), 1)
            structure = ops.logical_and(structure, ops.expand_dims(ops.arange(key_length), 0) >= rows)
        structure = ops.expand_dims(structure, 0)
    if padding_mask is not None:
        padding_mask = _with_memory(ops.cast(padding_mask, "bool"), memory_length, axis=1)
        padding_mask = ops.expand_dims(padding_mask, 1)
    if permutation_mask is not None:
        permutation_mask = _with_memory(ops.cast(permutation_mask, "bool"), memory_length, axis=2)
    if memory_mask is not None:
        # [B, M] -> [B, 1, M+T]: the memory positions as given, the current ones all visible.
        current = ops.ones((ops.shape(memory_mask)[0], query_length), "bool")
        memory_mask = ops.concatenate([ops.cast(memory_mask, "bool"), current], axis=1)
        memory_mask = ops.expand_dims(memory_mask, 1)
    query_mask = combine_masks(structure, padding_mask, permutation_mask, memory_mask)
    if query_mask is None:
        return None, None
    own_position = ops.logical_not(not_self_mask(query_length, key_length))
    return ops.logical_or(query_mask, ops.expand_dims(own_position, 0)), query_mask


def _with_memory(mask, memory_length, axis):
    """Prepend `memory_length` True entries along `axis` (memory positions are always visible)."""
    shape = list(ops.shape(mask))
    shape[axis] = memory_length
    return ops.concatenate([ops.ones(shape, "bool"), mask], axis=axis)


def segment_matrix(segment_ids, memory_length):
    """`[B, T]` segment ids -> `[B, T, M+T]` True where query and key are in different segments.

    Memory positions count as segment 0 (as in XLNet).
    """
    segment_ids = ops.cast(segment_ids, "int32")
    key_ids = _with_memory_ids(segment_ids, memory_length)
    return ops.not_equal(ops.expand_dims(segment_ids, 2), ops.expand_dims(key_ids, 1))


def _with_memory_ids(segment_ids, memory_length):
    zeros = ops.zeros((ops.shape(segment_ids)[0], memory_length), "int32")
    return ops.concatenate([zeros, segment_ids], axis=1)


@keras.saving.register_keras_serializable(package="nlpkit")
class TransformerXL(keras.layers.Layer):
    """A stack of `TransformerXLBlock`s with recurrence memory, attention biases and relative encodings.

    Args:
      num_layers: L, number of blocks.
      hidden_size, num_attention_heads, head_size, inner_size, dropout_rate, attention_dropout_rate,
      inner_activation, norm_epsilon, kernel_initializer: as for `TransformerXLBlock`
      (dropout_rate also applies to the input streams and the relative encodings).
      two_stream: XLNet two-stream blocks (`query_stream` required).
      tie_attention_biases: one content/positional/segment bias `[N, H]` shared by all blocks;
        False = one per block `[L, N, H]`. Segment encodings are per block `[L, 2, N, H]`.
      mem_len: length of the memory returned for the next segment (0 = no memory returned).
      reuse_len: only the first reuse_len positions of the segment go to the memory (0 = all).
      same_length: with attention_type "uni", every query sees the same number (M + 1) of keys.
      attention_type: "bi" (every token sees all others) or "uni" (causal).
      clamp_len: clamp relative distances at +-clamp_len (-1 = no clamping).
      bi_data: the second half of the batch uses backward relative distances (XLNet).

    Call: `layer(content_stream, padding_mask=None, segment_ids=None, memories=None,
    permutation_mask=None, query_stream=None, target_mapping=None, memory_mask=None, training=None)`:
      content_stream `[B, T, D]` (embedded tokens); padding_mask `[B, T]` (1 = real token);
      segment_ids `[B, T]` int (memory counts as segment 0); memories `[B, L, M, D]` from the
      previous segment; permutation_mask `[B, T, T]` (1 = may attend); query_stream `[B, P, D]`;
      target_mapping `[B, P, T]`; memory_mask `[B, M]` (1 = memory position that may be attended,
      e.g. 0 where the previous segment was padding or belonged to another document).
    Output: dict `sequence_output` `[B, T, D]`, `encoder_outputs` (list of L `[B, T, D]`),
      `new_memories` `[B, L, min(mem_len, M + R), D]` if mem_len > 0 (R = reuse_len or T; the inputs
      of each block, without gradient), `new_memory_mask` `[B, min(mem_len, M + R)]` if mem_len > 0
      and memory_mask is given (which of those positions are real: the memory_mask of the old
      memory followed by the padding_mask of the kept tokens), `query_output` `[B, P, D]` if two_stream.
    """

    def __init__(
        self,
        num_layers,
        hidden_size,
        num_attention_heads,
        head_size,
        inner_size,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        inner_activation="relu",
        two_stream=False,
        tie_attention_biases=True,
        mem_len=0,
        reuse_len=0,
        same_length=False,
        attention_type="bi",
        clamp_len=-1,
        bi_data=False,
        norm_epsilon=1e-12,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention_type not in ("bi", "uni"):
            raise NlpkitError(f"TransformerXL: attention_type='{attention_type}'", hint="use 'bi' or 'uni'")
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.head_size = head_size
        self.inner_size = inner_size
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.inner_activation = inner_activation
        self.two_stream = two_stream
        self.tie_attention_biases = tie_attention_biases
        self.mem_len = mem_len
        self.reuse_len = reuse_len
        self.same_length = same_length
        self.attention_type = attention_type
        self.clamp_len = clamp_len
        self.bi_data = bi_data
        self.norm_epsilon = norm_epsilon
        self.kernel_initializer = kernel_initializer

        self._position_encoding = RelativePositionEncoding(
            hidden_size, clamp_len=clamp_len, bidirectional=bi_data, dtype=self.dtype_policy, name="position_encoding"
        )
        self._dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)
        self._blocks = [
            TransformerXLBlock(
                hidden_size=hidden_size,
                num_attention_heads=num_attention_heads,
                head_size=head_size,
                inner_size=inner_size,
                dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate,
                two_stream=two_stream,
                norm_epsilon=norm_epsilon,
                inner_activation=inner_activation,
                kernel_initializer=kernel_initializer,
                dtype=self.dtype_policy,
                name=f"block_{index}",
            )
            for index in range(num_layers)
        ]

    @property
    def blocks(self):
        return list(self._blocks)

    def build(self, content_stream_shape):
        per_block = () if self.tie_attention_biases else (self.num_layers,)
        bias_shape = per_block + (self.num_attention_heads, self.head_size)

        def weight(name, shape):
            return self.add_weight(name=name, shape=shape, initializer=keras.initializers.get(self.kernel_initializer))

        self.content_attention_bias = weight("content_attention_bias", bias_shape)
        self.positional_attention_bias = weight("positional_attention_bias", bias_shape)
        self.segment_attention_bias = weight("segment_attention_bias", bias_shape)
        segment_shape = (self.num_layers, 2, self.num_attention_heads, self.head_size)
        self.segment_encoding = weight("segment_encoding", segment_shape)

    def _biases(self, index):
        def pick(bias):
            return bias if self.tie_attention_biases else bias[index]

        return dict(
            content_attention_bias=pick(self.content_attention_bias),
            positional_attention_bias=pick(self.positional_attention_bias),
            segment_attention_bias=pick(self.segment_attention_bias),
            segment_encoding=self.segment_encoding[index],
        )

    def call(
        self,
        content_stream,
        padding_mask=None,
        segment_ids=None,
        memories=None,
        permutation_mask=None,
        query_stream=None,
        target_mapping=None,
        memory_mask=None,
        training=None,
    ):
        self._check_inputs(memories, query_stream, memory_mask)
        query_length = ops.shape(content_stream)[1]
        memory_length = 0 if memories is None else ops.shape(memories)[2]
        content_mask, query_mask = xl_attention_masks(
            query_length,
            memory_length,
            padding_mask=padding_mask,
            permutation_mask=permutation_mask,
            causal=self.attention_type == "uni",
            same_length=self.same_length,
            memory_mask=memory_mask,
        )
        segments = None if segment_ids is None else segment_matrix(segment_ids, memory_length)
        keys = content_stream if memories is None else ops.concatenate([memories[:, 0], content_stream], axis=1)
        encoding = self._dropout(self._position_encoding(content_stream, keys), training=training)

        stream = self._dropout(content_stream, training=training)
        query = None if query_stream is None else self._dropout(query_stream, training=training)
        new_memories, outputs = [], []
        for index, block in enumerate(self._blocks):
            memory = None if memories is None else memories[:, index]
            new_memories.append(self._updated_memory(stream, memory))
            two_stream_args = dict(query_stream=query, query_attention_mask=query_mask, target_mapping=target_mapping)
            result = block(
                stream,
                encoding,
                segment_matrix=segments,
                state=memory,
                content_attention_mask=content_mask,
                training=training,
                **self._biases(index),
                **(two_stream_args if self.two_stream else {}),
            )
            stream, query = result if self.two_stream else (result, None)
            outputs.append(stream)
        result = self._outputs(stream, outputs, new_memories, query)
        if self.mem_len > 0 and memory_mask is not None:
            result["new_memory_mask"] = self._updated_memory_mask(memory_mask, padding_mask, query_length)
        return result

    def _check_inputs(self, memories, query_stream, memory_mask=None):
        if memory_mask is not None and memories is None:
            raise NlpkitError(
                f"{self.name}: memory_mask given without memories",
                hint="pass memory_mask [B, M] together with the memories [B, L, M, D] it describes",
            )
        if memories is not None and memories.shape[1] not in (None, self.num_layers):
            raise NlpkitError(
                f"{self.name}: memories have {memories.shape[1]} layers, the stack has {self.num_layers}",
                hint="pass the new_memories returned by this stack for the previous segment ([B, L, M, D])",
            )
        if self.two_stream != (query_stream is not None):
            raise NlpkitError(
                f"{self.name}: two_stream={self.two_stream} but query_stream is "
                f"{'missing' if self.two_stream else 'given'}",
                hint="pass query_stream exactly when the stack is built with two_stream=True",
            )

    def _updated_memory(self, stream, memory):
        """The last mem_len of (old memory + the first reuse_len positions of this block's input)."""
        if self.mem_len <= 0:
            return None
        kept = stream[:, : self.reuse_len] if self.reuse_len > 0 else stream
        if memory is not None:
            kept = ops.concatenate([ops.cast(memory, kept.dtype), kept], axis=1)
        return ops.stop_gradient(kept[:, -self.mem_len :])

    def _updated_memory_mask(self, memory_mask, padding_mask, query_length):
        """Which positions of `_updated_memory` are real: the same selection applied to the masks."""
        if padding_mask is None:
            padding_mask = ops.ones((ops.shape(memory_mask)[0], query_length), "bool")
        kept = padding_mask[:, : self.reuse_len] if self.reuse_len > 0 else padding_mask
        kept = ops.concatenate([ops.cast(memory_mask, "bool"), ops.cast(kept, "bool")], axis=1)
        return kept[:, -self.mem_len :]

    def _outputs(self, stream, outputs, new_memories, query):
        result = dict(sequence_output=stream, encoder_outputs=outputs)
        if self.mem_len > 0:
            result["new_memories"] = ops.stack(new_memories, axis=1)
        if self.two_stream:
            result["query_output"] = query
        return result

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                name: getattr(self, name)
                for name in (
                    "num_layers",
                    "hidden_size",
                    "num_attention_heads",
                    "head_size",
                    "inner_size",
                    "dropout_rate",
                    "attention_dropout_rate",
                    "inner_activation",
                    "two_stream",
                    "tie_attention_biases",
                    "mem_len",
                    "reuse_len",
                    "same_length",
                    "attention_type",
                    "clamp_len",
                    "bi_data",
                    "norm_epsilon",
                    "kernel_initializer",
                )
            }
        )
        return config
