"""Every layer with a TF Model Garden counterpart builds from only the arguments Model Garden requires.

The table lists, per layer, what `official/nlp/modeling/layers/*.py` requires (in nlpkit's
argument names where they differ: MG `intermediate_size` = `inner_dim`, `word_vocab_size` =
`vocab_size`, `embedding_table` = `embedding_layer`, ...) and the Model Garden default of any
argument nlpkit once required. Whatever else nlpkit requires would make a Model Garden
config fail here. (TransformerXL/TransformerXLBlock are checked with their own tests.)
"""

import inspect

import keras
import numpy as np
import pytest

from nlpkit.layers import (
    BigBirdAttention,
    CachedAttention,
    ClassificationHead,
    GatedFeedforward,
    GaussianProcessClassificationHead,
    KernelAttention,
    MaskedLM,
    MaskedSoftmax,
    MatMulWithMargin,
    MobileBertEmbedding,
    MobileBertTransformer,
    MultiChannelAttention,
    MultiHeadAttention,
    MultiHeadRelativeAttention,
    OnDeviceEmbedding,
    PositionEmbedding,
    RandomFeatureGaussianProcess,
    RelativePositionEncoding,
    ReuseMultiHeadAttention,
    ReuseTransformer,
    ReZeroTransformer,
    SelfAttentionMask,
    SpectralNormalization,
    TalkingHeadsAttention,
    Transformer,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    TwoStreamRelativeAttention,
    VotingAttention,
)

rng = np.random.default_rng(3)
X = rng.normal(size=(2, 6, 16)).astype("float32")
IDS = rng.integers(0, 10, size=(2, 6)).astype("int32")
MHA = dict(num_heads=2, key_dim=8)
BLOCK = dict(num_attention_heads=2, inner_dim=24, inner_activation="relu")


def _self_attention(layer):
    return layer(X, X)


def _on_x(layer):
    return layer(X)


def _on_ids(layer):
    return layer(IDS)


# (layer, what Model Garden requires, Model Garden's defaults of arguments nlpkit once required, a call)
CASES = [
    (MultiHeadAttention, MHA, {}, _self_attention),
    (CachedAttention, MHA, {}, _self_attention),
    (TalkingHeadsAttention, MHA, {}, _self_attention),
    (ReuseMultiHeadAttention, MHA, {}, _self_attention),
    (KernelAttention, MHA, {}, _self_attention),
    (BigBirdAttention, MHA, {}, _self_attention),
    (MultiChannelAttention, MHA, {}, None),
    (VotingAttention, dict(num_heads=2, head_size=8), {}, None),
    (MultiHeadRelativeAttention, MHA, {}, None),
    (TwoStreamRelativeAttention, MHA, {}, None),
    (RelativePositionEncoding, dict(hidden_size=16), {}, None),
    (TransformerEncoderBlock, BLOCK, {}, _on_x),
    (Transformer, BLOCK, {}, _on_x),
    (TransformerDecoderBlock, BLOCK, {}, None),
    (ReuseTransformer, BLOCK, {}, None),
    (ReZeroTransformer, dict(num_attention_heads=2), dict(inner_dim=768, inner_activation="gelu"), _on_x),
    (GatedFeedforward, {}, dict(inner_dim=768, inner_activation="gelu", dropout=0.0), _on_x),
    (MobileBertEmbedding, dict(vocab_size=10, embedding_width=8, type_vocab_size=2, output_width=16), {}, _on_ids),
    (MobileBertTransformer, {}, {}, None),
    (OnDeviceEmbedding, dict(vocab_size=10, embedding_width=8), {}, _on_ids),
    (PositionEmbedding, dict(max_length=8), {}, _on_x),
    (ClassificationHead, dict(inner_dim=8, num_classes=3), {}, _on_x),
    (GaussianProcessClassificationHead, dict(inner_dim=8, num_classes=3), {}, None),
    (RandomFeatureGaussianProcess, dict(units=3), {}, None),
    (SpectralNormalization, dict(layer=keras.layers.Dense(4)), {}, None),
    (MaskedLM, dict(embedding_layer=OnDeviceEmbedding(10, 16)), {}, None),
    (MatMulWithMargin, {}, {}, None),
    (SelfAttentionMask, {}, {}, None),
    (MaskedSoftmax, {}, {}, None),
]


def _required_arguments(cls):
    parameters = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.name != "self" and p.kind in kinds and p.default is inspect.Parameter.empty}


# Constructor signatures and config defaults are backend-independent Python (each call runs under
# JAX in the layer's own tests): the JAX run leaves this out.
@pytest.mark.tf_only
@pytest.mark.parametrize("cls, required, defaults, call", CASES, ids=[case[0].__name__ for case in CASES])
def test_builds_from_model_gardens_required_arguments(cls, required, defaults, call):
    extra = _required_arguments(cls) - set(required)
    assert not extra, f"{cls.__name__} requires {sorted(extra)}, which Model Garden gives defaults"
    layer = cls(**required)
    config = layer.get_config()
    for name, value in defaults.items():
        assert config[name] == value, f"{cls.__name__}.{name} defaults to {config[name]!r}, Model Garden to {value!r}"
    if call is not None:
        for output in keras.tree.flatten(call(layer)):
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))


def test_mobilebert_embedding_type_ids_are_optional_as_in_model_garden():
    layer = MobileBertEmbedding(vocab_size=10, embedding_width=8, type_vocab_size=2, output_width=16)
    types = (np.arange(6)[None] % 2).repeat(2, 0).astype("int32")
    with_types = keras.ops.convert_to_numpy(layer(IDS, types))
    without = keras.ops.convert_to_numpy(layer(IDS))
    table = keras.ops.convert_to_numpy(layer.type_embedding.embeddings)
    # no_norm is elementwise affine: the type vectors enter as gamma * table[type].
    gamma = keras.ops.convert_to_numpy(layer.norm.gamma)
    np.testing.assert_allclose(with_types - without, gamma * table[types], atol=1e-5)
