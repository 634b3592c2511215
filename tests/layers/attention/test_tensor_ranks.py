"""No attention of the catalogue builds a tensor of rank > 5.

TensorFlow's oneDNN CPU kernels (on by default on x86) refuse some ops above rank 5 - the
softmax first ("Softmax: Input dims must be <= 5"). Whether oneDNN is on depends on the machine
and on TF_ENABLE_ONEDNN_OPTS, so running an attention is not enough to catch such a tensor:
every attention is traced (a TensorFlow graph, or a jaxpr under JAX) and the rank of every
intermediate is read.
"""

import keras
import numpy as np
import pytest

from nlpkit.layers.attention import (
    CachedAttention,
    KernelAttention,
    MultiChannelAttention,
    MultiHeadAttention,
    TwoStreamRelativeAttention,
    VotingAttention,
)
from nlpkit.layers.attention.registry import available_attentions, make_attention
from nlpkit.layers.attention.efficient import AttentionLayer, ReformerAttention
from nlpkit.layers.attention.kernel import FEATURE_TRANSFORMS
from nlpkit.layers.blocks.encoder import TransformerEncoderBlock
from nlpkit.layers.masks import masked_softmax
from tests.layers.tracing import intermediate_ranks

# The rank limit is TensorFlow oneDNN's: the JAX run leaves the tracing tests out (tests/conftest.py).
tf_only = pytest.mark.tf_only

rng = np.random.default_rng(11)
B, T, D, N = 2, 8, 16, 2
MAX_RANK = 5


def assert_no_rank_above_five(fn, *args):
    fn(*args)  # builds the weights outside the trace
    too_high = sorted({(op, rank) for op, rank in intermediate_ranks(fn, *args) if rank > MAX_RANK})
    assert not too_high, f"tensors of rank > {MAX_RANK}: {too_high}"


def _sequence(length=T):
    return rng.normal(size=(B, length, D)).astype("float32")


def _padding(length=T):
    mask = np.ones((B, length), "float32")
    mask[1, length // 2 :] = 0
    return mask


@tf_only
@pytest.mark.parametrize("attention_type", available_attentions())
def test_every_attention_of_the_catalogue_in_an_encoder_block(attention_type):
    block = TransformerEncoderBlock(num_attention_heads=N, inner_dim=24, inner_activation="relu", attention_type=attention_type)
    padding = _padding()
    mask = np.broadcast_to(padding[:, None, :], (B, T, T)).copy()
    assert_no_rank_above_five(lambda x, m: block(x, attention_mask=m), _sequence(), mask)


# The attentions that take use_causal_mask (the others refuse it or have no such argument).
CAUSAL = ["cached", "causal-linear", "conditional-full", "full", "improved-clustered-causal", "kernel", "local",
          "multi_head", "talking_heads"]


@tf_only
@pytest.mark.parametrize("attention_type", CAUSAL)
def test_every_causal_capable_attention_with_use_causal_mask(attention_type):
    layer = make_attention(attention_type, num_heads=N, key_dim=8)
    assert_no_rank_above_five(lambda x: layer(x, x, use_causal_mask=True), _sequence())


# expplus refuses causal mode (test_kernel.py); exp also runs without random projection.
KERNEL_CASES = [(transform, 16, causal) for transform in FEATURE_TRANSFORMS for causal in (False, True)
                if not (causal and transform == "expplus")] + [("exp", 0, False), ("exp", 0, True)]


@tf_only
@pytest.mark.parametrize("feature_transform, num_random_features, causal", KERNEL_CASES)
def test_kernel_attention_every_feature_transform(feature_transform, num_random_features, causal):
    layer = KernelAttention(num_heads=N, key_dim=8, feature_transform=feature_transform,
                            num_random_features=num_random_features, begin_kernel=2, causal_chunk_length=3)
    assert_no_rank_above_five(lambda x, m: layer(x, x, attention_mask=m, use_causal_mask=causal), _sequence(), _padding())


@tf_only
def test_bigbird_block_sparse_path_on_many_blocks():
    layer = make_attention("bigbird", num_heads=N, key_dim=8, block_size=4, num_rand_blocks=1)
    assert_no_rank_above_five(lambda x, m: layer(x, x, attention_mask=m), _sequence(32), _padding(32))


@tf_only
def test_reformer_with_several_chunks_and_rounds():
    layer = AttentionLayer(ReformerAttention(chunk_size=4, bits=2, rounds=3), d_model=D, n_heads=N)
    assert_no_rank_above_five(lambda x: layer(x, x, x), _sequence(12))


@tf_only
def test_cached_attention_decoding_step():
    layer = CachedAttention(num_heads=N, key_dim=8)
    cache = {"key": np.zeros((B, T, N, 8), "float32"), "value": np.zeros((B, T, N, 8), "float32")}
    step = _sequence(1)

    def decode(x, key, value):
        return layer(x, x, attention_mask=np.ones((B, 1, T), "float32"), cache={"key": key, "value": value},
                     decode_loop_step=3)

    assert_no_rank_above_five(decode, step, cache["key"], cache["value"])


@tf_only
def test_multi_channel_and_voting_attention():
    contexts = rng.normal(size=(B, 3, T, D)).astype("float32")
    voting = VotingAttention(num_heads=N, head_size=8)
    attention = MultiChannelAttention(num_heads=N, key_dim=8)

    def run(query, docs, mask):
        weights = voting(docs, np.ones((B, 3), "float32"))
        return attention(query, docs, context_attention_weights=weights, attention_mask=mask)

    assert_no_rank_above_five(run, _sequence(), contexts, np.ones((B, 3, T, T), "float32"))


@tf_only
def test_two_stream_relative_attention():
    layer = TwoStreamRelativeAttention(num_heads=N, key_dim=8)
    position = rng.normal(size=(B, 2 * T, D)).astype("float32")
    mask = np.tril(np.ones((T, T), "float32"))[None].repeat(B, 0)

    def run(content, query, rel, m):
        return layer(content, query_stream=query, relative_position_encoding=rel,
                     content_attention_mask=m, query_attention_mask=m)

    assert_no_rank_above_five(run, _sequence(), _sequence(), position, mask)


@tf_only
@pytest.mark.parametrize("axes", [(2,), (1, 2)])
def test_multi_head_attention_over_inner_axes_of_a_rank5_input_uses_no_rank6_softmax(axes):
    # The projected rank-5 input is rank 6 by contract; what must not be is the softmax.
    x = rng.normal(size=(2, 3, 4, 5, 8)).astype("float32")
    layer = MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=axes)
    layer(x, x)
    softmax_ranks = [rank for op, rank in intermediate_ranks(lambda a: layer(a, a), x) if "softmax" in op.lower()]
    assert all(rank <= MAX_RANK for rank in softmax_ranks), softmax_ranks


def test_masked_softmax_of_rank6_scores_matches_numpy():
    scores = rng.normal(size=(2, 2, 2, 2, 3, 4)).astype("float32")
    mask = rng.random(size=scores.shape) > 0.3
    mask[0, 0, 0, 0, 0] = False  # one fully masked row
    got = np.asarray(keras.ops.convert_to_numpy(masked_softmax(scores, mask, axis=-1)))
    exp = np.where(mask, np.exp(scores - scores.max(-1, keepdims=True)), 0.0)
    total = exp.sum(-1, keepdims=True)
    want = np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)
    np.testing.assert_allclose(got, want, atol=1e-6)
