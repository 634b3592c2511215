import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.multi_channel import MultiChannelAttention
from nlpkit.layers.blocks.decoder import TransformerDecoderBlock, TransformerDecoderLayer
from tests.layers import reference
from tests.layers.blocks.block_reference import feedforward, layer_norm
from tests.layers.harness import check_layer
from tests.layers.model_garden_config import assert_config_holds_arguments
from tests.layers.properties import assert_causal

rng = np.random.default_rng(0)
B, T, S, D, N = 2, 5, 4, 8, 2
CAUSAL = np.tril(np.ones((T, T), bool))[None]


def _inputs():
    x = rng.normal(size=(B, T, D)).astype("float32")
    memory = rng.normal(size=(B, S, 6)).astype("float32")
    memory_padding = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    return x, memory, memory_padding


def _block(norm_first=False, cls=TransformerDecoderBlock, **kwargs):
    return cls(num_attention_heads=N, inner_dim=16, inner_activation="relu", norm_first=norm_first, **kwargs)


def _decoder_reference(block, x, memory, self_mask, cross_mask):
    """NumPy: causal self-attention, cross-attention, feed-forward; residuals and norms (pre or post)."""

    def sublayer(h, norm, transform):
        out = h + transform(layer_norm(h, norm) if block.norm_first else h)
        return out if block.norm_first else layer_norm(out, norm)

    def attend(attention, mask):
        return lambda q, kv=None: reference.multi_head_attention(
            q, q if kv is None else kv, *reference.mha_weights(attention), mask=mask
        )[0]

    h = sublayer(np.asarray(x, np.float64), block.self_attention_layer_norm, attend(block.self_attention, self_mask))
    cross = attend(block.cross_attention, cross_mask)
    h = sublayer(h, block.cross_attention_layer_norm, lambda q: cross(q, memory))
    return sublayer(h, block.output_layer_norm, lambda q: feedforward(q, block.feedforward, "relu"))


def test_contract(tmp_path):
    x, memory, memory_padding = _inputs()
    check_layer(
        TransformerDecoderBlock,
        dict(
            num_attention_heads=N,
            inner_dim=16,
            inner_activation="gelu",
            norm_first=True,
            output_dropout=0.1,
            attention_dropout=0.1,
            inner_dropout=0.1,
            key_dim=3,
            norm_epsilon=1e-6,
        ),
        args=[x, memory],
        kwargs=dict(
            self_attention_mask=np.ones((B, T, T), "float32"),
            cross_attention_mask=memory_padding.astype("float32"),
        ),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        # self- and cross-attention (8 each) with their norms (2 each), feed-forward (4), output norm (2)
        expected_trainable=26,
        expected_non_trainable=0,
    )


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_numpy_reference(norm_first):
    x, memory, memory_padding = _inputs()
    self_padding = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], bool)  # row 1: first token is padding
    block = _block(norm_first)
    out = block(x, memory, self_attention_mask=self_padding[:, None], cross_attention_mask=memory_padding)
    want = _decoder_reference(block, x, memory, CAUSAL & self_padding[:, None], memory_padding[:, None])
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_causal_perturbing_later_tokens_leaves_earlier_outputs_unchanged():
    x, memory, _ = _inputs()
    block = _block()
    assert_causal(lambda x: block(x, memory), x, first_changed=3)


def test_padding_invariance_and_masked_memory_gets_zero_probability():
    x, memory, memory_padding = _inputs()
    block = _block()
    out = np.asarray(block(x, memory, cross_attention_mask=memory_padding))
    changed = memory.copy()
    changed[1, 2:] = rng.normal(size=changed[1, 2:].shape) * 100
    np.testing.assert_allclose(np.asarray(block(x, changed, cross_attention_mask=memory_padding)), out, atol=1e-5)
    _, probs = block.cross_attention(x, memory, attention_mask=memory_padding[:, None], return_attention_scores=True)
    assert np.max(np.abs(np.asarray(probs)[1, ..., 2:])) == 0.0


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("static", [False, True])
def test_cached_step_by_step_decoding_equals_full_pass(norm_first, static):
    x, memory, memory_padding = _inputs()
    block = _block(norm_first)
    full = np.asarray(block(x, memory, cross_attention_mask=memory_padding))
    key_dim = D // N
    length = T if static else 0
    cache = {name: np.zeros((B, length, N, key_dim), "float32") for name in ("key", "value")}
    steps = []
    for t in range(T):
        step_mask = np.ones((B, 1, T if static else t + 1), "float32")
        out, cache = block(
            x[:, t : t + 1],
            memory,
            self_attention_mask=step_mask,
            cross_attention_mask=memory_padding,
            cache=cache,
            decode_loop_step=t if static else None,
        )
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    assert tuple(cache["key"].shape) == (B, T, N, key_dim)


def test_the_older_name_is_the_same_block_and_round_trips():
    assert issubclass(TransformerDecoderLayer, TransformerDecoderBlock)
    x, memory, _ = _inputs()
    old, new = _block(cls=TransformerDecoderLayer), _block()
    old(x, memory)
    new(x, memory)
    new.set_weights(old.get_weights())
    np.testing.assert_allclose(np.asarray(new(x, memory)), np.asarray(old(x, memory)), atol=1e-6)
    layer = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(old))
    assert type(layer) is TransformerDecoderLayer and layer.get_config() == old.get_config()


def test_symbolic_call_with_a_growing_cache_gives_the_cache_shapes():
    block = _block()
    step, memory = keras.Input(shape=(1, D)), keras.Input(shape=(S, 6))
    cache = {name: keras.Input(shape=(3, N, D // N)) for name in ("key", "value")}
    out, new_cache = block(step, memory, cache=cache)
    assert tuple(out.shape) == (None, 1, D)
    assert tuple(new_cache["key"].shape) == (None, 4, N, D // N)


def test_cached_decoding_under_mixed_precision_stays_close_to_float32():
    x, memory, _ = _inputs()
    exact = _block()
    want = np.asarray(exact(x, memory))
    mixed = _block(dtype="mixed_bfloat16")
    mixed(x, memory)
    mixed.set_weights(exact.get_weights())
    cache = {name: np.zeros((B, T, N, D // N), "float32") for name in ("key", "value")}
    for t in range(T):
        out, cache = mixed(x[:, t : t + 1], memory, cache=cache, decode_loop_step=t)
        np.testing.assert_allclose(np.asarray(out, "float32"), want[:, t : t + 1], atol=0.1)


C = 3  # context streams of the multi-channel cross-attention


def _contexts():
    memory = rng.normal(size=(B, C, S, 6)).astype("float32")
    cross_mask = rng.random((B, C, T, S)) > 0.3
    cross_mask[1, 0, 2] = False  # one query that sees nothing in one context
    weights = rng.random((B, C)).astype("float32")
    return memory, cross_mask, weights / weights.sum(axis=1, keepdims=True)


def _multi_channel_cross(block, memory, cross_mask, weights):
    """NumPy: with weights summing to 1 over the contexts, merging before the (affine) output
    projection equals the weighted sum of plain multi-head cross-attention into each context."""
    parts = reference.mha_weights(block.cross_attention)

    def cross(q):
        outputs = [reference.multi_head_attention(q, memory[:, c], *parts, mask=cross_mask[:, c])[0] for c in range(C)]
        return sum(weights[:, c, None, None] * outputs[c] for c in range(C))

    return cross


def _decoder_reference_with_cross(block, x, self_mask, cross):
    def sublayer(h, norm, transform):
        out = h + transform(layer_norm(h, norm) if block.norm_first else h)
        return out if block.norm_first else layer_norm(out, norm)

    def self_attend(q):
        return reference.multi_head_attention(q, q, *reference.mha_weights(block.self_attention), mask=self_mask)[0]

    h = sublayer(np.asarray(x, np.float64), block.self_attention_layer_norm, self_attend)
    h = sublayer(h, block.cross_attention_layer_norm, cross)
    return sublayer(h, block.output_layer_norm, lambda q: feedforward(q, block.feedforward, "relu"))


@pytest.mark.parametrize("norm_first", [False, True])
def test_multi_channel_cross_attention_matches_numpy_reference(norm_first):
    x, _, _ = _inputs()
    memory, cross_mask, weights = _contexts()
    block = _block(norm_first, multi_channel_cross_attention=True)
    out = block(x, memory, cross_attention_mask=cross_mask, context_attention_weights=weights)
    want = _decoder_reference_with_cross(block, x, CAUSAL, _multi_channel_cross(block, memory, cross_mask, weights))
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_one_channel_with_weight_one_equals_plain_cross_attention():
    x, memory, memory_padding = _inputs()
    multi = _block(multi_channel_cross_attention=True)
    plain = _block()
    ones = np.ones((B, 1), "float32")
    multi(x, memory[:, None], context_attention_weights=ones)
    plain(x, memory)
    multi.set_weights(plain.get_weights())
    want = np.asarray(plain(x, memory, cross_attention_mask=memory_padding))
    got = multi(x, memory[:, None], cross_attention_mask=memory_padding[:, None], context_attention_weights=ones)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_model_garden_list_call_equals_the_keyword_call():
    x, _, _ = _inputs()
    memory, cross_mask, weights = _contexts()
    self_mask = np.broadcast_to(CAUSAL, (B, T, T))
    block = _block(multi_channel_cross_attention=True)
    want = np.asarray(block(x, memory, cross_attention_mask=cross_mask, context_attention_weights=weights))
    got = block([x, memory, cross_mask, self_mask, weights])
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
    x, memory, padding = _inputs()
    plain = _block()
    want = np.asarray(plain(x, memory, cross_attention_mask=padding[:, None]))
    np.testing.assert_allclose(np.asarray(plain([x, memory, padding[:, None], self_mask])), want, atol=1e-6)


def test_multi_channel_cached_decoding_equals_full_pass():
    x, _, _ = _inputs()
    memory, cross_mask, weights = _contexts()
    block = _block(multi_channel_cross_attention=True)
    full = np.asarray(block(x, memory, cross_attention_mask=cross_mask, context_attention_weights=weights))
    cache = {name: np.zeros((B, 0, N, D // N), "float32") for name in ("key", "value")}
    steps = []
    for t in range(T):
        out, cache = block(
            x[:, t : t + 1],
            memory,
            self_attention_mask=np.ones((B, 1, t + 1), "float32"),
            cross_attention_mask=cross_mask[:, :, t : t + 1],
            context_attention_weights=weights,
            cache=cache,
        )
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_multi_channel_per_context_padding_mask_equals_its_broadcast():
    x, _, _ = _inputs()
    memory, _, weights = _contexts()
    padding = rng.random((B, C, S)) > 0.3
    block = _block(multi_channel_cross_attention=True)
    got = block(x, memory, cross_attention_mask=padding, context_attention_weights=weights)
    full = np.broadcast_to(padding[:, :, None], (B, C, T, S))
    want = block(x, memory, cross_attention_mask=full, context_attention_weights=weights)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_multi_channel_contract(tmp_path):
    x, _, _ = _inputs()
    memory, cross_mask, weights = _contexts()
    check_layer(
        TransformerDecoderBlock,
        dict(num_attention_heads=N, inner_dim=16, inner_activation="relu", multi_channel_cross_attention=True),
        args=[x, memory],
        kwargs=dict(
            self_attention_mask=np.ones((B, T, T), "float32"),
            cross_attention_mask=cross_mask.astype("float32"),
            context_attention_weights=weights,
        ),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        expected_trainable=26,  # as the plain block: the multi-channel projections have the same weights
        expected_non_trainable=0,
    )


# Model Garden's TransformerDecoderBlock arguments (transformer.py), every one given.
MODEL_GARDEN_ARGUMENTS = dict(
    num_attention_heads=N,
    intermediate_size=16,
    intermediate_activation="relu",
    dropout_rate=0.1,
    attention_dropout_rate=0.2,
    multi_channel_cross_attention=True,
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
    intermediate_dropout=0.3,
    attention_initializer="he_normal",
)
# nlpkit's names of those that differ (as in tests/layers/test_model_garden_defaults.py); the block
# takes either, its config keeps nlpkit's.
NLPKIT_NAMES = dict(
    intermediate_size="inner_dim",
    intermediate_activation="inner_activation",
    dropout_rate="output_dropout",
    attention_dropout_rate="attention_dropout",
    intermediate_dropout="inner_dropout",
)


def test_builds_from_model_garden_arguments_and_config_round_trips():
    x, _, _ = _inputs()
    memory, cross_mask, weights = _contexts()
    block = TransformerDecoderBlock(**MODEL_GARDEN_ARGUMENTS)  # Model Garden's names, as a ported config has them
    renamed = TransformerDecoderBlock(**{NLPKIT_NAMES.get(k, k): v for k, v in MODEL_GARDEN_ARGUMENTS.items()})
    assert block.get_config() | {"name": None} == renamed.get_config() | {"name": None}
    out = block(x, memory, cross_attention_mask=cross_mask, context_attention_weights=weights)
    assert tuple(out.shape) == (B, T, D)
    assert_config_holds_arguments(block, MODEL_GARDEN_ARGUMENTS, renamed=NLPKIT_NAMES)
    assert block.inner_activation is keras.activations.relu
    assert isinstance(block.cross_attention, MultiChannelAttention) and block.cross_attention.dropout == 0.2
    assert TransformerDecoderBlock(N, 16, "relu").get_config()["multi_channel_cross_attention"] is False


def test_model_garden_and_nlpkit_names_must_agree_and_inner_dim_is_needed():
    with pytest.raises(NlpkitError, match="inner_dim=16 and intermediate_size=32 disagree"):
        TransformerDecoderBlock(N, inner_dim=16, intermediate_size=32, inner_activation="relu")
    with pytest.raises(NlpkitError, match=r"needs inner_dim \(Model Garden: intermediate_size\)"):
        TransformerDecoderBlock(N, intermediate_activation="relu")
    same = TransformerDecoderBlock(N, inner_dim=16, intermediate_size=16, intermediate_activation="relu")
    assert same.get_config()["inner_dim"] == 16 and "intermediate_size" not in same.get_config()


def test_multi_channel_rejections():
    x, _, _ = _inputs()
    memory, cross_mask, weights = _contexts()
    with pytest.raises(NlpkitError, match="attention_type"):
        _block(multi_channel_cross_attention=True, attention_type="talking_heads")
    with pytest.raises(NlpkitError, match="context_attention_weights"):
        _block(multi_channel_cross_attention=True)(x, memory)
    with pytest.raises(NlpkitError, match="multi_channel_cross_attention=True"):
        plain_x, plain_memory, _ = _inputs()
        _block()(plain_x, plain_memory, context_attention_weights=np.ones((B, 1), "float32"))
    with pytest.raises(NlpkitError, match="list input"):
        _block(multi_channel_cross_attention=True)([x, memory, cross_mask, None])
