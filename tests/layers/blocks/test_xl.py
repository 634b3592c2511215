import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.blocks.xl import TransformerXL, TransformerXLBlock, segment_matrix, xl_attention_masks
from tests.layers import relative_reference as ref
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)
B, T, M, D, N, H, INNER = 2, 3, 2, 8, 2, 4, 12
STACK = dict(num_layers=2, hidden_size=D, num_attention_heads=N, head_size=H, inner_size=INNER)
BLOCK = dict(hidden_size=D, num_attention_heads=N, head_size=H, inner_size=INNER)


def _normal(*shape):
    return rng.normal(size=shape).astype("float32")


def _outputs(stack, x, **kwargs):
    return keras.tree.map_structure(np.asarray, stack(x, **kwargs))


# ---- masks and segments -------------------------------------------------------------------------


@pytest.mark.parametrize("causal,same_length", [(False, False), (True, False), (True, True)])
def test_attention_masks_match_explicit_rules(causal, same_length):
    padding = np.array([[1, 1, 0], [1, 1, 1]], "float32")
    permutation = rng.random((B, T, T)) > 0.4
    content, query = xl_attention_masks(T, M, padding, permutation, causal=causal, same_length=same_length)
    content, query = np.broadcast_to(content, (B, T, M + T)), np.broadcast_to(query, (B, T, M + T))
    for b in range(B):
        for i in range(T):
            for j in range(M + T):
                current = j - M  # index among the current tokens, < 0 for memory
                allowed = current < 0 or (padding[b, current] == 1 and permutation[b, i, current])
                allowed = allowed and (not causal or j <= i + M) and (not same_length or j >= i)
                assert query[b, i, j] == allowed
                assert content[b, i, j] == (allowed or j == i + M)


def test_memory_mask_hides_exactly_the_masked_memory_positions():
    memory_mask = np.array([[0, 1], [1, 0]], "float32")
    padding = np.array([[1, 1, 0], [1, 1, 1]], "float32")
    content, query = xl_attention_masks(T, M, padding, causal=True, memory_mask=memory_mask)
    content, query = np.broadcast_to(content, (B, T, M + T)), np.broadcast_to(query, (B, T, M + T))
    for b in range(B):
        for i in range(T):
            for j in range(M + T):
                visible = memory_mask[b, j] == 1 if j < M else padding[b, j - M] == 1
                allowed = visible and j <= i + M
                assert query[b, i, j] == allowed
                assert content[b, i, j] == (allowed or j == i + M)


def test_no_masks_gives_none():
    assert xl_attention_masks(T, M) == (None, None)


def test_segment_matrix_marks_different_segments_memory_is_segment_zero():
    ids = np.array([[0, 1, 1], [1, 0, 1]], "int32")
    got = np.asarray(segment_matrix(ids, M))
    key_ids = np.concatenate([np.zeros((B, M), "int32"), ids], 1)
    for b in range(B):
        for i in range(T):
            for j in range(M + T):
                assert got[b, i, j] == (ids[b, i] != key_ids[b, j])


# ---- block --------------------------------------------------------------------------------------


def _block_reference(block, x, encoding, state, mask, biases):
    weights = ref.relative_weights(block.attention)
    attended, _ = ref.relative_attention(x, x, encoding, weights, biases, state, mask=mask)

    def norm(layer, y):
        return ref.layer_norm(y, np.asarray(layer.gamma), np.asarray(layer.beta), block.norm_epsilon)

    y = norm(block._attention_norm, x + attended)
    inner = np.maximum(y @ np.asarray(block._inner_dense.kernel) + np.asarray(block._inner_dense.bias), 0.0)
    output = inner @ np.asarray(block._output_dense.kernel) + np.asarray(block._output_dense.bias)
    return norm(block._output_norm, y + output)


def test_block_matches_numpy_reference():
    x, state, encoding = _normal(B, T, D), _normal(B, M, D), _normal(B, M + 2 * T, D)
    mask = rng.random((B, T, M + T)) > 0.3
    mask[..., -1] = True
    u, v = _normal(N, H), _normal(N, H)
    block = TransformerXLBlock(**BLOCK)
    got = block(
        x, encoding, content_attention_bias=u, positional_attention_bias=v, state=state, content_attention_mask=mask
    )
    want = _block_reference(block, x, encoding, state, mask, (u, v))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_two_stream_block_content_equals_one_stream_and_query_ignores_own_token():
    x, state, encoding, query_stream = _normal(B, T, D), _normal(B, M, D), _normal(B, M + 2 * T, D), _normal(B, T, D)
    one = TransformerXLBlock(**BLOCK)
    two = TransformerXLBlock(**BLOCK, two_stream=True)
    want = one(x, encoding, state=state)
    content, query = two(x, encoding, state=state, query_stream=query_stream)
    two.set_weights(one.get_weights())
    content, query = two(x, encoding, state=state, query_stream=query_stream)
    np.testing.assert_allclose(np.asarray(content), np.asarray(want), atol=1e-5)
    perturbed = x.copy()
    perturbed[:, 1] += 5.0
    content2, query2 = two(perturbed, encoding, state=state, query_stream=query_stream)
    np.testing.assert_allclose(np.asarray(query2)[:, 1], np.asarray(query)[:, 1], atol=1e-5)
    assert not np.allclose(np.asarray(content2)[:, 1], np.asarray(content)[:, 1], atol=1e-3)


def test_block_contract(tmp_path):
    # The two-stream attention has its own contract test; here the block around it.
    check_layer(
        TransformerXLBlock,
        dict(**BLOCK, dropout_rate=0.1, attention_dropout_rate=0.1, inner_dropout=0.1, inner_activation="gelu"),
        args=[_normal(B, T, D), _normal(B, M + 2 * T, D)],
        kwargs=dict(state=_normal(B, M, D), content_attention_mask=np.ones((B, T, M + T), "float32")),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        # q/k/v/out kernels (no biases), encoding kernel, attention norm 2, inner and output dense 4, output norm 2
        expected_trainable=13,
        expected_non_trainable=0,
    )


# ---- stack --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [dict(attention_type="uni"), dict(attention_type="bi", bi_data=True, clamp_len=2, tie_attention_biases=False)],
)
def test_recurrence_equals_running_the_concatenation(options):
    first, second = 3, 2
    stack = TransformerXL(**STACK, mem_len=first, **options)
    x = _normal(B, first + second, D)
    ids = np.concatenate([np.zeros((B, first), "int32"), rng.integers(0, 2, (B, second), dtype="int32")], 1)
    # Equivalent mask for the whole: the first segment sees only itself, the second sees everything
    # before it (causal) or everything (bidirectional).
    whole_mask = np.ones((B, first + second, first + second), "float32")
    whole_mask[:, :first, first:] = 0.0
    whole = _outputs(stack, x, segment_ids=ids, permutation_mask=whole_mask)
    part1 = _outputs(stack, x[:, :first], segment_ids=ids[:, :first])
    part2 = _outputs(stack, x[:, first:], segment_ids=ids[:, first:], memories=part1["new_memories"])
    np.testing.assert_allclose(part1["sequence_output"], whole["sequence_output"][:, :first], atol=1e-5)
    np.testing.assert_allclose(part2["sequence_output"], whole["sequence_output"][:, first:], atol=1e-5)


@pytest.mark.parametrize("same_length", [False, True])
def test_same_length_limits_how_far_back_queries_see(same_length):
    stack = TransformerXL(**{**STACK, "num_layers": 1}, attention_type="uni", same_length=same_length)
    x, memories = _normal(B, T, D), _normal(B, 1, M, D)
    before = _outputs(stack, x, memories=memories)["sequence_output"]
    memories[:, :, 0] += 5.0  # the oldest memory slot: within M keys back only for query 0
    after = _outputs(stack, x, memories=memories)["sequence_output"]
    changed = [not np.allclose(after[:, i], before[:, i], atol=1e-5) for i in range(T)]
    assert changed == ([True, False, False] if same_length else [True] * T)


def test_new_memories_are_block_inputs_with_reuse_len():
    stack = TransformerXL(**STACK, mem_len=3, reuse_len=2)
    x, memories = _normal(B, T, D), _normal(B, 2, M, D)
    out = _outputs(stack, x, memories=memories)
    inputs = [x, out["encoder_outputs"][0]]
    for layer in range(2):
        want = np.concatenate([memories[:, layer], inputs[layer][:, :2]], 1)[:, -3:]
        np.testing.assert_allclose(out["new_memories"][:, layer], want, atol=1e-6)
    np.testing.assert_allclose(out["sequence_output"], out["encoder_outputs"][-1])


@pytest.mark.parametrize("attention_type", ["bi", "uni"])
def test_masked_memory_equals_memory_without_those_positions(attention_type):
    stack = TransformerXL(**STACK, mem_len=3, attention_type=attention_type)
    x, memories = _normal(B, T, D), _normal(B, 2, 3, D)
    hidden = np.array([[0, 0, 1], [0, 0, 0]], "float32")  # row 0 keeps its newest slot, row 1 none
    got = _outputs(stack, x, memories=memories, memory_mask=hidden)["sequence_output"]
    # Relative positions: dropping the oldest memory slots leaves every remaining distance unchanged.
    newest_only = _outputs(stack, x[:1], memories=memories[:1, :, 2:])["sequence_output"]
    no_memory = _outputs(stack, x[1:])["sequence_output"]
    np.testing.assert_allclose(got[:1], newest_only, atol=1e-5)
    np.testing.assert_allclose(got[1:], no_memory, atol=1e-5)


def test_new_memory_mask_follows_the_memory_and_the_padding():
    stack = TransformerXL(**STACK, mem_len=4, reuse_len=2)
    memory_mask, padding = np.array([[1, 0, 1], [0, 0, 1]], "float32"), np.array([[1, 1, 1], [1, 0, 0]], "float32")
    out = _outputs(stack, _normal(B, T, D), padding_mask=padding, memories=_normal(B, 2, 3, D), memory_mask=memory_mask)
    # The last 4 of (old memory's 3 + the first reuse_len=2 current positions), as for the memories.
    want = np.concatenate([memory_mask, padding[:, :2]], 1)[:, -4:]
    np.testing.assert_array_equal(out["new_memory_mask"], want.astype(bool))
    assert out["new_memories"].shape == (B, 2, 4, D)
    assert "new_memory_mask" not in _outputs(stack, _normal(B, T, D), memories=_normal(B, 2, 3, D))


def test_untied_biases_equal_to_the_tied_ones_give_the_same_output():
    tied, untied = TransformerXL(**STACK), TransformerXL(**STACK, tie_attention_biases=False)
    x, ids = _normal(B, T, D), np.array([[0, 1, 1], [1, 1, 0]], "int32")
    tied(x, segment_ids=ids), untied(x, segment_ids=ids)
    for mine, theirs in zip(untied.blocks, tied.blocks):
        mine.set_weights(theirs.get_weights())
    for name in ("content_attention_bias", "positional_attention_bias", "segment_attention_bias"):
        getattr(untied, name).assign(np.stack([np.asarray(getattr(tied, name))] * 2))
    untied.segment_encoding.assign(np.asarray(tied.segment_encoding))
    want = _outputs(tied, x, segment_ids=ids)["sequence_output"]
    np.testing.assert_allclose(_outputs(untied, x, segment_ids=ids)["sequence_output"], want, atol=1e-5)


def test_two_stream_query_output_never_depends_on_own_token():
    stack = TransformerXL(**STACK, two_stream=True)
    x, query_stream = _normal(B, T, D), np.broadcast_to(_normal(1, 1, D), (B, T, D)).copy()
    rank = np.argsort(rng.permutation(T))  # factorisation order: position t comes rank[t]-th
    permutation = np.broadcast_to(rank[None, :] < rank[:, None], (B, T, T)).astype("float32")
    kwargs = dict(permutation_mask=permutation, query_stream=query_stream)
    before = _outputs(stack, x, **kwargs)
    for position in range(T):
        perturbed = x.copy()
        perturbed[:, position] += 5.0
        after = _outputs(stack, perturbed, **kwargs)
        np.testing.assert_allclose(after["query_output"][:, position], before["query_output"][:, position], atol=1e-5)
        assert not np.allclose(after["sequence_output"][:, position], before["sequence_output"][:, position], atol=1e-3)


def test_stack_contract(tmp_path):
    padding = np.ones((B, T), "float32")
    padding[0, -1] = 0.0
    check_layer(
        TransformerXL,
        dict(
            **{**STACK, "num_layers": 1},
            mem_len=3,
            reuse_len=2,
            attention_type="uni",
            same_length=True,
            tie_attention_biases=False,
            dropout_rate=0.1,
        ),
        args=[_normal(B, T, D)],
        kwargs=dict(
            padding_mask=padding, segment_ids=np.array([[0, 0, 1], [0, 1, 1]], "int32"), memories=_normal(B, 1, M, D)
        ),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D), (B, 1, 3, D), (B, T, D)],
        expected_trainable=17,  # content/positional/segment biases, segment encoding, one block (13)
        expected_non_trainable=0,
    )


def test_bad_arguments_raise_nlpkit_error():
    x = _normal(B, T, D)
    with pytest.raises(NlpkitError, match="attention_type"):
        TransformerXL(**STACK, attention_type="causal")
    with pytest.raises(NlpkitError, match="query_stream"):
        TransformerXL(**STACK, two_stream=True)(x)
    with pytest.raises(NlpkitError, match="memories"):
        TransformerXL(**STACK)(x, memories=_normal(B, 3, M, D))
    with pytest.raises(NlpkitError, match="memory_mask given without memories"):
        TransformerXL(**STACK)(x, memory_mask=np.ones((B, M), "float32"))
    with pytest.raises(NlpkitError, match="one-stream"):
        TransformerXLBlock(**BLOCK)(x, _normal(B, 2 * T, D), query_stream=x)
