import numpy as np
import pytest

from nlpkit.layers import MultiHeadAttention
from tests.layers import reference
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)


def _inputs(batch=2, t=5, s=7, d=16):
    query = rng.normal(size=(batch, t, d)).astype("float32")
    value = rng.normal(size=(batch, s, d)).astype("float32")
    mask = (rng.random((batch, t, s)) > 0.3).astype("float32")
    mask[0, 1] = 0.0  # one fully masked query row
    return query, value, mask


def test_contract(tmp_path):
    query, value, mask = _inputs()
    check_layer(
        MultiHeadAttention,
        dict(num_heads=2, key_dim=4, value_dim=3, dropout=0.1, use_bias=True),
        args=[query, value],
        kwargs=dict(attention_mask=mask),
        tmp_path=tmp_path,
        expected_shapes=[(2, 5, 16)],
        expected_trainable=8,
        expected_non_trainable=0,
    )


def test_matches_numpy_reference():
    query, value, mask = _inputs()
    layer = MultiHeadAttention(num_heads=3, key_dim=4)
    out, probs = layer(query, value, attention_mask=mask, return_attention_scores=True)
    want_out, want_probs = reference.multi_head_attention(query, value, *reference.mha_weights(layer), mask=mask)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)


def test_fully_masked_row_is_zero_attention_and_finite():
    query, value, mask = _inputs()
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    out, probs = layer(query, value, attention_mask=mask, return_attention_scores=True)
    assert np.all(np.asarray(probs)[0, :, 1] == 0.0)
    assert np.all(np.isfinite(np.asarray(out)))


def test_padding_invariance_and_masked_keys_get_zero_probability():
    query, value, _ = _inputs()
    padding = np.ones((2, 7), "float32")
    padding[:, 5:] = 0.0
    mask = np.broadcast_to(padding[:, None, :], (2, 5, 7)).copy()
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    out, probs = layer(query, value, attention_mask=mask, return_attention_scores=True)
    changed = value.copy()
    changed[:, 5:] = rng.normal(size=changed[:, 5:].shape) * 100
    out2 = layer(query, changed, attention_mask=mask)
    np.testing.assert_allclose(np.asarray(out2), np.asarray(out), atol=1e-5)
    assert np.max(np.asarray(probs)[..., 5:]) == 0.0


def test_causal_mask_prefix_unchanged():
    x = rng.normal(size=(1, 6, 8)).astype("float32")
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    out = np.asarray(layer(x, x, use_causal_mask=True))
    x2 = x.copy()
    x2[:, 4:] += 10.0
    out2 = np.asarray(layer(x2, x2, use_causal_mask=True))
    np.testing.assert_allclose(out2[:, :4], out[:, :4], atol=1e-5)
    assert not np.allclose(out2[:, 4:], out[:, 4:])


@pytest.mark.parametrize("with_scores", [True])
def test_seed_document_examples(with_scores):
    import keras

    layer = MultiHeadAttention(num_heads=2, key_dim=2)
    target = keras.Input(shape=[8, 16])
    source = keras.Input(shape=[4, 16])
    output, weights = layer(target, source, return_attention_scores=with_scores)
    assert tuple(output.shape) == (None, 8, 16)
    assert tuple(weights.shape) == (None, 2, 8, 4)

    layer = MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=(2, 3))
    x = keras.Input(shape=[5, 3, 4, 16])
    assert tuple(layer(x, x).shape) == (None, 5, 3, 4, 16)
