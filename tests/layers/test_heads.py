import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.embeddings import OnDeviceEmbedding
from nlpkit.layers.heads import ClassificationHead, MaskedLM, MatMulWithMargin, pool_sequence
from tests.layers import reference
from tests.layers.blocks.block_reference import layer_norm
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)
B, T, P, D, V = 2, 6, 3, 8, 13


def _sequence():
    return rng.normal(size=(B, T, D)).astype("float32")


def _positions():
    return np.stack([rng.choice(T, size=P, replace=False) for _ in range(B)]).astype("int32")


def _embedding():
    embedding = OnDeviceEmbedding(V, D)
    embedding(np.zeros((1, 1), "int32"))
    return embedding


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_masked_lm_contract(tmp_path):
    check_layer(
        MaskedLM,
        dict(embedding_layer=_embedding(), activation="relu", output_type="predictions"),
        args=[_sequence(), _positions()],
        tmp_path=tmp_path,
        expected_shapes=[(B, P, V)],
        expected_trainable=6,  # output bias, the tied table, transform kernel and bias, norm 2
        expected_non_trainable=0,
        float32_outputs=(0,),  # documented: log-probabilities in float32
    )


@pytest.mark.parametrize("output_type", ["logits", "predictions"])
def test_masked_lm_matches_numpy_reference(output_type):
    sequence, positions = _sequence(), _positions()
    embedding = _embedding()
    head = MaskedLM(embedding, activation="relu", output_type=output_type)
    out = np.asarray(head(sequence, positions))
    gathered = np.take_along_axis(sequence, positions[:, :, None], axis=1)
    transformed = reference.dense(gathered, np.asarray(head.transform.kernel), np.asarray(head.transform.bias))
    hidden = np.maximum(transformed, 0)
    hidden = layer_norm(hidden, head.layer_norm)
    logits = hidden @ np.asarray(embedding.embeddings).T + np.asarray(head.bias)
    want = _log_softmax(logits) if output_type == "predictions" else logits
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_masked_lm_uses_the_live_table():
    sequence, positions = _sequence(), _positions()
    embedding = _embedding()
    head = MaskedLM(embedding)
    before = np.asarray(head(sequence, positions))
    embedding.embeddings.assign(np.asarray(embedding.embeddings) * 2.0)
    assert not np.allclose(np.asarray(head(sequence, positions)), before)


def _tied_model():
    ids = keras.Input(shape=(T,), dtype="int32")
    positions = keras.Input(shape=(P,), dtype="int32")
    embedding = OnDeviceEmbedding(V, D, name="tokens")
    logits = MaskedLM(embedding, name="mlm")(embedding(ids), positions)
    return keras.Model([ids, positions], logits)


def test_tied_embedding_survives_keras_save_and_load(tmp_path):
    model = _tied_model()
    feed = [rng.integers(0, V, size=(B, T)).astype("int32"), _positions()]
    expected = np.asarray(model(feed))
    path = str(tmp_path / "tied.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(feed)), expected, atol=1e-6)
    assert loaded.get_layer("mlm").embedding_layer is loaded.get_layer("tokens")
    # One table only: the head's variables do not duplicate the embedding's.
    unique_weights = {id(w) for w in loaded.trainable_weights}
    assert len(loaded.trainable_weights) == len(model.trainable_weights) == len(unique_weights)


def test_masked_lm_rejects_unbuilt_embedding_and_bad_output():
    with pytest.raises(NlpkitError, match="embedding layer"):
        MaskedLM(OnDeviceEmbedding(V, D))(_sequence(), _positions())
    with pytest.raises(NlpkitError, match="output_type"):
        MaskedLM(_embedding(), output_type="probs")


@pytest.mark.parametrize("inner_dim", [0, 5])
def test_classification_head_contract(tmp_path, inner_dim):
    check_layer(
        ClassificationHead,
        dict(inner_dim=inner_dim, num_classes=3, cls_token_idx=1, dropout_rate=0.1),
        args=[_sequence()],
        tmp_path=tmp_path,
        expected_shapes=[(B, 3)],
        expected_trainable=4 if inner_dim else 2,  # pooler and logits dense, or logits only
        expected_non_trainable=0,
    )


def test_classification_head_matches_numpy_reference():
    sequence = _sequence()
    head = ClassificationHead(inner_dim=5, num_classes=3, cls_token_idx=2)
    out = np.asarray(head(sequence))
    pooled = np.tanh(reference.dense(sequence[:, 2], np.asarray(head.pooler.kernel), np.asarray(head.pooler.bias)))
    want = reference.dense(pooled, np.asarray(head.classifier.kernel), np.asarray(head.classifier.bias))
    np.testing.assert_allclose(out, want, atol=1e-5)


def _padding_mask():
    lengths = np.array([T, 3])
    return (np.arange(T)[None, :] < lengths[:, None]).astype("int32")


def test_classification_head_mean_pooling_contract(tmp_path):
    check_layer(
        ClassificationHead,
        dict(inner_dim=5, num_classes=3, dropout_rate=0.1, pooling="mean"),
        args=[_sequence()],
        kwargs=dict(input_mask=_padding_mask()),
        tmp_path=tmp_path,
        expected_shapes=[(B, 3)],
        expected_trainable=4,
        expected_non_trainable=0,
    )


def test_mean_pooling_matches_numpy_and_ignores_padding():
    sequence, mask = _sequence(), _padding_mask()
    head = ClassificationHead(inner_dim=0, num_classes=3, pooling="mean")
    out = np.asarray(head(sequence, input_mask=mask))
    means = np.stack([sequence[i, : mask[i].sum()].mean(axis=0) for i in range(B)])
    want = reference.dense(means, np.asarray(head.classifier.kernel), np.asarray(head.classifier.bias))
    np.testing.assert_allclose(out, want, atol=1e-5)
    noisy = np.where(mask[..., None] == 1, sequence, 1e3 * _sequence())  # changed padded positions
    np.testing.assert_allclose(np.asarray(head(noisy, input_mask=mask)), out, atol=1e-5)


def test_pool_sequence_without_mask_and_all_padding_rows():
    sequence = _sequence()
    np.testing.assert_allclose(np.asarray(pool_sequence(sequence, "mean")), sequence.mean(axis=1), atol=1e-6)
    empty = np.zeros((B, T), "int32")  # no token at all: zeros, not NaN
    np.testing.assert_array_equal(np.asarray(pool_sequence(sequence, "mean", input_mask=empty)), 0.0)
    np.testing.assert_array_equal(np.asarray(pool_sequence(sequence, "cls", cls_token_idx=4)), sequence[:, 4])


def test_unknown_pooling_is_rejected():
    with pytest.raises(NlpkitError, match="pooling='max'"):
        ClassificationHead(inner_dim=0, num_classes=2, pooling="max")


def test_matmul_with_margin_contract(tmp_path):
    left, right = rng.normal(size=(4, D)).astype("float32"), rng.normal(size=(4, D)).astype("float32")
    check_layer(
        MatMulWithMargin,
        dict(logit_scale=2.0, logit_margin=0.3),
        args=[left, right],
        tmp_path=tmp_path,
        expected_shapes=[(4, 4), (4, 4)],
        train=False,  # no weights to train
        expected_trainable=0,
        expected_non_trainable=0,
    )


def test_matmul_with_margin_matches_explicit_scores():
    left, right = rng.normal(size=(4, D)).astype("float32"), rng.normal(size=(4, D)).astype("float32")
    left_logits, right_logits = MatMulWithMargin(logit_scale=2.0, logit_margin=0.3)(left, right)
    want = np.array([[2.0 * (left[i] @ right[j] - (0.3 if i == j else 0.0)) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(np.asarray(left_logits), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(right_logits), want.T, atol=1e-5)
