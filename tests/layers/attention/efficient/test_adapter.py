"""Every efficient attention by name: the MultiHeadAttention contract, padding, blocks."""

import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient import ConditionalFullAttention, InnerAttentionAdapter, LinearAttention
from nlpkit.layers.attention.registry import make_attention
from tests.layers.harness import check_layer

rng = np.random.default_rng(6)

# name -> attention-specific arguments that make the tiny test shapes exercise the sparse paths.
ATTENTIONS = {
    "full": {},
    "linear": {},
    "causal-linear": dict(chunk_size=3),
    "clustered": dict(clusters=3),
    "improved-clustered": dict(clusters=3, topk=3),
    "improved-clustered-causal": dict(clusters=3, topk=3, chunk_size=3),
    "reformer": dict(chunk_size=4, bits=2, rounds=2),
    "local": dict(local_context=3),
    "conditional-full:linear": dict(length_limit=4),
    "kernel": dict(num_random_features=16),
    "bigbird": dict(block_size=2, num_rand_blocks=1),
}


def _padded_inputs(batch=3, length=8, width=16):
    x = rng.normal(size=(batch, length, width)).astype("float32")
    padding = np.ones((batch, length), bool)
    padding[1, 5:] = False
    padding[2, :] = False  # a sample that is all padding: every row fully masked
    mask = padding[:, :, None] & padding[:, None, :]
    return x, padding, mask.astype("float32")


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_padding_invariance_and_no_nan_on_fully_masked_rows(name):
    x, padding, mask = _padded_inputs()
    layer = make_attention(name, num_heads=2, key_dim=4, **ATTENTIONS[name])
    out = np.asarray(layer(x, x, attention_mask=mask))
    assert out.shape == x.shape and np.all(np.isfinite(out))
    changed = np.where(padding[..., None], x, rng.normal(size=x.shape).astype("float32") * 30)
    again = np.asarray(layer(changed, changed, attention_mask=mask))
    np.testing.assert_allclose(again[padding], out[padding], atol=1e-5)


@pytest.mark.parametrize("name", ["linear", "reformer", "conditional-full:linear"])
def test_adapter_contract(name, tmp_path):
    x, _, mask = _padded_inputs()
    attention = make_attention(name, num_heads=2, key_dim=4, **ATTENTIONS[name]).attention
    check_layer(
        InnerAttentionAdapter,
        dict(num_heads=2, key_dim=4, value_dim=3, attention=attention, dropout=0.1),
        args=[x, x],
        kwargs=dict(attention_mask=mask),
        tmp_path=tmp_path,
        expected_shapes=[x.shape],
        expected_trainable=8,
        expected_non_trainable=0,
        # Reformer shares queries and keys: the key projection gets no gradient
        expected_without_gradient=2 if name == "reformer" else 0,
    )


@pytest.mark.parametrize("name", ["full", "local", "linear", "kernel", "bigbird"])
def test_key_padding_mask_b_s_equals_its_b_t_s_broadcast(name):
    x, padding, _ = _padded_inputs()
    layer = make_attention(name, num_heads=2, key_dim=4, **ATTENTIONS[name])
    dense = np.broadcast_to(padding[:, None, :], (3, 8, 8))
    np.testing.assert_allclose(np.asarray(layer(x, x, attention_mask=padding)), np.asarray(layer(x, x, attention_mask=dense)), atol=1e-6)


def test_causal_adapter_prefix_is_unchanged_by_later_tokens():
    x = rng.normal(size=(1, 9, 16)).astype("float32")
    for name in ("causal-linear", "local"):
        layer = make_attention(name, num_heads=2, key_dim=4, **ATTENTIONS[name])
        out = np.asarray(layer(x, x, use_causal_mask=True))
        changed = x.copy()
        changed[:, 6:] += 10.0
        np.testing.assert_allclose(np.asarray(layer(changed, changed, use_causal_mask=True))[:, :6], out[:, :6], atol=1e-5)


def test_names_compose_and_bad_requests_are_clear_errors():
    layer = make_attention("conditional-full:linear", num_heads=2, key_dim=4, length_limit=7)
    assert isinstance(layer.attention, ConditionalFullAttention) and isinstance(layer.attention.other_attention, LinearAttention)
    assert layer.attention.length_limit == 7
    with pytest.raises(NlpkitError, match="takes no argument"):
        make_attention("linear", num_heads=2, key_dim=4, clusters=3)
    with pytest.raises(NlpkitError, match="does not compose"):
        make_attention("local:linear", num_heads=2, key_dim=4)
    x, _, _ = _padded_inputs()
    with pytest.raises(NlpkitError, match="attention scores"):
        make_attention("linear", num_heads=2, key_dim=4)(x, x, return_attention_scores=True)
    with pytest.raises(NlpkitError, match="only padding masks"):
        make_attention("linear", num_heads=2, key_dim=4)(x, x, attention_mask=np.tril(np.ones((3, 8, 8))))


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_runs_inside_transformer_encoder_block(name):
    from nlpkit.layers.blocks.encoder import TransformerEncoderBlock

    x, padding, _ = _padded_inputs()
    block = TransformerEncoderBlock(
        num_attention_heads=2, inner_dim=8, inner_activation="relu", attention_type=name, attention_kwargs=ATTENTIONS[name]
    )
    out = np.asarray(block(x, attention_mask=padding[:, None, :] & padding[:, :, None]))
    assert out.shape == x.shape and np.all(np.isfinite(out))
