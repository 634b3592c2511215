"""TransformerEncoderBlock's Model Garden options (issue #18): num_kv_heads, use_rms_norm,
diff_q_kv_att_layer_norm, attention_initializer, regularizers and constraints."""

import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.grouped_query import GroupedQueryAttention
from nlpkit.layers.blocks.encoder import TransformerEncoderBlock
from nlpkit.layers.normalization import RMSNorm
from tests.layers import reference
from tests.layers.blocks.block_reference import feedforward, layer_norm
from tests.layers.harness import check_layer

rng = np.random.default_rng(18)
B, T, S, D = 2, 5, 4, 8


def _inputs():
    x = rng.normal(size=(B, T, D)).astype("float32")
    memory = rng.normal(size=(B, S, 6)).astype("float32")
    mask = (rng.random((B, T, S)) > 0.3).astype("float32")
    return x, memory, mask


def _rms_norm(x, norm):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + norm.epsilon) * np.asarray(norm.scale)


def _norm(x, norm):
    return _rms_norm(x, norm) if isinstance(norm, RMSNorm) else layer_norm(x, norm)


def _pre_norm_reference(x, block, key_value, mask):
    """NumPy pre-norm block; a given key_value goes through `attention_layer_norm_kv` when there is one."""
    normed = _norm(x, block.attention_layer_norm)
    memory = normed if key_value is None else key_value
    if key_value is not None and block.attention_layer_norm_kv is not None:
        memory = _norm(key_value, block.attention_layer_norm_kv)
    attended, _ = reference.multi_head_attention(normed, memory, *reference.mha_weights(block.attention), mask=mask)
    hidden = x + attended
    return hidden + feedforward(layer_norm(hidden, block.output_layer_norm), block.feedforward, "relu")


def test_contract_grouped_query_rms_norm_separate_kv_norm_and_regularizers(tmp_path):
    x, memory, mask = _inputs()
    check_layer(
        TransformerEncoderBlock,
        dict(
            num_attention_heads=4,
            inner_dim=16,
            inner_activation="relu",
            norm_first=True,
            num_kv_heads=2,
            use_rms_norm=True,
            diff_q_kv_att_layer_norm=True,
            attention_initializer="he_normal",
            kernel_regularizer="l2",
            bias_regularizer="l1",
            activity_regularizer="l2",
            kernel_constraint="max_norm",
            # Not non_neg: the key bias's true gradient is 0, so rounding noise could push it
            # below 0 and the constraint would hold it unchanged.
            bias_constraint="max_norm",
            return_attention_scores=True,
        ),
        args=[x],
        kwargs=dict(key_value=memory, attention_mask=mask),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D), (B, 4, T, S)],
        expected_trainable=16,  # attention 8, feed-forward 4, RMS scale 1, kv RMS scale 1, output norm 2
        expected_non_trainable=0,
    )


@pytest.mark.parametrize("num_kv_heads", [None, 4])
def test_as_many_kv_heads_as_heads_equals_multi_head_block(num_kv_heads):
    x, _, _ = _inputs()
    mask = (rng.random((B, T, T)) > 0.3).astype("float32")
    mha_block = TransformerEncoderBlock(4, 16, "relu")
    want = np.asarray(mha_block(x, attention_mask=mask))
    gqa_block = TransformerEncoderBlock(4, 16, "relu", num_kv_heads=4, attention_type="grouped_query")
    gqa_block.build(x.shape)
    assert isinstance(gqa_block.attention, GroupedQueryAttention)
    gqa_block.set_weights(mha_block.get_weights())
    np.testing.assert_allclose(np.asarray(gqa_block(x, attention_mask=mask)), want, atol=1e-5)


def test_multi_query_block_shares_one_kv_head_and_keeps_padding_mask():
    x, _, _ = _inputs()
    padding = np.ones((B, T), "float32")
    padding[0, 3:] = 0.0
    block = TransformerEncoderBlock(4, 16, "relu", num_kv_heads=1)
    out = np.asarray(block(x, padding_mask=padding))
    assert tuple(block.attention.key_dense.kernel.shape) == (D, 1, 2)
    full_mask = np.broadcast_to(padding[:, None, :], (B, T, T))
    np.testing.assert_allclose(np.asarray(block(x, attention_mask=full_mask)), out, atol=1e-6)


@pytest.mark.parametrize("use_rms_norm", [False, True])
@pytest.mark.parametrize("diff_q_kv", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_rms_norm_and_separate_kv_norm_match_numpy(use_rms_norm, diff_q_kv, cross):
    x, memory, mask = _inputs()
    key_value = memory if cross else None
    mask = mask if cross else None
    block = TransformerEncoderBlock(
        2, 16, "relu", norm_first=True, norm_epsilon=1e-6, use_rms_norm=use_rms_norm, diff_q_kv_att_layer_norm=diff_q_kv
    )
    out = np.asarray(block(x, key_value=key_value, attention_mask=mask))
    assert isinstance(block.attention_layer_norm, RMSNorm) == use_rms_norm
    assert (block.attention_layer_norm_kv is not None) == diff_q_kv
    # Non-trivial norm weights, so that a norm skipped or swapped shows.
    for norm in (block.attention_layer_norm, block.attention_layer_norm_kv):
        for weight in norm.weights if norm is not None else ():
            weight.assign(rng.normal(size=weight.shape).astype("float32"))
    out = np.asarray(block(x, key_value=key_value, attention_mask=mask))
    np.testing.assert_allclose(out, _pre_norm_reference(x, block, key_value, mask), atol=1e-4)


def test_regularizers_constraints_and_attention_initializer_reach_every_projection():
    x, _, _ = _inputs()
    block = TransformerEncoderBlock(
        2,
        16,
        "relu",
        attention_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(0.01),
        kernel_constraint="non_neg",
    )
    block(x)
    attention_kernels = [d.kernel for d in (block.attention.query_dense, block.attention.key_dense,
                                            block.attention.value_dense, block.attention.output_dense)]
    ffn_kernels = [block.feedforward.inner_dense.kernel, block.feedforward.output_dense.kernel]
    assert all(np.all(np.asarray(k) == 1.0) for k in attention_kernels)
    assert not any(np.all(np.asarray(k) == 1.0) for k in ffn_kernels)
    want = 0.01 * sum(np.sum(np.square(np.asarray(k, np.float64))) for k in attention_kernels + ffn_kernels)
    np.testing.assert_allclose(float(sum(keras.ops.convert_to_numpy(loss) for loss in block.losses)), want, rtol=1e-5)

    inputs = keras.Input((T, D))
    model = keras.Model(inputs, block(inputs))
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.fit(x, x * 50.0, epochs=1, verbose=0)
    assert all(np.all(np.asarray(k) >= 0.0) for k in attention_kernels + ffn_kernels)


def test_activity_regularizer_acts_on_projections_not_on_block_output():
    x, _, _ = _inputs()
    block = TransformerEncoderBlock(2, 16, "relu", activity_regularizer=keras.regularizers.L1(1.0))
    block(x)
    assert block.activity_regularizer is None
    assert len(block.losses) == 6  # attention query/key/value/output, feed-forward inner/output


def test_block_sparse_block_equals_block_with_block_diagonal_mask(tmp_path):
    x = rng.normal(size=(B, 6, D)).astype("float32")
    init = dict(num_attention_heads=2, inner_dim=16, inner_activation="relu", src_block_size=3)
    check_layer(
        TransformerEncoderBlock,
        init,
        args=[x],
        tmp_path=tmp_path,
        expected_shapes=[(B, 6, D)],
        expected_trainable=16,
        expected_non_trainable=0,
    )
    sparse = TransformerEncoderBlock(**init)
    out = np.asarray(sparse(x))
    full = TransformerEncoderBlock(2, 16, "relu")
    full.build(x.shape)
    full.set_weights(sparse.get_weights())
    block_diagonal = np.kron(np.eye(2), np.ones((3, 3)))[None].repeat(B, axis=0).astype("float32")
    np.testing.assert_allclose(out, np.asarray(full(x, attention_mask=block_diagonal)), atol=1e-5)


# Every argument of Model Garden's TransformerEncoderBlock (official/nlp/modeling/layers/
# transformer_encoder_block.py), in its names, with non-default values where nlpkit supports them.
MODEL_GARDEN_CONFIG = dict(
    num_attention_heads=4,
    inner_dim=16,
    inner_activation="gelu",
    output_range=None,
    kernel_initializer="he_uniform",
    bias_initializer="ones",
    kernel_regularizer="l2",
    bias_regularizer="l1",
    activity_regularizer="l1",
    kernel_constraint="max_norm",
    bias_constraint="non_neg",
    use_bias=True,
    norm_first=True,
    norm_epsilon=1e-6,
    use_rms_norm=True,
    output_dropout=0.1,
    attention_dropout=0.1,
    inner_dropout=0.1,
    attention_initializer="glorot_normal",
    attention_axes=None,
    use_query_residual=True,
    key_dim=4,
    value_dim=3,
    output_last_dim=None,
    diff_q_kv_att_layer_norm=True,
    return_attention_scores=False,
    num_kv_heads=2,
    src_block_size=None,
    tgt_block_size=None,
)


def _plain(value):
    """A config value with Keras' serialised objects reduced to their class name."""
    return value["class_name"].lower() if isinstance(value, dict) and "class_name" in value else value


@pytest.mark.tf_only  # config porting: backend-independent Python
def test_model_garden_config_ports_and_round_trips():
    x, memory, _ = _inputs()
    block = TransformerEncoderBlock(**MODEL_GARDEN_CONFIG)
    assert tuple(block(x, key_value=memory).shape) == (B, T, D)
    config = block.get_config()
    aliases = {"l2": "l2", "l1": "l1", "max_norm": "maxnorm", "non_neg": "nonneg", "he_uniform": "heuniform",
               "ones": "ones", "glorot_normal": "glorotnormal", "gelu": "gelu"}
    for name, value in MODEL_GARDEN_CONFIG.items():
        got = _plain(config[name])
        want = aliases.get(value, value) if isinstance(value, str) else value
        assert (got.replace("_", "") if isinstance(got, str) else got) == want, name
    rebuilt = TransformerEncoderBlock.from_config(config)
    assert rebuilt.get_config() == config
    assert tuple(rebuilt(x, key_value=memory).shape) == (B, T, D)


@pytest.mark.tf_only  # argument checks: backend-independent Python
def test_bad_model_garden_options_raise_nlpkit_error():
    with pytest.raises(NlpkitError, match="diff_q_kv_att_layer_norm"):
        TransformerEncoderBlock(2, 16, "relu", diff_q_kv_att_layer_norm=True)
    with pytest.raises(NlpkitError, match="needs src_block_size"):
        TransformerEncoderBlock(2, 16, "relu", tgt_block_size=2)
    with pytest.raises(NlpkitError, match="src_block_size need attention_type"):
        TransformerEncoderBlock(2, 16, "relu", src_block_size=2, attention_type="talking_heads")
    with pytest.raises(NlpkitError, match="num_kv_heads"):
        TransformerEncoderBlock(2, 16, "relu", num_kv_heads=1, attention_type="talking_heads")
    with pytest.raises(NlpkitError, match="num_kv_heads=3"):
        TransformerEncoderBlock(4, 16, "relu", num_kv_heads=3)(np.zeros((1, 3, D), "float32"))
