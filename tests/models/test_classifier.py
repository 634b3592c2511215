"""TextClassifier: per-head pooling and dropout defaults, padding invariance of mean pooling, old configs."""

import keras
import numpy as np
import pytest

from nlpkit.encoders.bert import BertEncoder
from nlpkit.models.classifier import TextClassifier

T = 7


def _encoder():
    return BertEncoder(vocab_size=50, hidden_size=16, num_layers=1, num_attention_heads=2, inner_dim=32,
                       max_sequence_length=T, output_dropout=0.0, attention_dropout=0.0)


def _inputs(lengths, filler):
    rng = np.random.default_rng(1)
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype("int32")
    ids = np.where(mask == 1, rng.integers(5, 50, size=mask.shape), filler).astype("int32")
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": np.zeros_like(mask)}


@pytest.mark.parametrize("head, pooling, dropout", [("classification", "cls", 0.1), ("sngp", "mean", 0.0)])
def test_head_defaults(head, pooling, dropout):
    model = TextClassifier(_encoder(), num_classes=2, head=head)
    assert (model.pooling, model.dropout_rate) == (pooling, dropout)
    assert (model.head_layer.pooling, model.head_layer.dropout_rate) == (pooling, dropout)
    explicit = TextClassifier(_encoder(), num_classes=2, head=head, pooling="cls", dropout_rate=0.3)
    assert (explicit.head_layer.pooling, explicit.head_layer.dropout_rate) == ("cls", 0.3)


@pytest.mark.parametrize("head", ["classification", "sngp"])
def test_mean_pooled_predictions_ignore_what_padding_holds(head):
    model = TextClassifier(_encoder(), num_classes=3, head=head, pooling="mean")
    padded_with_zeros, padded_with_words = _inputs([T, 3, 5], filler=0), _inputs([T, 3, 5], filler=17)
    first = model.predict_outputs(padded_with_zeros)
    second = model.predict_outputs(padded_with_words)
    np.testing.assert_allclose(np.asarray(first["logits"]), np.asarray(second["logits"]), atol=1e-5)


def test_config_saved_before_pooling_existed_loads_as_cls():
    model = TextClassifier(_encoder(), num_classes=2, head="sngp", pooling="cls", dropout_rate=0.1)
    config = model.get_config()
    config.pop("pooling")
    config["head_kwargs"] = {}
    restored = TextClassifier.from_config(config)
    assert restored.head_layer.pooling == "cls"


def test_round_trip_keeps_pooling(tmp_path):
    model = TextClassifier(_encoder(), num_classes=2, head="sngp")
    inputs = _inputs([T, 4], filler=0)
    model(inputs)  # built through call, as fine-tuning builds it
    want = np.asarray(model.predict_outputs(inputs)["logits"])
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.head_layer.pooling == "mean"
    np.testing.assert_allclose(np.asarray(restored.predict_outputs(inputs)["logits"]), want, atol=1e-5)


@pytest.mark.parametrize("head", ["classification", "sngp"])
def test_keras_file_restores_weights_of_a_model_only_used_through_predict_outputs(tmp_path, head):
    model = TextClassifier(_encoder(), num_classes=3, head=head)
    inputs = _inputs([T, 4], filler=0)
    want = model.predict_outputs(inputs)  # never called: Keras has no build config from `__call__`
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    got = restored.predict_outputs(inputs)
    for name in want:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]), atol=1e-6)
