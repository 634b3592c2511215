import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import make_attention
from nlpkit.layers.attention.reuse import ReuseMultiHeadAttention
from tests.layers import reference
from tests.layers.attention import reuse_reference
from tests.layers.harness import check_layer
from tests.layers.model_garden_config import assert_config_holds_arguments
from tests.layers.properties import assert_causal, attention_inputs

rng = np.random.default_rng(0)
B, T, S, D, N, H = 2, 5, 6, 8, 3, 4


def _inputs():
    query, value, mask = attention_inputs(rng, B, T, S, D)
    previous = reference.softmax(rng.normal(size=(B, N, T, S)), mask[:, None]).astype("float32")
    return query, value, mask, previous


@pytest.mark.parametrize("reuse_attention, reused", [(0, 0), (2, 2), (-1, N)])
def test_matches_numpy_reference(reuse_attention, reused):
    query, value, mask, previous = _inputs()
    previous = previous + 0.01  # not masked: the layer must mask the reused heads itself
    layer = ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=reuse_attention)
    out, probs = layer(query, value, attention_mask=mask, reuse_attention_scores=previous, return_attention_scores=True)
    want_out, want_probs = reuse_reference.reuse_attention(layer, query, value, mask, previous, reused)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)
    assert (layer.query_dense is None) == (reused == N)


def test_no_reuse_equals_multi_head_attention_with_the_same_weights():
    query, value, mask, _ = _inputs()
    reuse = ReuseMultiHeadAttention(num_heads=N, key_dim=H)
    plain = MultiHeadAttention(num_heads=N, key_dim=H)
    reuse(query, value)
    plain(query, value)
    plain.set_weights(reuse.get_weights())
    want = np.asarray(plain(query, value, attention_mask=mask))
    np.testing.assert_allclose(np.asarray(reuse(query, value, attention_mask=mask)), want, atol=1e-6)


def test_padding_invariance_and_masked_keys_get_zero_probability():
    query, value, _, previous = _inputs()
    mask = np.broadcast_to((np.arange(S) < 4)[None, None, :], (B, T, S))
    layer = ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=1)
    out, probs = layer(query, value, attention_mask=mask, reuse_attention_scores=previous, return_attention_scores=True)
    changed = value.copy()
    changed[:, 4:] = rng.normal(size=changed[:, 4:].shape) * 100
    out2 = layer(query, changed, attention_mask=mask, reuse_attention_scores=previous)
    np.testing.assert_allclose(np.asarray(out2), np.asarray(out), atol=1e-5)
    assert np.max(np.abs(np.asarray(probs)[..., 4:])) == 0.0


def test_causal_perturbing_later_tokens_leaves_earlier_outputs_unchanged():
    x = rng.normal(size=(B, T, D)).astype("float32")
    causal = np.tril(np.ones((T, T), bool))[None]
    first = ReuseMultiHeadAttention(num_heads=N, key_dim=H)
    second = ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=2)

    def forward(inputs):
        hidden, scores = first(inputs, inputs, attention_mask=causal, return_attention_scores=True)
        return second(hidden, hidden, attention_mask=causal, reuse_attention_scores=scores)

    assert_causal(forward, x, first_changed=3)


def test_registered_as_reuse():
    layer = make_attention("reuse", num_heads=N, key_dim=H, reuse_attention=1)
    assert isinstance(layer, ReuseMultiHeadAttention) and layer.reuse_attention == 1


def test_rejections():
    query, value, _, _ = _inputs()
    with pytest.raises(NlpkitError):
        ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=N + 1)
    with pytest.raises(NlpkitError):
        ReuseMultiHeadAttention(num_heads=N, key_dim=H, use_gate=True)
    with pytest.raises(NlpkitError):
        ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=1)(query, value)
    with pytest.raises(NlpkitError, match="use_relative_pe"):
        grid = rng.normal(size=(B, 2, 3, D)).astype("float32")
        ReuseMultiHeadAttention(num_heads=N, key_dim=H, use_relative_pe=True, attention_axes=(1, 2))(grid, grid)


def _relative_pe_layer(reuse_attention, pe_max_seq_length):
    layer = ReuseMultiHeadAttention(
        num_heads=N,
        key_dim=H,
        reuse_attention=reuse_attention,
        use_relative_pe=True,
        pe_max_seq_length=pe_max_seq_length,
    )
    layer.build((B, T, D), (B, S, D))
    if layer.relative_position_embeddings is not None:
        # Well above the logits' spread, so a wrong bias (sign, offset, clipping) shows.
        table = rng.normal(size=layer.relative_position_embeddings.shape) * 3.0
        layer.relative_position_embeddings.assign(table.astype("float32"))
    return layer


@pytest.mark.parametrize("reuse_attention, reused", [(0, 0), (2, 2), (-1, N)])
@pytest.mark.parametrize("pe_max_seq_length", [3, 512])  # 3: distances beyond +-2 are clipped
def test_relative_position_bias_matches_numpy_reference(reuse_attention, reused, pe_max_seq_length):
    query, value, mask, previous = _inputs()
    layer = _relative_pe_layer(reuse_attention, pe_max_seq_length)
    out, probs = layer(query, value, attention_mask=mask, reuse_attention_scores=previous, return_attention_scores=True)
    want_out, want_probs = reuse_reference.reuse_attention(layer, query, value, mask, previous, reused)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)
    fresh = N - reused
    if fresh:
        assert tuple(layer.relative_position_embeddings.shape) == (1, fresh, 2 * pe_max_seq_length - 1)
    else:
        assert layer.relative_position_embeddings is None  # Model Garden: no table without a fresh head


def test_relative_position_bias_reference_clips_as_model_garden_indexes():
    # Model Garden gathers index clip(s - t + L - 1, 0, 2L - 2): check the reference against it.
    table = np.arange(5.0).reshape(1, 1, 5)  # L = 3
    bias = reuse_reference.relative_position_bias(table, 4, 6)[0]
    indices = np.clip(np.arange(6)[None, :] - np.arange(4)[:, None] + 2, 0, 4)
    np.testing.assert_array_equal(bias, indices.astype(float))


@pytest.mark.parametrize("reuse_attention, reused", [(1, 1), (-1, N)])
def test_attention_over_two_axes_equals_attention_over_the_flattened_axes(reuse_attention, reused):
    x_len, y_len = 2, 3
    grid = rng.normal(size=(B, x_len, y_len, D)).astype("float32")
    mask = rng.random((B, x_len, y_len, x_len, y_len)) > 0.3
    previous = rng.random((B, N, x_len, y_len, x_len, y_len)).astype("float32")
    layer = ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=reuse_attention, attention_axes=(1, 2))
    out, probs = layer(grid, grid, attention_mask=mask, reuse_attention_scores=previous, return_attention_scores=True)
    length = x_len * y_len
    flat = grid.reshape(B, length, D)
    want_out, want_probs = reuse_reference.reuse_attention(
        layer, flat, flat, mask.reshape(B, length, length), previous.reshape(B, N, length, length), reused
    )
    np.testing.assert_allclose(np.asarray(probs).reshape(B, N, length, length), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out).reshape(B, length, D), want_out, atol=1e-5)


def test_attention_over_an_inner_axis_equals_rank_3_attention_per_slice():
    # [B, A, T, D] attended over axis 2: scores [B, A, N, T, S], heads reused along axis 2.
    slices = 2
    query = rng.normal(size=(B, slices, T, D)).astype("float32")
    value = rng.normal(size=(B, slices, S, D)).astype("float32")
    mask = rng.random((B, slices, T, S)) > 0.3
    previous = rng.random((B, slices, N, T, S)).astype("float32")
    layer = ReuseMultiHeadAttention(num_heads=N, key_dim=H, reuse_attention=2, attention_axes=(2,))
    out, probs = layer(query, value, attention_mask=mask, reuse_attention_scores=previous, return_attention_scores=True)
    for a in range(slices):
        want_out, want_probs = reuse_reference.reuse_attention(
            layer, query[:, a], value[:, a], mask[:, a], previous[:, a], 2
        )
        np.testing.assert_allclose(np.asarray(probs)[:, a], want_probs, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out)[:, a], want_out, atol=1e-5)


# Model Garden's ReuseMultiHeadAttention arguments (reuse_attention.py), every one given.
MODEL_GARDEN_ARGUMENTS = dict(
    num_heads=N,
    key_dim=H,
    value_dim=5,
    dropout=0.1,
    reuse_attention=1,
    use_relative_pe=True,
    pe_max_seq_length=16,
    use_bias=False,
    output_shape=None,
    attention_axes=None,
    kernel_initializer="glorot_uniform",
    bias_initializer="zeros",
    kernel_regularizer=None,
    bias_regularizer=None,
    activity_regularizer=None,
    kernel_constraint=None,
    bias_constraint=None,
)


def test_builds_from_model_garden_arguments_and_config_round_trips():
    query, value, mask, previous = _inputs()
    layer = ReuseMultiHeadAttention(**MODEL_GARDEN_ARGUMENTS)
    layer(query, value, attention_mask=mask, reuse_attention_scores=previous)
    # A built layer reports its default axes, (1,), for attention_axes=None.
    config = assert_config_holds_arguments(layer, MODEL_GARDEN_ARGUMENTS, unchecked=("attention_axes",))
    assert tuple(config["attention_axes"]) == (1,)
    assert tuple(layer.relative_position_embeddings.shape) == (1, N - 1, 31)


@pytest.mark.parametrize(
    "init, rank4",
    [
        (dict(reuse_attention=1, use_relative_pe=True, pe_max_seq_length=4), False),
        (dict(reuse_attention=2, attention_axes=(2,)), True),
    ],
    ids=["relative_pe", "attention_axes"],
)
def test_contract(tmp_path, init, rank4):
    if rank4:
        query = rng.normal(size=(B, 2, T, D)).astype("float32")
        value = rng.normal(size=(B, 2, S, D)).astype("float32")
        mask = (rng.random((B, 2, T, S)) > 0.3).astype("float32")
        previous = rng.random((B, 2, N, T, S)).astype("float32")
    else:
        query, value, mask, previous = _inputs()
        mask = mask.astype("float32")
    expected_scores = previous.shape
    check_layer(
        ReuseMultiHeadAttention,
        dict(num_heads=N, key_dim=H, **init),
        args=[query, value],
        kwargs=dict(attention_mask=mask, reuse_attention_scores=previous),
        static_kwargs=dict(return_attention_scores=True),
        tmp_path=tmp_path,
        expected_shapes=[query.shape, expected_scores],
        # query and key 2 each, value 2, output 2, and the relative position table
        expected_trainable=9 if init.get("use_relative_pe") else 8,
        expected_non_trainable=0,
    )
