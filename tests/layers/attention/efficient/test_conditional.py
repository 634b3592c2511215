import numpy as np

from nlpkit.layers.attention.efficient import ConditionalFullAttention, LinearAttention
from tests.layers.attention.efficient.heads_reference import elu_plus_one, full_attention, heads, linear_attention_quadratic
from tests.layers.harness import check_layer

rng = np.random.default_rng(3)


def test_full_below_limit_other_above(tmp_path):
    q, k, v = heads(rng, s=6)
    short = check_layer(
        ConditionalFullAttention, dict(other_attention="linear", length_limit=6), args=[q, k, v], tmp_path=tmp_path,
        expected_trainable=0,
        expected_non_trainable=0,
    )
    np.testing.assert_allclose(np.asarray(short), full_attention(q, k, v), atol=1e-5)
    long = ConditionalFullAttention(LinearAttention(), length_limit=5)(q, k, v)
    np.testing.assert_allclose(np.asarray(long), linear_attention_quadratic(elu_plus_one(q), elu_plus_one(k), v), atol=1e-5)


def test_masks_follow_the_chosen_attention():
    q, k, v = heads(rng)
    mask = np.tril(np.ones((2, 7, 7), bool))
    out = ConditionalFullAttention("linear", length_limit=100)(q, k, v, attn_mask=mask)
    np.testing.assert_allclose(np.asarray(out), full_attention(q, k, v, mask), atol=1e-5)
