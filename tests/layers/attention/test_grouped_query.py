import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.grouped_query import GroupedQueryAttention
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import make_attention
from tests.layers import reference
from tests.layers.harness import check_layer

rng = np.random.default_rng(18)
B, T, S, D, N, H = 2, 5, 4, 8, 4, 3


def _data():
    query = rng.normal(size=(B, T, D)).astype("float32")
    memory = rng.normal(size=(B, S, 6)).astype("float32")
    mask = (rng.random((B, T, S)) > 0.3).astype("float32")
    mask[1, 2] = 0.0  # one fully masked query row
    return query, memory, mask


def numpy_grouped_query(layer, query, value, mask):
    """NumPy GQA: each key/value head repeated for the N / G consecutive query heads of its group."""
    wq, bq, wk, bk, wv, bv, wo, bo = reference.mha_weights(layer)
    repeat = layer.num_heads // layer.num_kv_heads
    wk, bk, wv, bv = (np.repeat(w, repeat, axis=-2) for w in (wk, bk, wv, bv))
    return reference.multi_head_attention(query, value, wq, bq, wk, bk, wv, bv, wo, bo, mask=mask)


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_contract(tmp_path, num_kv_heads):
    query, memory, mask = _data()
    check_layer(
        GroupedQueryAttention,
        dict(num_heads=N, key_dim=H, num_kv_heads=num_kv_heads, value_dim=5, dropout=0.1, kernel_regularizer="l2"),
        args=[query, memory],
        kwargs=dict(attention_mask=mask),
        static_kwargs=dict(return_attention_scores=True),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D), (B, N, T, S)],
        expected_trainable=8,  # query, key, value, output: kernel and bias each
        expected_non_trainable=0,
    )


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_matches_numpy_multi_query_and_grouped_query(num_kv_heads):
    query, memory, mask = _data()
    layer = GroupedQueryAttention(N, H, num_kv_heads=num_kv_heads)
    out, scores = layer(query, memory, attention_mask=mask, return_attention_scores=True)
    assert tuple(layer.key_dense.kernel.shape) == (6, num_kv_heads, H)
    want, want_probs = numpy_grouped_query(layer, query, memory, mask)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), want_probs, atol=1e-6)


def test_as_many_kv_heads_as_heads_equals_multi_head_attention():
    query, memory, mask = _data()
    mha = MultiHeadAttention(N, H)
    want = np.asarray(mha(query, memory, attention_mask=mask))
    gqa = make_attention("grouped_query", num_heads=N, key_dim=H, num_kv_heads=N)
    gqa.build(query.shape, memory.shape)
    gqa.set_weights(mha.get_weights())
    np.testing.assert_allclose(np.asarray(gqa(query, memory, attention_mask=mask)), want, atol=1e-6)


def test_bad_arguments_raise_nlpkit_error():
    with pytest.raises(NlpkitError, match="num_kv_heads=3"):
        GroupedQueryAttention(N, H, num_kv_heads=3)
    with pytest.raises(NlpkitError, match="attention_axes"):
        GroupedQueryAttention(N, H, attention_axes=(1, 2))


def _block_diagonal(query_blocks, query_block, key_block, key_blocks):
    """NumPy `[T, S]` mask: query block l may attend key block l (every key when one key block)."""
    if key_blocks == 1:
        return np.ones((query_blocks * query_block, key_block), "float32")
    return np.kron(np.eye(query_blocks), np.ones((query_block, key_block))).astype("float32")


@pytest.mark.parametrize("tgt_block_size, key_blocks", [(3, 2), (6, 1)])
@pytest.mark.parametrize("padding_form", [False, True])
def test_block_sparse_equals_full_attention_with_block_diagonal_mask(tgt_block_size, key_blocks, padding_form):
    query = rng.normal(size=(B, 4, D)).astype("float32")
    memory = rng.normal(size=(B, 6, D)).astype("float32")
    if padding_form:
        mask = np.ones((B, 1, 6), "float32")
        mask[0, 0, 4:] = 0.0
    else:
        mask = (rng.random((B, 4, 6)) > 0.3).astype("float32")
    sparse = GroupedQueryAttention(N, H, num_kv_heads=2, src_block_size=2, tgt_block_size=tgt_block_size)
    out, scores = sparse(query, memory, attention_mask=mask, return_attention_scores=True)
    full = GroupedQueryAttention(N, H, num_kv_heads=2)
    full.build(query.shape, memory.shape)
    full.set_weights(sparse.get_weights())
    allowed = mask * _block_diagonal(2, 2, tgt_block_size, key_blocks)[None]
    want, want_probs = numpy_grouped_query(full, query, memory, allowed)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)
    assert tuple(scores.shape) == (B, N, 2, 2, tgt_block_size)
    # Block l's scores are the full probabilities of its queries over its own keys.
    blocks = want_probs.reshape(B, N, 2, 2, key_blocks, tgt_block_size)
    diagonal = np.stack([blocks[:, :, l, :, l if key_blocks > 1 else 0] for l in range(2)], axis=2)
    np.testing.assert_allclose(np.asarray(scores), diagonal, atol=1e-6)


def test_block_sparse_contract(tmp_path):
    query = rng.normal(size=(B, 4, D)).astype("float32")
    check_layer(
        GroupedQueryAttention,
        dict(num_heads=N, key_dim=H, src_block_size=2),
        args=[query, query],
        kwargs=dict(attention_mask=np.ones((B, 4, 4), "float32")),
        static_kwargs=dict(return_attention_scores=True),
        tmp_path=tmp_path,
        expected_shapes=[(B, 4, D), (B, N, 2, 2, 2)],
        expected_trainable=8,
        expected_non_trainable=0,
    )


def test_block_sizes_that_do_not_cut_the_sequence_raise_nlpkit_error():
    query = np.zeros((1, 5, D), "float32")
    with pytest.raises(NlpkitError, match="multiples of src_block_size=2"):
        GroupedQueryAttention(N, H, src_block_size=2)(query, query)
    with pytest.raises(NlpkitError, match="2 query blocks but 3 key blocks"):
        GroupedQueryAttention(N, H, src_block_size=2, tgt_block_size=2)(query[:, :4], np.zeros((1, 6, D), "float32"))
