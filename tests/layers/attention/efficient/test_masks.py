import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient.masks import FullMask, LengthMask, TriangularMask, factorize_padding


def test_full_mask_flags_and_forms():
    assert FullMask(N=3, M=4).all_ones
    assert FullMask(N=3, M=4).attention_mask.shape == (1, 3, 4)
    tril = np.tril(np.ones((4, 4), bool))
    assert FullMask(tril).lower_triangular and not FullMask(tril).all_ones
    dense = np.ones((2, 3, 4), bool)
    dense[1, 0, 2] = False
    mask = FullMask(dense)
    assert not mask.all_ones and not mask.lower_triangular
    np.testing.assert_array_equal(np.asarray(mask.attention_mask), dense)


def test_triangular_mask_is_causal_form():
    mask = TriangularMask(5)
    assert mask.lower_triangular and not mask.all_ones
    np.testing.assert_array_equal(np.asarray(mask.attention_mask)[0], np.tril(np.ones((5, 5), bool)))
    assert TriangularMask(1).all_ones


def test_length_mask_matrix_and_lengths():
    mask = LengthMask(np.array([2, 4]), max_len=5)
    np.testing.assert_array_equal(np.asarray(mask.bool_matrix), np.arange(5)[None] < np.array([[2], [4]]))
    assert not mask.all_ones
    assert LengthMask(np.array([3, 3])).max_len == 3 and LengthMask(np.array([3, 3])).all_ones
    assert LengthMask(None, max_len=4).all_ones
    padding = np.array([[1, 0, 1], [1, 1, 1]], bool)
    np.testing.assert_array_equal(np.asarray(LengthMask.from_padding(padding).lengths), [2, 3])


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(NlpkitError, match="attn_mask must be"):
        FullMask(np.ones((2,)))
    with pytest.raises(NlpkitError, match="lengths must be"):
        LengthMask(np.ones((2, 3)), max_len=3)


def test_factorize_padding_accepts_padding_and_refuses_other_masks():
    query = np.array([[1, 1, 0], [1, 1, 1]], bool)
    keys = np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool)
    got_q, got_k = factorize_padding(query[:, :, None] & keys[:, None, :])
    np.testing.assert_array_equal(np.asarray(got_q), query)
    np.testing.assert_array_equal(np.asarray(got_k), keys)
    with pytest.raises(NlpkitError, match="only padding masks"):
        factorize_padding(np.tril(np.ones((1, 4, 4), bool)))
