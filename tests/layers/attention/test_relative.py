import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import make_attention
from nlpkit.layers.attention.relative import (
    MultiHeadRelativeAttention,
    SinusoidalRelativeAttention,
    TwoStreamRelativeAttention,
    relative_shift,
)
from tests.layers import relative_reference as ref
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)
B, T, M, D, N, H = 2, 3, 2, 8, 2, 4


def _normal(*shape):
    return rng.normal(size=shape).astype("float32")


def _mask(*shape):
    mask = (rng.random(shape) > 0.3).astype("float32")
    mask[..., -1] = 1.0  # every query keeps at least one key
    return mask


def _arrays(memory=True):
    """query/value [B,T,D], state [B,M,D], encodings [B,M+2T,D], mask [B,T,M+T]."""
    memory_length = M if memory else 0
    return dict(
        query=_normal(B, T, D),
        state=_normal(B, M, D) if memory else None,
        encoding=_normal(B, memory_length + 2 * T, D),
        mask=_mask(B, T, memory_length + T),
    )


def test_relative_shift_matches_explicit_indexing():
    scores = _normal(B, N, T, M + 2 * T)
    key_length = M + T
    got = np.asarray(relative_shift(scores, key_length))
    want = np.zeros((B, N, T, key_length), "float32")
    for i in range(T):
        for j in range(key_length):
            want[:, :, i, j] = scores[:, :, i, j + T - i]
    np.testing.assert_array_equal(got, want)


def test_matches_numpy_reference_with_memory_biases_and_segments():
    x = _arrays()
    layer = MultiHeadRelativeAttention(num_heads=N, key_dim=H, use_bias=True, bias_initializer="random_normal")
    u, v, segment_bias = _normal(N, H), _normal(N, H), _normal(N, H)
    segment_encoding = _normal(2, N, H)
    segment_matrix = rng.random((B, T, M + T)) > 0.5
    out, probs = layer(
        x["query"],
        x["query"],
        relative_position_encoding=x["encoding"],
        content_attention_bias=u,
        positional_attention_bias=v,
        segment_matrix=segment_matrix,
        segment_encoding=segment_encoding,
        segment_attention_bias=segment_bias,
        state=x["state"],
        attention_mask=x["mask"],
        return_attention_scores=True,
    )
    want_out, want_probs = ref.relative_attention(
        x["query"],
        x["query"],
        x["encoding"],
        ref.relative_weights(layer),
        biases=(u, v),
        state=x["state"],
        segment=(segment_matrix, segment_encoding, segment_bias),
        mask=x["mask"],
    )
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want_out, atol=1e-5)


def test_zero_position_terms_equal_multi_head_attention():
    x = _arrays(memory=False)
    value = _normal(B, T, D)
    relative = MultiHeadRelativeAttention(num_heads=N, key_dim=H)
    zero_bias = np.zeros((N, H), "float32")
    got = relative(
        x["query"],
        value,
        relative_position_encoding=np.zeros_like(x["encoding"]),
        content_attention_bias=zero_bias,
        positional_attention_bias=zero_bias,
        attention_mask=x["mask"],
    )
    plain = MultiHeadAttention(num_heads=N, key_dim=H)
    plain(x["query"], value)
    for ours, theirs in zip(
        (relative.query_dense, relative.key_dense, relative.value_dense, relative.output_dense),
        (plain.query_dense, plain.key_dense, plain.value_dense, plain.output_dense),
    ):
        theirs.set_weights(ours.get_weights())
    want = plain(x["query"], value, attention_mask=x["mask"])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_two_stream_matches_reference_and_content_stream_is_relative_attention():
    x = _arrays()
    query_stream = _normal(B, T, D)
    query_mask = _mask(B, T, M + T)
    layer = TwoStreamRelativeAttention(num_heads=N, key_dim=H)
    content, query = layer(
        x["query"],
        query_stream,
        relative_position_encoding=x["encoding"],
        state=x["state"],
        content_attention_mask=x["mask"],
        query_attention_mask=query_mask,
    )
    w = ref.relative_weights(layer)
    want_content, _ = ref.relative_attention(x["query"], x["query"], x["encoding"], w, state=x["state"], mask=x["mask"])
    not_self = np.ones((T, M + T), bool)
    not_self[np.arange(T), np.arange(T) + M] = False
    want_query, _ = ref.relative_attention(
        x["query"],
        x["query"],
        x["encoding"],
        w,
        state=x["state"],
        mask=query_mask.astype(bool) & not_self,
        query_input=query_stream,
    )
    np.testing.assert_allclose(np.asarray(content), want_content, atol=1e-5)
    np.testing.assert_allclose(np.asarray(query), want_query, atol=1e-5)


@pytest.mark.parametrize("with_target_mapping", [False, True])
def test_query_stream_never_sees_its_own_content(with_target_mapping):
    x = _arrays()
    layer = TwoStreamRelativeAttention(num_heads=N, key_dim=H)
    query_stream = _normal(B, T, D)
    kwargs = dict(relative_position_encoding=x["encoding"], state=x["state"])  # no mask: everything else visible
    targets = np.arange(T)
    if with_target_mapping:
        targets = np.array([2, 0])  # predict positions 2 and 0, in that order
        query_stream = query_stream[:, :2]
        kwargs["target_mapping"] = np.broadcast_to(np.eye(T, dtype="float32")[targets], (B, 2, T)).copy()
    _, query = layer(x["query"], query_stream, **kwargs)
    for slot, position in enumerate(targets):
        perturbed = x["query"].copy()
        perturbed[:, position] += 10.0 * _normal(B, D)
        content2, query2 = layer(perturbed, query_stream, **kwargs)
        np.testing.assert_allclose(np.asarray(query2)[:, slot], np.asarray(query)[:, slot], atol=1e-5)
        others = [s for s in range(len(targets)) if s != slot]
        assert not np.allclose(np.asarray(query2)[:, others], np.asarray(query)[:, others], atol=1e-3)


def test_target_mapping_equals_gathering_the_full_query_stream():
    x = _arrays()
    layer = TwoStreamRelativeAttention(num_heads=N, key_dim=H)
    query_stream = _normal(B, T, D)
    common = dict(relative_position_encoding=x["encoding"], state=x["state"], query_attention_mask=x["mask"])
    _, full = layer(x["query"], query_stream, **common)
    targets = np.array([1, 2])
    mapping = np.broadcast_to(np.eye(T, dtype="float32")[targets], (B, 2, T)).copy()
    _, mapped = layer(x["query"], query_stream[:, targets], target_mapping=mapping, **common)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(full)[:, targets], atol=1e-5)


def test_registered_relative_attention_matches_reference_with_sinusoids():
    layer = make_attention("relative", num_heads=N, key_dim=H, bias_initializer="random_normal", clamp_len=3)
    assert isinstance(layer, SinusoidalRelativeAttention)
    query, value = _normal(B, T, D), _normal(B, T + 2, D)
    mask = _mask(B, T, T + 2)
    out = layer(query, value, attention_mask=mask)
    key_length = T + 2
    distances = np.clip(np.arange(key_length, -T, -1), -3, 3)
    encoding = np.broadcast_to(ref.sinusoid(distances, D), (B, key_length + T, D))
    biases = (np.asarray(layer.content_attention_bias), np.asarray(layer.positional_attention_bias))
    want, _ = ref.relative_attention(query, value, encoding, ref.relative_weights(layer), biases=biases, mask=mask)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


def test_contract_multi_head_relative(tmp_path):
    x = _arrays()
    check_layer(
        MultiHeadRelativeAttention,
        dict(num_heads=N, key_dim=H, value_dim=3, dropout=0.1, use_bias=True),
        args=[x["query"], _normal(B, T, D)],
        kwargs=dict(relative_position_encoding=x["encoding"], state=x["state"], attention_mask=x["mask"]),
        static_kwargs=dict(return_attention_scores=True),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D), (B, N, T, M + T)],
        expected_trainable=9,  # q/k/v/out kernels and biases, the encoding projection
        expected_non_trainable=0,
    )


def test_contract_two_stream(tmp_path):
    x = _arrays()
    mapping = np.broadcast_to(np.eye(T, dtype="float32")[[1, 0]], (B, 2, T)).copy()
    check_layer(
        TwoStreamRelativeAttention,
        dict(num_heads=N, key_dim=H, dropout=0.1),
        args=[x["query"], _normal(B, 2, D)],
        kwargs=dict(
            relative_position_encoding=x["encoding"],
            target_mapping=mapping,
            state=x["state"],
            content_attention_mask=x["mask"],
            query_attention_mask=_mask(B, T, M + T),
        ),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D), (B, 2, D)],
        expected_trainable=9,
        expected_non_trainable=0,
    )


def test_contract_sinusoidal_relative(tmp_path):
    check_layer(
        SinusoidalRelativeAttention,
        dict(num_heads=N, key_dim=H, clamp_len=4),
        args=[_normal(B, T, D), _normal(B, T + 1, D)],
        kwargs=dict(attention_mask=_mask(B, T, T + 1)),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        expected_trainable=11,  # 9 as above, the content and positional biases
        expected_non_trainable=0,
    )


def test_bad_arguments_raise_nlpkit_error():
    x = _arrays(memory=False)
    with pytest.raises(NlpkitError, match="attention_axes"):
        MultiHeadRelativeAttention(num_heads=N, key_dim=H, attention_axes=(1, 2))
    layer = MultiHeadRelativeAttention(num_heads=N, key_dim=H)
    with pytest.raises(NlpkitError, match="relative_position_encoding"):
        layer(x["query"], x["query"])
    with pytest.raises(NlpkitError, match="segment_encoding"):
        layer(
            x["query"],
            x["query"],
            relative_position_encoding=x["encoding"],
            segment_matrix=np.ones((B, T, T), bool),
        )
