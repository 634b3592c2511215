"""Transformer-XL / XLNet: the stack of `TransformerXLBlock`s with recurrence memory and relative encodings.

The block is in `xl_block.py`, the masks over memory + current keys in `xl_masks.py`.
"""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.blocks.xl_block import TransformerXLBlock
from nlpkit.layers.blocks.xl_masks import segment_matrix, xl_attention_masks
from nlpkit.layers.relative_position import RelativePositionEncoding

__all__ = ["TransformerXL", "TransformerXLBlock", "segment_matrix", "xl_attention_masks"]


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
