import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.blocks.reuse import ReuseTransformer
from tests.layers import reference
from tests.layers.attention import reuse_reference
from tests.layers.blocks.block_reference import feedforward, layer_norm
from tests.layers.harness import check_layer
from tests.layers.model_garden_config import assert_config_holds_arguments
from tests.layers.properties import assert_causal

rng = np.random.default_rng(0)
B, T, D, N = 2, 5, 8, 2


def _inputs():
    x = rng.normal(size=(B, T, D)).astype("float32")
    padding = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    previous = reference.softmax(rng.normal(size=(B, N, T, T)), padding[:, None, None]).astype("float32")
    return x, padding, previous


def _block(reuse_attention, norm_first=False):
    return ReuseTransformer(N, 16, "relu", reuse_attention=reuse_attention, norm_first=norm_first)


def _reuse_block_reference(block, x, mask, previous, reused):
    """NumPy: the reuse attention reference, then residuals, norms and the feed-forward network."""
    x = np.asarray(x, np.float64)
    h = layer_norm(x, block.attention_layer_norm) if block.norm_first else x
    attention_out, probs = reuse_reference.reuse_attention(block.attention, h, h, mask, previous, reused)
    attended = x + attention_out
    if not block.norm_first:
        attended = layer_norm(attended, block.attention_layer_norm)
    ffn_in = layer_norm(attended, block.output_layer_norm) if block.norm_first else attended
    out = attended + feedforward(ffn_in, block.feedforward, "relu")
    return (out if block.norm_first else layer_norm(out, block.output_layer_norm)), probs


def test_contract(tmp_path):
    # All heads reused: the attention has no query/key projections at all.
    x, padding, previous = _inputs()
    check_layer(
        ReuseTransformer,
        dict(
            num_attention_heads=N,
            inner_dim=16,
            inner_activation="relu",
            reuse_attention=-1,
            norm_first=True,
            output_dropout=0.1,
            attention_dropout=0.1,
            inner_dropout=0.1,
        ),
        args=[x],
        kwargs=dict(attention_mask=padding.astype("float32"), reuse_attention_scores=previous),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D), (B, N, T, T)],
        expected_trainable=12,  # reused scores: no q/k; value 2, out 2, feed-forward 4, norms 4
        expected_non_trainable=0,
    )


@pytest.mark.parametrize("reuse_attention, reused, norm_first", [(0, 0, False), (1, 1, True), (-1, N, False)])
def test_matches_numpy_reference(reuse_attention, reused, norm_first):
    x, padding, previous = _inputs()
    mask = np.broadcast_to(padding[:, None, :], (B, T, T))
    block = _block(reuse_attention, norm_first)
    out, probs = block(x, attention_mask=padding, reuse_attention_scores=previous)
    want_out, want_probs = _reuse_block_reference(block, x, mask, previous, reused)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)


def test_stacked_blocks_pass_scores_up_and_full_reuse_keeps_them():
    x, padding, _ = _inputs()
    lower, upper = _block(0), _block(-1)
    hidden, scores = lower(x, attention_mask=padding)
    _, upper_scores = upper(hidden, attention_mask=padding, reuse_attention_scores=scores)
    np.testing.assert_allclose(np.asarray(upper_scores), np.asarray(scores), atol=1e-7)


def test_padding_invariance_and_masked_keys_get_zero_probability():
    x, padding, previous = _inputs()
    block = _block(1)
    out, probs = block(x, attention_mask=padding, reuse_attention_scores=previous)
    changed = x.copy()
    changed[1, 3:] = rng.normal(size=changed[1, 3:].shape) * 100
    out2, _ = block(changed, attention_mask=padding, reuse_attention_scores=previous)
    np.testing.assert_allclose(np.asarray(out2)[1, :3], np.asarray(out)[1, :3], atol=1e-5)
    assert np.max(np.abs(np.asarray(probs)[1, ..., 3:])) == 0.0


def test_causal_perturbing_later_tokens_leaves_earlier_outputs_unchanged():
    x, _, _ = _inputs()
    causal = np.tril(np.ones((T, T), bool))[None]
    lower, upper = _block(0), _block(1)

    def forward(inputs):
        hidden, scores = lower(inputs, attention_mask=causal)
        return upper(hidden, attention_mask=causal, reuse_attention_scores=scores)[0]

    assert_causal(forward, x, first_changed=3)


def test_output_range_equals_the_first_rows_of_the_full_output():
    x, padding, previous = _inputs()
    block = _block(1)
    full, full_scores = block(x, attention_mask=padding, reuse_attention_scores=previous)
    first, first_scores = block(x, attention_mask=padding, reuse_attention_scores=previous, output_range=2)
    np.testing.assert_allclose(np.asarray(first), np.asarray(full)[:, :2], atol=1e-5)
    np.testing.assert_allclose(np.asarray(first_scores), np.asarray(full_scores)[:, :, :2], atol=1e-6)


def test_fixed_arguments_are_rejected():
    with pytest.raises(NlpkitError):
        ReuseTransformer(N, 16, "relu", attention_type="multi_head")


def _relative_pe_block(reuse_attention, **kwargs):
    block = ReuseTransformer(
        N, 16, "relu", reuse_attention=reuse_attention, use_relative_pe=True, pe_max_seq_length=3, **kwargs
    )
    block.build((B, T, D))
    table = block.attention.relative_position_embeddings
    # Well above the logits' spread, so a bias that does not arrive shows.
    table.assign((rng.normal(size=table.shape) * 3.0).astype("float32"))
    return block


@pytest.mark.parametrize("reuse_attention, reused, norm_first", [(0, 0, False), (1, 1, True)])
def test_relative_position_bias_matches_numpy_reference(reuse_attention, reused, norm_first):
    x, padding, previous = _inputs()
    mask = np.broadcast_to(padding[:, None, :], (B, T, T))
    block = _relative_pe_block(reuse_attention, norm_first=norm_first)
    out, probs = block(x, attention_mask=padding, reuse_attention_scores=previous)
    want_out, want_probs = _reuse_block_reference(block, x, mask, previous, reused)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)


@pytest.mark.parametrize(
    "layer_idx, max_reuse_layer_idx, reuse_attention, reused",
    [
        (None, None, 1, 1),
        (0, None, 1, 0),  # the first block has nothing to reuse
        (3, None, 1, 1),
        (2, 2, -1, N),
        (3, 2, -1, 0),  # beyond max_reuse_layer_idx: reuse off
    ],
)
def test_layer_idx_and_max_reuse_layer_idx_switch_reuse_as_model_garden(
    layer_idx, max_reuse_layer_idx, reuse_attention, reused
):
    x, padding, previous = _inputs()
    mask = np.broadcast_to(padding[:, None, :], (B, T, T))
    block = ReuseTransformer(
        N, 16, "relu", reuse_attention=reuse_attention, layer_idx=layer_idx, max_reuse_layer_idx=max_reuse_layer_idx
    )
    out, probs = block(x, attention_mask=padding, reuse_attention_scores=previous)
    want_out, want_probs = _reuse_block_reference(block, x, mask, previous, reused)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)
    assert block.get_config()["reuse_attention"] == reuse_attention  # what was asked, as given
    if not reused:  # reuse off: the scores of the block below are not needed at all
        np.testing.assert_allclose(np.asarray(block(x, attention_mask=padding)[0]), np.asarray(out), atol=1e-6)


# Model Garden's ReuseTransformer arguments (reuse_transformer.py), every one given.
MODEL_GARDEN_ARGUMENTS = dict(
    num_attention_heads=N,
    inner_dim=16,
    inner_activation="relu",
    head_size=3,
    output_range=None,
    kernel_initializer="glorot_uniform",
    bias_initializer="zeros",
    kernel_regularizer=None,
    bias_regularizer=None,
    activity_regularizer=None,
    kernel_constraint=None,
    bias_constraint=None,
    use_bias=True,
    norm_first=True,
    norm_epsilon=1e-6,
    output_dropout=0.1,
    attention_dropout=0.1,
    inner_dropout=0.1,
    attention_initializer="he_normal",
    attention_axes=None,
    reuse_attention=1,
    use_relative_pe=True,
    pe_max_seq_length=8,
    layer_idx=2,
    max_reuse_layer_idx=4,
)


def test_builds_from_model_garden_arguments_and_config_round_trips():
    x, padding, previous = _inputs()
    block = ReuseTransformer(**MODEL_GARDEN_ARGUMENTS)
    out, probs = block(x, attention_mask=padding, reuse_attention_scores=previous)
    assert tuple(out.shape) == (B, T, D) and tuple(probs.shape) == (B, N, T, T)
    assert_config_holds_arguments(block, MODEL_GARDEN_ARGUMENTS, renamed=dict(head_size="key_dim"))
    assert block.attention.key_dim == 3 and block.attention.reuse_attention == 1
    assert tuple(block.attention.relative_position_embeddings.shape) == (1, N - 1, 15)
    with pytest.raises(NlpkitError, match="head_size=3 disagree"):
        ReuseTransformer(N, 16, "relu", head_size=3, key_dim=4)


@pytest.mark.parametrize(
    "init, with_scores",
    [
        (dict(reuse_attention=1, use_relative_pe=True, pe_max_seq_length=3, layer_idx=1, max_reuse_layer_idx=2), True),
        (dict(reuse_attention=1, use_relative_pe=True, layer_idx=3, max_reuse_layer_idx=2), False),
    ],
    ids=["reuse_with_relative_pe", "reuse_switched_off"],
)
def test_contract_with_model_garden_options(tmp_path, init, with_scores):
    x, padding, previous = _inputs()
    kwargs = dict(attention_mask=padding.astype("float32"))
    if with_scores:
        kwargs["reuse_attention_scores"] = previous
    check_layer(
        ReuseTransformer,
        dict(num_attention_heads=N, inner_dim=16, inner_activation="relu", **init),
        args=[x],
        kwargs=kwargs,
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D), (B, N, T, T)],
        # attention: query, key, value, output 2 each and the relative table; feed-forward 4, norms 4
        expected_trainable=17,
        expected_non_trainable=0,
    )
