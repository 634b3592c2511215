import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import available_attentions
from nlpkit.layers.blocks.encoder import Transformer, TransformerEncoderBlock
from tests.layers.blocks.block_reference import encoder_block
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)
B, T, S, D = 2, 5, 4, 8


def _inputs():
    x = rng.normal(size=(B, T, D)).astype("float32")
    mask = (rng.random((B, T, T)) > 0.3).astype("float32")
    mask[1, 2] = 0.0  # one fully masked query row
    return x, mask


def test_contract(tmp_path):
    x, mask = _inputs()
    check_layer(
        TransformerEncoderBlock,
        dict(
            num_attention_heads=2,
            inner_dim=16,
            inner_activation="relu",
            output_dropout=0.1,
            attention_dropout=0.1,
            inner_dropout=0.1,
        ),
        args=[x],
        kwargs=dict(attention_mask=mask),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        expected_trainable=16,  # attention 8, feed-forward 4, two norms 4
        expected_non_trainable=0,
    )


def test_contract_pre_norm_cross_attention_scores_gated_and_output_range(tmp_path):
    x, _ = _inputs()
    memory = rng.normal(size=(B, S, 6)).astype("float32")
    check_layer(
        TransformerEncoderBlock,
        dict(
            num_attention_heads=2,
            inner_dim=16,
            inner_activation="gelu",
            norm_first=True,
            key_dim=3,
            value_dim=5,
            return_attention_scores=True,
            feedforward_type="gated",
            attention_type="multi_head",
            attention_kwargs={"kernel_regularizer": None},
        ),
        args=[x],
        kwargs=dict(key_value=memory, attention_mask=np.ones((B, T, S), "float32")),
        static_kwargs=dict(output_range=2),
        tmp_path=tmp_path,
        expected_shapes=[(B, 2, D), (B, 2, 2, S)],
        expected_trainable=18,  # 16 + the gate's kernel and bias
        expected_non_trainable=0,
    )


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("feedforward_type", ["dense", "gated"])
def test_matches_numpy_reference(norm_first, feedforward_type):
    x, mask = _inputs()
    block = TransformerEncoderBlock(
        2,
        16,
        "gelu",
        norm_first=norm_first,
        norm_epsilon=1e-6,
        feedforward_type=feedforward_type,
        return_attention_scores=True,
    )
    out, scores = block(x, attention_mask=mask)
    want, want_probs = encoder_block(x, block, mask=mask)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), want_probs, atol=1e-5)


def test_cross_attention_list_and_keyword_forms_match_reference():
    x, _ = _inputs()
    memory = rng.normal(size=(B, S, D)).astype("float32")
    mask = (rng.random((B, T, S)) > 0.3).astype("float32")
    block = TransformerEncoderBlock(2, 16, "relu", norm_first=True)
    keyword = np.asarray(block(x, key_value=memory, attention_mask=mask))
    listed = np.asarray(block([x, memory], attention_mask=mask))
    want, _ = encoder_block(x, block, mask=mask, key_value=memory)
    np.testing.assert_allclose(keyword, want, atol=1e-5)
    np.testing.assert_allclose(listed, want, atol=1e-5)


def test_without_query_residual_and_other_output_width_matches_reference():
    x, mask = _inputs()
    block = TransformerEncoderBlock(2, 16, "relu", output_last_dim=6, use_query_residual=False)
    out = np.asarray(block(x, attention_mask=mask))
    want, _ = encoder_block(x, block, mask=mask, query_residual=False)
    assert out.shape == (B, T, 6)
    np.testing.assert_allclose(out, want, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_output_range_equals_first_rows_of_full_output(norm_first):
    x, mask = _inputs()
    block = TransformerEncoderBlock(2, 16, "relu", norm_first=norm_first)
    full = np.asarray(block(x, attention_mask=mask))
    for k in (1, 3):
        np.testing.assert_allclose(np.asarray(block(x, attention_mask=mask, output_range=k)), full[:, :k], atol=1e-6)


def test_padding_invariance_and_padding_mask_form():
    x, _ = _inputs()
    padding = np.ones((B, T), "float32")
    padding[:, 3:] = 0.0
    mask = np.broadcast_to(padding[:, None, :], (B, T, T)).copy()
    block = TransformerEncoderBlock(2, 16, "relu")
    out = np.asarray(block(x, attention_mask=mask))
    changed = x.copy()
    changed[:, 3:] = rng.normal(size=changed[:, 3:].shape) * 100
    out_changed = np.asarray(block(changed, attention_mask=mask))
    np.testing.assert_allclose(out_changed[:, :3], out[:, :3], atol=1e-5)
    np.testing.assert_allclose(np.asarray(block(x, attention_mask=padding)), out, atol=1e-6)


def test_attention_factory_runs_inside_the_block():
    x, mask = _inputs()
    made = []

    def factory(**kwargs):
        made.append(kwargs)
        return MultiHeadAttention(**kwargs)

    block = TransformerEncoderBlock(2, 16, "relu", attention_type=factory)
    out = np.asarray(block(x, attention_mask=mask))
    assert made and made[0]["num_heads"] == 2 and made[0]["key_dim"] == D // 2
    want, _ = encoder_block(x, block, mask=mask)
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_registered_talking_heads_runs_inside_the_block(tmp_path):
    assert "talking_heads" in available_attentions()
    x, mask = _inputs()
    check_layer(
        TransformerEncoderBlock,
        dict(num_attention_heads=2, inner_dim=16, inner_activation="relu", attention_type="talking_heads"),
        args=[x],
        kwargs=dict(attention_mask=mask),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        mixed_precision=False,
        expected_trainable=18,  # 16 + talking-heads' two mixing matrices
        expected_non_trainable=0,
    )
    block = TransformerEncoderBlock(2, 16, "relu", attention_type="talking_heads")
    block(x, attention_mask=mask)
    assert type(block.attention).__name__ == "TalkingHeadsAttention"


def test_layer_norm_runs_in_float32_under_mixed_precision():
    x, mask = _inputs()
    block = TransformerEncoderBlock(2, 16, "relu", dtype="mixed_bfloat16")
    out = block(x, attention_mask=mask)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert block.attention_layer_norm.gamma.dtype == "float32"
    want, _ = encoder_block(x, block, mask=mask)
    np.testing.assert_allclose(np.asarray(keras.ops.cast(out, "float32")), want, atol=0.15)


def test_old_catalogue_name_transformer():
    block = Transformer(2, 16, "relu")
    assert isinstance(block, TransformerEncoderBlock)
    config = keras.saving.serialize_keras_object(block)
    assert config["registered_name"] == "nlpkit>Transformer"
    assert type(keras.saving.deserialize_keras_object(config)) is Transformer


def test_bad_arguments_raise_nlpkit_error():
    x, _ = _inputs()
    with pytest.raises(NlpkitError, match="output_last_dim"):
        TransformerEncoderBlock(2, 16, "relu", output_last_dim=6)(x)
    with pytest.raises(NlpkitError, match="divisible"):
        TransformerEncoderBlock(3, 16, "relu")(x)
    with pytest.raises(NlpkitError, match="feedforward_type"):
        TransformerEncoderBlock(2, 16, "relu", feedforward_type="moe")
    with pytest.raises(NlpkitError, match="unknown attention"):
        TransformerEncoderBlock(2, 16, "relu", attention_type="no_such_attention")(x)

