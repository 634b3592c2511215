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


def numpy_mask_forms(matrix):
    """fast-transformers' BaseMask forms, computed in NumPy from a boolean matrix."""
    as_float = matrix.astype(np.float32)
    with np.errstate(divide="ignore"):
        additive = np.log(as_float)
    return {"float_matrix": as_float, "additive_matrix": additive, "additive_matrix_finite": (~matrix) * np.float32(-1e24)}


prefix_rows = np.arange(5)[None] < np.array([[3], [0], [5], [1]])
mask_cases = {
    "full-dense": (FullMask(prefix_rows), prefix_rows),
    "full-ones": (FullMask(N=3, M=4), np.ones((3, 4), bool)),
    "triangular": (TriangularMask(4), np.tril(np.ones((4, 4), bool))),
    "length": (LengthMask(np.array([2, 5, 0]), max_len=5), np.arange(5)[None] < np.array([[2], [5], [0]])),
}


@pytest.mark.parametrize("name", sorted(mask_cases))
def test_base_mask_forms_match_numpy(name):
    mask, matrix = mask_cases[name]
    for form, want in numpy_mask_forms(matrix).items():
        got = np.asarray(getattr(mask, form))
        assert got.dtype == np.float32, form
        np.testing.assert_array_equal(got, want, err_msg=form)
    np.testing.assert_array_equal(np.asarray(mask.lengths), matrix.sum(-1))
    assert mask.all_ones == bool(matrix.all())
    square = matrix.shape[-1] == matrix.shape[-2] and name != "length"
    assert mask.lower_triangular == (square and bool(np.all(matrix == np.tril(np.ones(matrix.shape, bool)))))


def test_lower_triangular_means_exactly_causal():
    # A mask with zeros above the diagonal but also below it is not the causal mask: causal
    # attentions must not accept it as one.
    assert not FullMask(np.eye(4, dtype=bool)).lower_triangular
    assert FullMask(np.broadcast_to(np.tril(np.ones((4, 4), bool)), (2, 4, 4))).lower_triangular
    assert not FullMask(np.tril(np.ones((4, 5), bool))).lower_triangular


def test_lengths_of_a_non_length_mask_raise():
    with pytest.raises(NlpkitError, match="not a length mask"):
        FullMask(np.array([[1, 0, 1]], bool)).lengths
