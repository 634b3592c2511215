"""Normalise text while remembering where each normalised byte came from (TensorFlow-only).

Tokenizers that clean, lower-case or strip accents before splitting find their token offsets in
the normalised text; `normalize_with_offsets` gives that text and a function mapping those offsets
back to byte offsets into the original string, as tensorflow-text's `*_with_offsets` give them.

The text is cut into units (one character with the combining marks after it) and each unit is
normalised alone. That gives the same text as normalising the whole string, because lower-casing,
NFD, NFKC case folding and mark stripping act character by character and a mark stays with its
base (so NFD's reordering of marks and NFKC's recomposition see the same sequence). Context rules
that look across units (Greek final sigma) must be applied to the original text beforehand.
"""

from nlpkit._tf import import_tensorflow

tf = import_tensorflow()
import tensorflow_text as tf_text  # noqa: E402

_UNIT = r"(?s).\p{M}*"


def normalize_with_offsets(texts, normalize):
    """[B] strings, `normalize` ([N] strings -> [N] strings) -> (normalised [B], `to_original`).

    `to_original(starts, ends)` takes int64 RaggedTensors [B, (tokens)] of byte offsets into the
    normalised texts and returns the byte offsets into `texts` of the first and past the last
    original unit a token came from. A zero-length token gets a zero-length span.
    """
    # regex_split stops at a NUL byte: swap NULs for \x01, as long and, like NUL, a control character.
    texts = tf.strings.regex_replace(texts, "\\x00", "\x01")
    units, unit_starts, unit_ends = tf_text.regex_split_with_offsets(texts, _UNIT, _UNIT)
    # A text has few distinct units: normalising each distinct one once is several times faster.
    distinct, index = tf.unique(units.flat_values)
    pieces = tf.gather(normalize(distinct), index)
    normalized = tf.strings.reduce_join(units.with_flat_values(pieces), axis=1)
    # Byte end of each normalised unit in the concatenation of all rows (non-decreasing: a unit
    # normalised away has length 0), and where each row starts in it.
    piece_ends = tf.cumsum(tf.cast(tf.strings.length(pieces), tf.int64))
    row_starts = tf.gather(tf.concat([[0], piece_ends], 0), units.row_splits[:-1])
    text_lengths = tf.cast(tf.strings.length(texts), tf.int64)

    def to_original(starts, ends):
        rows = starts.value_rowids()
        base = tf.gather(row_starts, rows)
        last_unit = tf.gather(units.row_splits[1:], rows) - 1
        # The unit holding byte `start`, and the unit holding byte `end - 1`.
        first = tf.searchsorted(piece_ends, base + starts.flat_values, side="right", out_type=tf.int64)
        last = tf.searchsorted(piece_ends, base + ends.flat_values, side="left", out_type=tf.int64)
        at_text_end = first > last_unit
        begin = tf.where(at_text_end, tf.gather(text_lengths, rows), _gather_or_zero(unit_starts.flat_values, first))
        end = tf.where(
            ends.flat_values > starts.flat_values, _gather_or_zero(unit_ends.flat_values, last), begin
        )
        return starts.with_flat_values(begin), ends.with_flat_values(end)

    return normalized, to_original


def _gather_or_zero(values, indices):
    """values[indices], 0 where an index is past the end (those results are discarded by the caller)."""
    padded = tf.concat([values, tf.zeros([1], values.dtype)], 0)
    return tf.gather(padded, tf.minimum(indices, tf.size(values, out_type=indices.dtype)))
