import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.multi_channel import MultiChannelAttention, VotingAttention
from tests.layers import reference
from tests.layers.harness import check_layer
from tests.layers.properties import assert_causal

rng = np.random.default_rng(0)
B, C, T, S, D, N, H = 2, 3, 5, 4, 8, 2, 4


def _inputs():
    query = rng.normal(size=(B, T, D)).astype("float32")
    contexts = rng.normal(size=(B, C, S, D)).astype("float32")
    doc_mask = np.array([[1, 1, 0], [1, 1, 1]], "float32")  # the third context of row 0 is padding
    key_mask = rng.random((B, C, T, S)) > 0.3
    key_mask[1, 0, 2] = False  # one fully masked query row in one context
    return query, contexts, doc_mask, key_mask


def _voting_reference(layer, contexts, doc_mask):
    """NumPy: CLS queries/keys per context; each real context collects q_x . k_y from the other real ones."""
    cls = contexts[:, :, 0, :]
    q = reference.dense(cls, np.asarray(layer.query_dense.kernel), np.asarray(layer.query_dense.bias))
    k = reference.dense(cls, np.asarray(layer.key_dense.kernel), np.asarray(layer.key_dense.bias))
    votes = np.einsum("bxnh,bynh->bxy", q, k)
    others = doc_mask[:, None, :] * (1.0 - np.eye(contexts.shape[1]))
    return reference.softmax((votes * others).sum(-1), doc_mask.astype(bool))


def _multi_channel_reference(layer, query, contexts, weights, key_mask):
    """NumPy: per-context attention, contexts merged with weights `[B, N, T, C]`, output projection."""
    wq, bq, wk, bk, wv, bv, wo, bo = reference.mha_weights(layer)
    q = reference.dense(query, wq, bq)
    k, v = reference.dense(contexts, wk, bk), reference.dense(contexts, wv, bv)
    probs = reference.softmax(np.einsum("btnh,bcsnh->bcnts", q, k) / np.sqrt(H), key_mask[:, :, None])
    per_context = np.einsum("bcnts,bcsnh->bctnh", probs, v)
    merged = np.einsum("bntc,bctnh->btnh", weights, per_context)
    return np.einsum("btnh,nhd->btd", merged, wo) + bo, probs


def test_voting_contract(tmp_path):
    _, contexts, doc_mask, _ = _inputs()
    check_layer(
        VotingAttention,
        dict(num_heads=N, head_size=H, kernel_initializer="he_normal", bias_regularizer="l2"),
        args=[contexts, doc_mask],
        tmp_path=tmp_path,
        expected_shapes=[(B, C)],
        expected_trainable=4,
        expected_non_trainable=0,
        float32_outputs=(0,),  # documented: float32 probabilities
    )


def test_multi_channel_contract(tmp_path):
    query, contexts, doc_mask, key_mask = _inputs()
    check_layer(
        MultiChannelAttention,
        dict(num_heads=N, key_dim=H, value_dim=3, dropout=0.1),
        args=[query, contexts],
        kwargs=dict(
            context_attention_weights=doc_mask / doc_mask.sum(1, keepdims=True),
            attention_mask=key_mask.astype("float32"),
        ),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        expected_trainable=8,
        expected_non_trainable=0,
    )


def test_voting_matches_numpy_reference_and_masked_contexts_get_zero():
    _, contexts, doc_mask, _ = _inputs()
    layer = VotingAttention(num_heads=N, head_size=H)
    probs = np.asarray(layer(contexts, doc_mask))
    np.testing.assert_allclose(probs, _voting_reference(layer, contexts, doc_mask), atol=1e-5)
    assert probs[0, 2] == 0.0
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("per_head_weights", [False, True])
def test_multi_channel_matches_numpy_reference(per_head_weights):
    query, contexts, _, key_mask = _inputs()
    weights = rng.random((B, N, T, C)).astype("float32") if per_head_weights else rng.random((B, C)).astype("float32")
    layer = MultiChannelAttention(num_heads=N, key_dim=H)
    out, probs = layer(
        query, contexts, context_attention_weights=weights, attention_mask=key_mask, return_attention_scores=True
    )
    full_weights = weights if per_head_weights else np.broadcast_to(weights[:, None, None, :], (B, N, T, C))
    want_out, want_probs = _multi_channel_reference(layer, query, contexts, full_weights, key_mask)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)


def test_padding_invariance_masked_keys_and_masked_contexts():
    query, contexts, doc_mask, _ = _inputs()
    # The last key of every context is padding.
    key_mask = np.broadcast_to((np.arange(S) < 3)[None, None, None, :], (B, C, T, S))
    voting, layer = VotingAttention(num_heads=N, head_size=H), MultiChannelAttention(num_heads=N, key_dim=H)

    def forward(ctx):
        weights = voting(ctx, doc_mask)
        out, probs = layer(
            query, ctx, context_attention_weights=weights, attention_mask=key_mask, return_attention_scores=True
        )
        return np.asarray(out), np.asarray(probs)

    out, probs = forward(contexts)
    changed = contexts.copy()
    changed[:, :, 3] = rng.normal(size=changed[:, :, 3].shape) * 100  # padded keys
    changed[0, 2] = rng.normal(size=changed[0, 2].shape) * 100  # the padded context, CLS included
    np.testing.assert_allclose(forward(changed)[0], out, atol=1e-5)
    assert np.max(np.abs(probs[..., 3])) == 0.0


def test_causal_perturbing_later_tokens_leaves_earlier_outputs_unchanged():
    query, contexts, _, _ = _inputs()
    weights = np.full((B, C), 1.0 / C, "float32")
    causal = np.broadcast_to(np.tril(np.ones((T, S), bool)), (B, C, T, S))  # query t sees context tokens <= t
    layer = MultiChannelAttention(num_heads=N, key_dim=H)

    def forward(ctx):
        return layer(query, ctx, context_attention_weights=weights, attention_mask=causal)

    assert_causal(forward, contexts, first_changed=2, axis=2)


def test_rejections():
    query, contexts, _, _ = _inputs()
    with pytest.raises(NlpkitError):
        MultiChannelAttention(num_heads=N, key_dim=H)(query, contexts)
    with pytest.raises(NlpkitError):
        MultiChannelAttention(num_heads=N, key_dim=H, attention_axes=(2,))
