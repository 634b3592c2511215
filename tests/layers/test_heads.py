import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.embeddings import OnDeviceEmbedding
from nlpkit.layers.heads import ClassificationHead, MaskedLM, MatMulWithMargin, pool_sequence
from tests.layers import reference
from tests.layers.blocks.block_reference import layer_norm
from tests.layers.harness import check_layer
from tests.layers.model_garden_config import assert_config_holds_arguments

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


def _masked_lm_reference(head, table, sequence, positions, activation, output):
    """NumPy: gather, dense + activation, layer norm, tied projection + bias (log-softmax for predictions)."""
    gathered = np.take_along_axis(sequence, positions[:, :, None], axis=1)
    hidden = activation(reference.dense(gathered, np.asarray(head.transform.kernel), np.asarray(head.transform.bias)))
    logits = layer_norm(hidden, head.layer_norm) @ np.asarray(table).T + np.asarray(head.bias)
    return _log_softmax(logits) if output == "predictions" else logits


@pytest.mark.parametrize("output", ["logits", "predictions"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_masked_lm_model_garden_form_matches_numpy_reference(output, activation):
    sequence, positions = _sequence(), _positions()
    embedding = _embedding()
    head = MaskedLM(embedding_table=embedding.embeddings, activation=activation, output=output)
    out = np.asarray(head(sequence, positions))
    numpy_activation = (lambda x: np.maximum(x, 0)) if activation == "relu" else (lambda x: x)
    want = _masked_lm_reference(head, embedding.embeddings, sequence, positions, numpy_activation, output)
    np.testing.assert_allclose(out, want, atol=1e-5)
    assert (out.dtype == np.float32) if output == "predictions" else True


def test_masked_lm_model_garden_form_defaults_to_no_activation_and_logits():
    sequence, positions = _sequence(), _positions()
    embedding = _embedding()
    head = MaskedLM(embedding_table=embedding.embeddings)  # Model Garden: activation=None, output="logits"
    out = np.asarray(head(sequence, positions))
    want = _masked_lm_reference(head, embedding.embeddings, sequence, positions, lambda x: x, "logits")
    np.testing.assert_allclose(out, want, atol=1e-5)
    assert MaskedLM(embedding).get_config()["activation"] == "gelu"  # nlpkit's form keeps BERT's gelu


@pytest.mark.parametrize("output", ["logits", "predictions"])
def test_both_forms_with_the_same_weights_give_the_same_outputs(output):
    sequence, positions = _sequence(), _positions()
    embedding = _embedding()
    ours = MaskedLM(embedding, activation="relu", output_type=output)
    theirs = MaskedLM(embedding_table=embedding.embeddings, activation="relu", output=output)
    want = np.asarray(ours(sequence, positions))
    theirs(sequence, positions)
    by_name = {w.path.split("/", 1)[1]: w for w in ours.weights if w is not embedding.embeddings}
    for weight in theirs.weights:
        if weight is not embedding.embeddings:
            weight.assign(by_name[weight.path.split("/", 1)[1]])
    np.testing.assert_allclose(np.asarray(theirs(sequence, positions)), want, atol=1e-6)


def test_masked_lm_model_garden_form_shares_a_variable_and_copies_an_array():
    sequence, positions = _sequence(), _positions()
    embedding = _embedding()
    shared = MaskedLM(embedding_table=embedding.embeddings)
    before = np.asarray(shared(sequence, positions))
    embedding.embeddings.assign(np.asarray(embedding.embeddings) * 2.0)
    assert not np.allclose(np.asarray(shared(sequence, positions)), before)
    assert shared.embedding_table is embedding.embeddings
    table = rng.normal(size=(V, D)).astype("float32")
    copied = MaskedLM(embedding_table=table)
    copied(sequence, positions)
    np.testing.assert_array_equal(np.asarray(copied.embedding_table), table)
    assert copied.embedding_table in copied.trainable_weights


@pytest.mark.parametrize("shared_variable", [True, False], ids=["variable", "array"])
def test_masked_lm_model_garden_form_contract(tmp_path, shared_variable):
    embedding = _embedding()
    table = embedding.embeddings if shared_variable else rng.normal(size=(V, D)).astype("float32")
    check_layer(
        MaskedLM,
        dict(embedding_table=table, activation="relu", output="predictions"),
        args=[_sequence(), _positions()],
        tmp_path=tmp_path,
        expected_shapes=[(B, P, V)],
        expected_trainable=6,  # the table, output bias, transform kernel and bias, norm 2
        expected_non_trainable=0,
        float32_outputs=(0,),
    )


def test_masked_lm_builds_from_model_garden_arguments_and_config_round_trips():
    sequence, positions = _sequence(), _positions()
    embedding = _embedding()
    arguments = dict(  # Model Garden's MaskedLM arguments (masked_lm.py), every one given
        embedding_table=embedding.embeddings,
        activation="relu",
        initializer="he_normal",
        output="predictions",
        name="cls_predictions",
    )
    head = MaskedLM(**arguments)
    want = np.asarray(head(sequence, positions))
    # A variable is not configuration: the config records the table's shape and dtype.
    config = assert_config_holds_arguments(head, arguments, unchecked=("embedding_table",))
    assert config["embedding_table"] == {"shape": [V, D], "dtype": "float32"} and config["embedding_layer"] is None
    assert config["output_type"] == "predictions"
    rebuilt = MaskedLM.from_config(config)
    rebuilt(sequence, positions)
    rebuilt.set_weights(head.get_weights())
    np.testing.assert_allclose(np.asarray(rebuilt(sequence, positions)), want, atol=1e-6)
    ours = MaskedLM(embedding, output_type="predictions").get_config()
    assert ours["embedding_table"] is None and ours["output"] == "predictions"
    assert MaskedLM.from_config(ours).get_config() == ours


def test_masked_lm_form_rejections():
    embedding = _embedding()
    with pytest.raises(NlpkitError, match="exactly one"):
        MaskedLM(embedding, embedding_table=embedding.embeddings)
    with pytest.raises(NlpkitError, match="exactly one"):
        MaskedLM()
    with pytest.raises(NlpkitError, match="disagree"):
        MaskedLM(embedding, output_type="logits", output="predictions")
    with pytest.raises(NlpkitError, match="output_type"):
        MaskedLM(embedding_table=embedding.embeddings, output="probs")


def test_masked_lm_model_garden_form_in_a_saved_model_reloads_its_values(tmp_path):
    ids = keras.Input(shape=(T,), dtype="int32")
    positions = keras.Input(shape=(P,), dtype="int32")
    embedding = OnDeviceEmbedding(V, D, name="tokens")
    embedding.build((None, T))
    logits = MaskedLM(embedding_table=embedding.embeddings, name="mlm")(embedding(ids), positions)
    model = keras.Model([ids, positions], logits)
    # One table: the head's weight and the embedding's are one variable, counted once.
    assert len(model.trainable_weights) == len({id(w) for w in model.trainable_weights}) == 6
    feed = [rng.integers(0, V, size=(B, T)).astype("int32"), _positions()]
    expected = np.asarray(model(feed))
    path = str(tmp_path / "table_form.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(feed)), expected, atol=1e-6)
    # Documented: the head comes back with its own copy of the table, not tied to the embedding.
    head_table = loaded.get_layer("mlm").embedding_table
    np.testing.assert_array_equal(np.asarray(head_table), np.asarray(loaded.get_layer("tokens").embeddings))
