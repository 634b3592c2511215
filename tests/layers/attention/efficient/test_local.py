"""LocalAttention = full attention with a banded mask, without a dense T x S matrix."""

import numpy as np
import pytest

from nlpkit.layers.attention.efficient import LocalAttention, TriangularMask
from tests.layers.attention.efficient.heads_reference import band_mask, full_attention, heads
from tests.layers.harness import check_layer

rng = np.random.default_rng(2)


@pytest.mark.parametrize("length_t, length_s, context", [(11, 11, 5), (11, 11, 4), (3, 3, 9), (9, 6, 3), (8, 8, 1)])
def test_local_equals_full_with_band_mask(length_t, length_s, context):
    q, k, v = heads(rng, t=length_t, s=length_s)
    out = LocalAttention(context)(q, k, v)
    want = full_attention(q, k, v, band_mask(length_t, length_s, context)[None])
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_local_honours_dense_triangular_and_length_masks(tmp_path):
    q, k, v = heads(rng, t=10, s=10)
    mask = rng.random((2, 10, 10)) > 0.4
    mask[1, 3] = False  # fully masked row
    band = band_mask(10, 10, 4)[None]
    out = check_layer(
        LocalAttention, dict(local_context=4), args=[q, k, v], kwargs=dict(attn_mask=mask.astype("float32")), tmp_path=tmp_path,
        expected_trainable=0,
        expected_non_trainable=0,
    )
    np.testing.assert_allclose(np.asarray(out), full_attention(q, k, v, band & mask), atol=1e-5)
    assert np.all(np.asarray(out)[1, 3] == 0.0)

    out = LocalAttention(4)(q, k, v, attn_mask=TriangularMask(10), key_lengths=np.array([10, 6]))
    keys = (np.arange(10)[None] < np.array([[10], [6]]))[:, None, :]
    np.testing.assert_allclose(np.asarray(out), full_attention(q, k, v, band & np.tril(np.ones((10, 10), bool)) & keys), atol=1e-5)
