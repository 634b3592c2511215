"""Packing token segments into BERT inputs: [CLS] A [SEP] B [SEP] ..., truncated and padded to seq_length."""

from nlpkit._tf import import_tensorflow
from nlpkit.errors import NlpkitError

tf = import_tensorflow()
import keras  # noqa: E402 - imported after TensorFlow so its import noise stays filtered
import tensorflow_text as tf_text  # noqa: E402

TRUNCATORS = ("round_robin", "waterfall")


def check_seq_length(seq_length, num_segments=1):
    """seq_length must leave room for [CLS], one [SEP] per segment and at least one token."""
    smallest = num_segments + 2
    if seq_length < max(3, smallest):
        raise NlpkitError(
            f"--seq-length {seq_length} is too small for {num_segments} segment(s)",
            hint=f"use at least {max(3, smallest)} ([CLS], [SEP] per segment, and one token)",
        )


def _as_ragged_2d(segment):
    segment = segment if isinstance(segment, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(segment)
    if segment.shape.rank > 2:  # [B, (words), (pieces)] -> [B, (pieces)]
        segment = segment.merge_dims(1, -1)
    return tf.cast(segment, tf.int32)


def pack_inputs(segments, seq_length, *, cls_id, sep_id, pad_id, truncator="round_robin"):
    """Pack 1..N segments (each int RaggedTensor [B, (tokens)]) into BERT's three [B, seq_length] int32 inputs.

    Truncation keeps the total within seq_length - (N + 1): "round_robin" takes one token from each
    segment in turn (so long segments lose most, like original BERT's pair truncation), "waterfall"
    fills the first segment before the next. Returns a dict input_word_ids, input_mask, input_type_ids.
    """
    if truncator not in TRUNCATORS:
        raise NlpkitError(f"unknown truncation {truncator!r}", hint=f"choose one of {', '.join(TRUNCATORS)}")
    segments = [_as_ragged_2d(segment) for segment in segments]
    check_seq_length(seq_length, len(segments))
    budget = seq_length - (len(segments) + 1)
    if len(segments) == 1:
        return _pack_one_segment(segments[0], seq_length, budget, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id)
    trimmer_class = tf_text.RoundRobinTrimmer if truncator == "round_robin" else tf_text.WaterfallTrimmer
    trimmed = trimmer_class(max_seq_length=budget).trim(segments)
    word_ids, type_ids = tf_text.combine_segments(trimmed, start_of_sequence_id=cls_id, end_of_segment_id=sep_id)
    word_ids, mask = tf_text.pad_model_inputs(word_ids, max_seq_length=seq_length, pad_value=pad_id)
    type_ids, _ = tf_text.pad_model_inputs(type_ids, max_seq_length=seq_length, pad_value=0)
    return {
        "input_word_ids": tf.cast(word_ids, tf.int32),
        "input_mask": tf.cast(mask, tf.int32),
        "input_type_ids": tf.cast(type_ids, tf.int32),
    }


def _pack_one_segment(tokens, seq_length, budget, *, cls_id, sep_id, pad_id):
    """One segment: both truncators keep its first `budget` tokens. A few ops instead of the general
    trimmer + combine_segments graph, whose tracing alone took 0.4 s of every `nlpkit tokenize` run."""
    kept = tokens[:, :budget]
    ends = tf.ones([kept.nrows(), 1], tf.int32)
    word_ids = tf.concat([ends * cls_id, kept, ends * sep_id], axis=1)
    lengths = word_ids.row_lengths()
    return {
        "input_word_ids": word_ids.to_tensor(default_value=pad_id, shape=[None, seq_length]),
        "input_mask": tf.sequence_mask(lengths, seq_length, dtype=tf.int32),
        "input_type_ids": tf.zeros([kept.nrows(), seq_length], tf.int32),
    }


def truncated_rows(segments, seq_length):
    """Bool [B]: rows whose segments do not fit in seq_length (for the manifest's truncation statistics)."""
    segments = [_as_ragged_2d(segment) for segment in segments]
    total = tf.add_n([segment.row_lengths() for segment in segments])
    return total > seq_length - (len(segments) + 1)


@keras.saving.register_keras_serializable(package="nlpkit")
class BertPackInputs(keras.layers.Layer):
    """Keras preprocessing layer: token segments -> BERT encoder inputs (TensorFlow tensors only).

    Args:
        seq_length: length T of every output row (>= 3).
        start_of_sequence_id: id of [CLS]. end_of_segment_id: id of [SEP]. padding_id: id of [PAD].
        truncator: "round_robin" or "waterfall".

    Input: one int RaggedTensor [B, (tokens)] or a list of 1..N of them (also [B, (words), (pieces)]),
    or unbatched [(tokens)] rows. Output: dict of int32 [B, T] (or [T] unbatched) tensors
    `input_word_ids` ([CLS] A [SEP] B [SEP] then padding), `input_mask` (1 on real tokens),
    `input_type_ids` (segment index of each token, 0 on padding).
    """

    def __init__(self, seq_length, start_of_sequence_id, end_of_segment_id, padding_id=0,
                 truncator="round_robin", **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        if truncator not in TRUNCATORS:
            raise NlpkitError(f"unknown truncation {truncator!r}", hint=f"choose one of {', '.join(TRUNCATORS)}")
        check_seq_length(seq_length)
        self.seq_length = seq_length
        self.start_of_sequence_id = start_of_sequence_id
        self.end_of_segment_id = end_of_segment_id
        self.padding_id = padding_id
        self.truncator = truncator

    def call(self, inputs):
        segments = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        unbatched = segments[0].shape.rank == 1
        if unbatched:
            segments = [tf.RaggedTensor.from_tensor(tf.expand_dims(segment, 0)) for segment in segments]
        packed = pack_inputs(
            segments,
            self.seq_length,
            cls_id=self.start_of_sequence_id,
            sep_id=self.end_of_segment_id,
            pad_id=self.padding_id,
            truncator=self.truncator,
        )
        if unbatched:
            packed = {name: value[0] for name, value in packed.items()}
        return packed

    def get_config(self):
        config = super().get_config()
        config.update(
            seq_length=self.seq_length,
            start_of_sequence_id=self.start_of_sequence_id,
            end_of_segment_id=self.end_of_segment_id,
            padding_id=self.padding_id,
            truncator=self.truncator,
        )
        return config
