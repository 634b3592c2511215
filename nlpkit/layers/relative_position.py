"""Sinusoidal encodings of relative distances (Transformer-XL, XLNet).

Convention shared with `nlpkit.layers.attention.relative`: for T queries that are the last T of
S keys (memory first, then the current segment), the encodings cover the L = S + T relative
distances `S, S-1, ..., -T+1` in that order. The relative shift in the attention then picks, for
query i and key j, the encoding of the distance `(i + S - T) - j` (how far the key lies behind the
query). Distances are listed in both directions so the shift never reads past a row, whatever the
mask; for causal attention the negative distances are simply masked away.
"""

import keras
from keras import ops

from nlpkit.errors import NlpkitError


def relative_distances(query_length, key_length):
    """`[S + T]` float32 distances `S, S-1, ..., -T+1` (the order the relative shift expects)."""
    return ops.cast(ops.arange(key_length, -query_length, -1), "float32")


def sinusoid(positions, hidden_size):
    """`[..., L]` positions -> `[..., L, hidden_size]` encodings `[sin(p w_k), cos(p w_k)]`.

    Frequencies `w_k = 10000^(-2k / hidden_size)`, k = 0 .. hidden_size/2 - 1, as in
    "Attention Is All You Need"; sines fill the first half of the features, cosines the second.
    """
    exponents = ops.arange(0, hidden_size, 2, dtype="float32") / float(hidden_size)
    inverse_frequencies = ops.power(10000.0, -exponents)
    angles = ops.expand_dims(ops.cast(positions, "float32"), -1) * inverse_frequencies
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)


@keras.saving.register_keras_serializable(package="nlpkit")
class RelativePositionEncoding(keras.layers.Layer):
    """Sinusoidal encodings of the relative distances between queries and keys.

    Args:
      hidden_size: D, size of each encoding (even).
      clamp_len: if > 0, distances beyond +-clamp_len share the encoding of +-clamp_len
        (lets a model run on longer contexts than it was trained on). -1 = no clamping.
      bidirectional: XLNet's "bi_data": the first ceil(B/2) examples of the batch get the forward
        distances, the others the same distances negated (the sequence read backwards).

    Call: `layer(query, key=None)`; only the shapes are used: query `[B, T, ...]`, key `[B, S, ...]`
    (default: the query, S = T). With memory, pass the concatenation memory+segment as key.
    Output: `[B, S + T, D]` encodings of the distances `S, S-1, ..., -T+1`, in the compute dtype.
    """

    def __init__(self, hidden_size, clamp_len=-1, bidirectional=False, **kwargs):
        super().__init__(**kwargs)
        if hidden_size % 2:
            raise NlpkitError(
                f"RelativePositionEncoding: hidden_size={hidden_size} is odd",
                hint="use an even hidden_size (half sines, half cosines)",
            )
        self.hidden_size = hidden_size
        self.clamp_len = clamp_len
        self.bidirectional = bidirectional

    def call(self, query, key=None):
        key = query if key is None else key
        batch_size = ops.shape(query)[0]
        distances = relative_distances(ops.shape(query)[1], ops.shape(key)[1])
        distances = ops.broadcast_to(distances, (batch_size, ops.shape(distances)[0]))
        if self.bidirectional:
            forward = ops.arange(batch_size) < batch_size - batch_size // 2
            distances = ops.where(ops.expand_dims(forward, -1), distances, -distances)
        if self.clamp_len > 0:
            distances = ops.clip(distances, -float(self.clamp_len), float(self.clamp_len))
        return ops.cast(sinusoid(distances, self.hidden_size), self.compute_dtype)

    def compute_output_shape(self, query_shape, key_shape=None):
        key_shape = query_shape if key_shape is None else key_shape
        length = None if None in (query_shape[1], key_shape[1]) else query_shape[1] + key_shape[1]
        return (query_shape[0], length, self.hidden_size)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_size=self.hidden_size, clamp_len=self.clamp_len, bidirectional=self.bidirectional)
        return config
