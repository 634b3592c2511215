import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.relative_position import RelativePositionEncoding
from tests.layers import relative_reference as ref
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)


def _streams(batch, query_length, key_length, width=6):
    query = rng.normal(size=(batch, query_length, width)).astype("float32")
    key = rng.normal(size=(batch, key_length, width)).astype("float32")
    return query, key


def test_forward_distances_match_closed_form():
    query, key = _streams(2, 3, 5)
    got = np.asarray(RelativePositionEncoding(8)(query, key))
    distances = [5, 4, 3, 2, 1, 0, -1, -2]  # S down to -T+1
    np.testing.assert_allclose(got, np.broadcast_to(ref.sinusoid(distances, 8), (2, 8, 8)), atol=1e-5)


def test_default_key_is_the_query():
    query, _ = _streams(1, 4, 4)
    got = np.asarray(RelativePositionEncoding(4)(query))
    np.testing.assert_allclose(got[0], ref.sinusoid(np.arange(4, -4, -1), 4), atol=1e-5)


def test_clamp_len_limits_distances():
    query, key = _streams(1, 4, 6)
    got = np.asarray(RelativePositionEncoding(8, clamp_len=2)(query, key))
    np.testing.assert_allclose(got[0], ref.sinusoid(np.clip(np.arange(6, -4, -1), -2, 2), 8), atol=1e-5)
    assert np.allclose(got[0, 0], got[0, 4]) and not np.allclose(got[0, 4], got[0, 5])  # 6 and 2 share; 1 differs


def test_bidirectional_reverses_second_half_of_batch():
    query, key = _streams(3, 2, 3)
    got = np.asarray(RelativePositionEncoding(4, bidirectional=True)(query, key))
    forward = np.arange(3, -2, -1)
    for example, sign in enumerate([1, 1, -1]):  # ceil(3/2) forward, the rest backward
        np.testing.assert_allclose(got[example], ref.sinusoid(sign * forward, 4), atol=1e-5)


def test_odd_hidden_size_is_rejected():
    with pytest.raises(NlpkitError, match="hidden_size"):
        RelativePositionEncoding(5)


def test_contract(tmp_path):
    query, key = _streams(2, 3, 4)
    check_layer(
        RelativePositionEncoding,
        dict(hidden_size=6, clamp_len=3, bidirectional=True),
        args=[query, key],
        tmp_path=tmp_path,
        expected_shapes=[(2, 7, 6)],
        expected_trainable=0,
        expected_non_trainable=0,
    )
