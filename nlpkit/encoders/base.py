"""What the BERT-style encoders share: the input dict, the length check, the sliding window.

An encoder subclass implements `_encode(word_ids, mask, type_ids, output_range, training)`
returning `(sequence_output, pooled_output, encoder_outputs)`; `EncoderBase.call` unpacks the
inputs, refuses (or windows) inputs longer than the position table, and returns the output dict.
"""

import contextlib
import threading

import keras
import numpy as np
from keras import ops

from nlpkit.errors import NlpkitError

INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
LONG_INPUT_MODES = ("error", "sliding_window")


_INITIALIZATION = threading.local()


@contextlib.contextmanager
def weights_to_be_loaded():
    """Encoders built inside start from zeros instead of random values.

    For weights about to be overwritten (loading a model directory, a full conversion):
    drawing 10^7 truncated-normal values for a word table costs seconds on a CPU.
    """
    previous = getattr(_INITIALIZATION, "skip", False)
    _INITIALIZATION.skip = True
    try:
        yield
    finally:
        _INITIALIZATION.skip = previous


def truncated_normal(stddev):
    """The encoders' initializer (zeros inside `weights_to_be_loaded`)."""
    if getattr(_INITIALIZATION, "skip", False):
        return keras.initializers.Zeros()
    return keras.initializers.TruncatedNormal(stddev=stddev)


class EncoderBase(keras.Model):
    """Base of the dict-in, dict-out encoders (not registered itself; subclasses are).

    Subclasses set `self.max_sequence_length`, `self.output_range`, `self.long_inputs` and
    `self._constructor_arguments` (names of their constructor arguments, for `get_config`).
    """

    _constructor_arguments = ()

    def _check_long_inputs_mode(self):
        if self.long_inputs not in LONG_INPUT_MODES:
            raise NlpkitError(
                f"{type(self).__name__}: long_inputs={self.long_inputs!r} is not supported",
                hint=f"use one of {', '.join(LONG_INPUT_MODES)}",
            )

    def __call__(self, inputs, *args, **kwargs):
        # Checked before Keras' __call__, which would wrap the message in its own text.
        word_ids = unpack_inputs(inputs)[0]
        if self._too_long(word_ids) and self.long_inputs != "sliding_window":
            raise NlpkitError(
                f"{type(self).__name__}: input length {word_ids.shape[1]} exceeds max_sequence_length="
                f"{self.max_sequence_length}",
                hint="truncate the inputs, or build the encoder with long_inputs='sliding_window'",
            )
        return super().__call__(inputs, *args, **kwargs)

    def _too_long(self, word_ids):
        length = word_ids.shape[1]
        return length is not None and length > self.max_sequence_length

    def call(self, inputs, training=None):
        word_ids, mask, type_ids = unpack_inputs(inputs)
        if self._too_long(word_ids):
            length = word_ids.shape[1]
            sequence, pooled, layers = self._sliding_window(word_ids, mask, type_ids, length, training)
        else:
            sequence, pooled, layers = self._encode(word_ids, mask, type_ids, self.output_range, training)
        return dict(sequence_output=sequence, pooled_output=pooled, encoder_outputs=layers)

    def _sliding_window(self, word_ids, mask, type_ids, length, training):
        """Encode overlapping windows of the position table's length in one batch, then stitch.

        Windows start every half window (the last one ends at the input's end); each token's
        output comes from the window in which it is closest to the centre, so every token keeps
        at least a quarter window of context on both sides where the input has it. Positions and
        token types restart in each window; `pooled_output` comes from the first window.
        """
        window = self.max_sequence_length
        starts, gather_index = sliding_window_plan(length, window)
        positions = starts[:, None] + np.arange(window)[None, :]  # [W_count, window]
        count = len(starts)

        def to_windows(tensor):
            windows = ops.take(tensor, ops.convert_to_tensor(positions.reshape(-1)), axis=1)
            return ops.reshape(windows, (-1, window))  # [B * count, window]

        sequence, pooled, layers = self._encode(
            to_windows(word_ids), to_windows(mask), to_windows(type_ids), None, training
        )
        index = ops.convert_to_tensor(gather_index)

        def stitch(windowed):
            width = windowed.shape[-1]
            flat = ops.reshape(windowed, (-1, count * window, width))
            stitched = ops.take(flat, index, axis=1)
            return stitched if self.output_range is None else stitched[:, : self.output_range]

        pooled = ops.reshape(pooled, (-1, count, pooled.shape[-1]))[:, 0]
        return stitch(sequence), pooled, [stitch(layer) for layer in layers]

    def compute_output_spec(self, inputs, training=None):
        # Given rather than traced: shapes follow from the config, and a symbolic call with an
        # unknown length T then never runs the layers on placeholder tensors.
        word_ids = unpack_inputs(inputs)[0]
        batch, length = word_ids.shape[0], word_ids.shape[1]
        last_length = length if self.output_range is None else self.output_range
        dtype = self.compute_dtype
        layers = [keras.KerasTensor((batch, length, self.hidden_size), dtype=dtype) for _ in range(self.num_layers)]
        layers[-1] = keras.KerasTensor((batch, last_length, self.hidden_size), dtype=dtype)
        return dict(
            sequence_output=layers[-1],
            pooled_output=keras.KerasTensor((batch, self.hidden_size), dtype=dtype),
            encoder_outputs=layers,
        )

    def get_embedding_table(self):
        """The word-embedding table `[V, E]` (for tying an output layer to it)."""
        return self.word_embeddings.embeddings

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }
        config.update({name: getattr(self, name) for name in self._constructor_arguments})
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def sliding_window_plan(length, window):
    """(window starts, index into the flattened windows for each token), as NumPy int arrays."""
    stride = max(window // 2, 1)
    starts = list(range(0, length - window, stride)) + [length - window]
    starts = np.array(starts)
    tokens = np.arange(length)
    centres = starts + (window - 1) / 2.0
    inside = (tokens[:, None] >= starts[None, :]) & (tokens[:, None] < starts[None, :] + window)
    distance = np.where(inside, np.abs(tokens[:, None] - centres[None, :]), np.inf)
    owner = np.argmin(distance, axis=1)  # ties go to the earlier window
    gather_index = owner * window + (tokens - starts[owner])
    return starts, gather_index.astype("int32")


def unpack_inputs(inputs):
    """The input dict (or a list in INPUT_NAMES order) -> (word_ids, mask, type_ids).

    A missing mask means every token is real; missing type ids mean all zeros.
    """
    if isinstance(inputs, dict):
        unknown = sorted(set(inputs) - set(INPUT_NAMES))
        if unknown:
            raise NlpkitError(f"unknown encoder input '{unknown[0]}'", hint=f"inputs are {', '.join(INPUT_NAMES)}")
        if "input_word_ids" not in inputs:
            raise NlpkitError("the encoder inputs lack 'input_word_ids'", hint=f"pass a dict with {', '.join(INPUT_NAMES)}")
        word_ids = inputs["input_word_ids"]
        mask, type_ids = inputs.get("input_mask"), inputs.get("input_type_ids")
    elif isinstance(inputs, (list, tuple)) and len(inputs) == 3:
        word_ids, mask, type_ids = inputs
    else:
        raise NlpkitError("encoder inputs must be a dict", hint=f"pass a dict with {', '.join(INPUT_NAMES)}")
    if mask is None:
        mask = ops.ones_like(word_ids)
    if type_ids is None:
        type_ids = ops.zeros_like(word_ids)
    return word_ids, mask, type_ids
