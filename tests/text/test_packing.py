"""BertPackInputs: [CLS] A [SEP] B [SEP] layout, truncation strategies and padding, worked by hand."""

import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.text.packing import BertPackInputs, pack_inputs, tf

CLS, SEP, PAD = 101, 102, 0


def pack(segments, seq_length, truncator):
    ragged = [tf.ragged.constant(rows, dtype=tf.int32) for rows in segments]
    out = pack_inputs(ragged, seq_length, cls_id=CLS, sep_id=SEP, pad_id=PAD, truncator=truncator)
    return {name: value.numpy().tolist() for name, value in out.items()}


def test_round_robin_takes_from_the_longer_segment():
    # Budget 8 - 3 = 5 tokens; A has 4, B has 6: turns give A,B,A,B,A -> A keeps 3, B keeps 2.
    out = pack([[[1, 2, 3, 4]], [[11, 12, 13, 14, 15, 16]]], 8, "round_robin")
    assert out["input_word_ids"] == [[CLS, 1, 2, 3, SEP, 11, 12, SEP]]
    assert out["input_type_ids"] == [[0, 0, 0, 0, 0, 1, 1, 1]]
    assert out["input_mask"] == [[1] * 8]


def test_waterfall_fills_the_first_segment_first():
    out = pack([[[1, 2, 3, 4]], [[11, 12, 13, 14, 15, 16]]], 8, "waterfall")
    assert out["input_word_ids"] == [[CLS, 1, 2, 3, 4, SEP, 11, SEP]]
    assert out["input_type_ids"] == [[0, 0, 0, 0, 0, 0, 1, 1]]


def test_short_rows_are_padded_and_masked():
    out = pack([[[5], [6, 7]], [[21, 22], []]], 8, "round_robin")
    assert out["input_word_ids"] == [[CLS, 5, SEP, 21, 22, SEP, PAD, PAD], [CLS, 6, 7, SEP, SEP, PAD, PAD, PAD]]
    assert out["input_mask"] == [[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
    assert out["input_type_ids"] == [[0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0]]


def test_three_segments_and_one_segment():
    out = pack([[[1, 2]], [[3]], [[4, 5, 6]]], 8, "round_robin")  # budget 4: A,B,C,A
    assert out["input_word_ids"] == [[CLS, 1, 2, SEP, 3, SEP, 4, SEP]]
    assert out["input_type_ids"] == [[0, 0, 0, 0, 1, 1, 2, 2]]
    single = pack([[list(range(1, 10))]], 5, "waterfall")
    assert single["input_word_ids"] == [[CLS, 1, 2, 3, SEP]]


@pytest.mark.parametrize("truncator", ["round_robin", "waterfall"])
def test_one_segment_matches_numpy_layout(truncator):
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(1000, 2000, size=n)) for n in (0, 1, 5, 6, 7, 20)]  # budget 6 at seq_length 8
    out = pack([rows], 8, truncator)
    for row, ids, mask, types in zip(rows, out["input_word_ids"], out["input_mask"], out["input_type_ids"]):
        kept = [CLS, *row[:6], SEP]
        assert ids == kept + [PAD] * (8 - len(kept))
        assert mask == [1] * len(kept) + [0] * (8 - len(kept))
        assert types == [0] * 8


@pytest.mark.parametrize("seq_length,segments", [(2, 1), (3, 2)])
def test_seq_length_too_small(seq_length, segments):
    with pytest.raises(NlpkitError, match="too small"):
        pack([[[1]]] * segments, seq_length, "round_robin")


def test_unknown_truncator():
    with pytest.raises(NlpkitError, match="unknown truncation"):
        BertPackInputs(8, CLS, SEP, truncator="middle")


def test_layer_in_tf_data_on_batched_ragged_input():
    layer = BertPackInputs.from_config(BertPackInputs(6, CLS, SEP, PAD, truncator="waterfall").get_config())
    rows = tf.ragged.constant([[1, 2, 3, 4, 5, 6], [7]], dtype=tf.int32)
    pairs = tf.ragged.constant([[8, 9], [10, 11, 12]], dtype=tf.int32)
    dataset = tf.data.Dataset.from_tensor_slices((rows, pairs)).batch(2).map(lambda a, b: layer([a, b]))
    batch = next(iter(dataset))
    np.testing.assert_array_equal(batch["input_word_ids"], [[CLS, 1, 2, 3, SEP, SEP], [CLS, 7, SEP, 10, 11, SEP]])
    np.testing.assert_array_equal(batch["input_type_ids"], [[0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 1, 1]])


def test_layer_unbatched_and_word_level_input():
    layer = BertPackInputs(5, CLS, SEP)
    assert layer(tf.constant([7, 8]))["input_word_ids"].numpy().tolist() == [CLS, 7, 8, SEP, PAD]
    words = tf.ragged.constant([[[1, 2], [3]], [[4]]], dtype=tf.int32)  # [B, (words), (pieces)]
    assert layer(words)["input_word_ids"].numpy().tolist() == [[CLS, 1, 2, 3, SEP], [CLS, 4, SEP, PAD, PAD]]
