"""BertEncoder hands its `[B, S]` padding mask to the blocks as such: the O(n) attentions never
hold a `[B, T, S]` tensor, and every attention gives what it gives with the dense mask.

The check traces the encoder's forward pass (tests/layers/tracing.py) at a sequence length of 97,
a prime that no other axis of the model has (batch 2, hidden 16, 2 heads of 8, inner 32, vocab
50, position table 128), and looks for a tensor with two axes of that length: T x S.
"""

import numpy as np
import pytest

from nlpkit.encoders.bert import BertEncoder
from nlpkit.layers.attention.registry import available_attentions
from nlpkit.layers.blocks.encoder import TransformerEncoderBlock
from nlpkit.layers.masks import attention_mask_from_padding
from tests.layers.tracing import intermediate_shapes

LENGTH = 97
O_N_ATTENTIONS = ["linear", "causal-linear", "kernel", "clustered", "improved-clustered", "reformer", "local"]
# Causal linear attention is exact within chunks ([C, C] per chunk): chunks shorter than T here.
ATTENTION_KWARGS = {"causal-linear": {"chunk_size": 8}}
rng = np.random.default_rng(5)


def _inputs(length=LENGTH):
    ids = rng.integers(1, 50, size=(2, length)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, length // 2 :] = 0
    return ids, mask, np.zeros_like(ids)


def _encoder(attention_type):
    return BertEncoder(
        vocab_size=50, hidden_size=16, num_layers=2, num_attention_heads=2, inner_dim=32, max_sequence_length=128,
        output_dropout=0.0, attention_dropout=0.0, attention_type=attention_type,
        attention_kwargs=ATTENTION_KWARGS.get(attention_type),
    )


def _t_by_s_tensors(attention_type):
    encoder = _encoder(attention_type)

    def forward(ids, mask, types):
        return encoder(dict(input_word_ids=ids, input_mask=mask, input_type_ids=types))["sequence_output"]

    args = _inputs()
    forward(*args)  # builds the weights outside the trace
    return sorted({(op, shape) for op, shape in intermediate_shapes(forward, *args) if shape.count(LENGTH) >= 2})


@pytest.mark.parametrize("attention_type", O_N_ATTENTIONS)
def test_no_t_by_s_tensor_in_the_encoder_with_an_o_n_attention(attention_type):
    assert _t_by_s_tensors(attention_type) == []


def test_the_check_sees_the_scores_of_full_softmax_attention():
    # multi_head computes [B, N, T, S] scores: the trace must show them, or the test above proves nothing.
    assert any(shape[-2:] == (LENGTH, LENGTH) for _, shape in _t_by_s_tensors("multi_head"))


@pytest.mark.parametrize("attention_type", available_attentions())
def test_padding_mask_equals_the_dense_mask_for_every_attention(attention_type):
    block = TransformerEncoderBlock(num_attention_heads=2, inner_dim=24, inner_activation="relu", attention_type=attention_type)
    x = rng.normal(size=(2, 12, 16)).astype("float32")
    padding = np.ones((2, 12), "int32")
    padding[1, 5:] = 0
    dense = attention_mask_from_padding(padding)
    with_dense = np.asarray(block(x, attention_mask=dense))
    with_padding = np.asarray(block(x, padding_mask=padding))
    np.testing.assert_allclose(with_padding, with_dense, atol=1e-5)


def test_padding_and_attention_mask_are_both_honoured():
    # The block ANDs them: a causal [B, T, S] mask with padding equals the dense AND of both.
    block = TransformerEncoderBlock(num_attention_heads=2, inner_dim=24, inner_activation="relu")
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    padding = np.array([[1] * 6, [1] * 4 + [0] * 2], "int32")
    causal = np.tril(np.ones((6, 6), "int32"))[None].repeat(2, 0)
    both = causal * padding[:, None, :]
    np.testing.assert_allclose(
        np.asarray(block(x, attention_mask=causal, padding_mask=padding)), np.asarray(block(x, attention_mask=both)), atol=1e-6
    )
