"""Task models: config and .keras round trips, the masked token loss, task/head checks, and a few
training steps on real data (health headlines, movie-snippet ratings, WSJ chunks) where the loss falls."""


import keras
import numpy as np
import pytest

from nlpkit.data.bundled import bert_vocab_path
from nlpkit.data.labelled import TextPacker
from nlpkit.encoders.bert import BertEncoder
from nlpkit.errors import NlpkitError
from nlpkit.models import tasks
from nlpkit.training import tasks as recipes
from nlpkit.data import token_tags as recipes_tags
from tests.task_fixtures import write_labelled_csv as _csv

SEQ = 32


def _encoder():
    return BertEncoder(vocab_size=30522, hidden_size=32, num_layers=1, num_attention_heads=2, inner_dim=64,
                       max_sequence_length=64, output_dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def packer():
    return TextPacker(bert_vocab_path(), SEQ)




def _multilabel_file(tmp_path):
    from nlpkit.data.targets import health_headline_sources

    rows = health_headline_sources()
    multi = [r for r in rows if len(r[1]) > 1][:32]
    single = [r for r in rows if len(r[1]) == 1 and r[1][0] in {"reuters_health", "foxnewshealth"}][:32]
    return _csv(tmp_path / "headlines.csv", [(text, "|".join(labels)) for text, labels in multi + single])


def _regression_file(tmp_path):
    from nlpkit.data.bundled import movie_snippet_ratings

    return _csv(tmp_path / "ratings.csv", movie_snippet_ratings()[:64])


def _token_file(tmp_path):
    from nlpkit.data.token_tags import write_chunking_sample

    return write_chunking_sample(tmp_path / "chunks.conll")


def _prepared(task_name, tmp_path, packer):
    task = recipes.get_task(task_name)
    path = {"multi-label": _multilabel_file, "regression": _regression_file,
            "token-classification": _token_file}[task_name](tmp_path)
    options = {"label_separator": "|"} if task_name == "multi-label" else {}
    examples = task.read(path, **options)
    encoding = task.fit_encoding(examples)
    return task, examples, encoding, task.prepare(examples, encoding, packer)


@pytest.mark.parametrize("task_name", ["multi-label", "regression", "token-classification"])
def test_a_few_steps_on_real_data_lower_the_loss_and_outputs_decode(task_name, tmp_path, packer):
    task, examples, encoding, prepared = _prepared(task_name, tmp_path, packer)
    model = task.build_model(_encoder(), encoding, dropout_rate=0.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=task.loss())
    before = model.evaluate(prepared.inputs, prepared.targets, batch_size=16, verbose=0)
    model.fit(prepared.inputs, prepared.targets, batch_size=16, epochs=4, verbose=0, shuffle=False)
    after = model.evaluate(prepared.inputs, prepared.targets, batch_size=16, verbose=0)
    assert after < 0.8 * before
    outputs = task.outputs(model, prepared)
    encoding = task.calibrate(outputs, prepared, encoding)
    metrics = task.metrics(outputs, prepared, examples, encoding)
    rows = task.decode(outputs, prepared, examples, encoding)
    assert len(rows) == len(examples)
    if task_name == "regression":
        assert np.isfinite(metrics["rmse"]) and -4.5 < rows[0]["value"] < 4.5
    elif task_name == "multi-label":
        assert 0.0 <= metrics["micro_f1"] <= 1.0 and set(rows[0]["probabilities"]) == set(encoding.names)
    else:
        assert 0.0 <= metrics["f1"] <= 1.0 and len(rows[0]["tags"]) == len(examples[0].tokens)
        for entity in rows[0]["entities"]:
            assert entity["text"] == " ".join(examples[0].tokens[entity["words"][0]:entity["words"][1]])


def _inputs(batch=3, length=SEQ):
    rng = np.random.default_rng(0)
    mask = (np.arange(length)[None, :] < rng.integers(3, length, batch)[:, None]).astype("int32")
    return {"input_word_ids": (rng.integers(1000, 5000, (batch, length)) * mask).astype("int32"),
            "input_mask": mask, "input_type_ids": np.zeros_like(mask)}


@pytest.mark.parametrize("build", [
    lambda: tasks.MultiLabelClassifier(_encoder(), num_labels=4, pooling="mean", dropout_rate=0.2),
    lambda: tasks.TextRegressor(_encoder(), inner_dim=16),
    lambda: tasks.TokenTagger(_encoder(), num_tags=5, dropout_rate=0.3),
])
def test_config_and_keras_file_round_trip(build, tmp_path):
    model = build()
    inputs = _inputs()
    model(inputs)
    config = model.get_config()
    assert type(model).from_config(config).get_config() == config
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    for name, value in model.predict_outputs(inputs).items():
        np.testing.assert_allclose(np.asarray(restored.predict_outputs(inputs)[name]), np.asarray(value), atol=1e-6)


@pytest.mark.parametrize("model_class, options", [
    (tasks.MultiLabelClassifier, {"num_labels": 3}), (tasks.TextRegressor, {}), (tasks.TokenTagger, {"num_tags": 4})])
def test_mixed_precision_outputs_are_float32(model_class, options):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = model_class(_encoder(), **options)
    outputs = model.predict_outputs(_inputs())
    assert all(keras.backend.standardize_dtype(v.dtype) in ("float32", "int32") for v in outputs.values())
    assert keras.backend.standardize_dtype(model(_inputs()).dtype) == "float32"


def test_token_loss_is_the_mean_cross_entropy_over_labelled_positions():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 3)).astype("float32")
    labels = np.array([[-100, 2, 0, -100], [-100, 1, -100, -100]])
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    kept = labels != -100
    want = -np.mean(log_p[kept, labels[kept]])
    assert float(tasks.token_loss()(labels, logits)) == pytest.approx(want, rel=1e-5)


def test_task_head_combinations():
    assert recipes.check_task_head("multi-label") == "classification"
    assert recipes.check_task_head("regression") == "regression"
    assert recipes.check_task_head("classification", "sngp") == "sngp"
    with pytest.raises(NlpkitError, match="--task regression does not take --head 'sngp'"):
        recipes.check_task_head("regression", "sngp")
    with pytest.raises(NlpkitError, match="--task token-classification does not take --head 'sngp'"):
        recipes.check_task_head("token-classification", "sngp")
    with pytest.raises(NlpkitError, match="--task 'ner' is not known"):
        recipes.get_task("ner")


def test_raw_text_prediction_gives_entities_with_offsets(tmp_path, packer):
    task = recipes.get_task("token-classification")
    encoding = recipes_tags.TagEncoding(["O", "B-NP", "I-NP"])
    model = task.build_model(_encoder(), encoding)
    sentences = task.from_texts(["Rockwell International Corp. 's Tulsa unit said it signed a tentative agreement."])
    prepared = task.prepare(sentences, encoding, packer, with_targets=False)
    outputs = {"label": np.where(prepared.alignment.word_index >= 0, 1, 0)}  # every word starts an NP
    row = task.decode(outputs, prepared, sentences, encoding)[0]
    assert row["tags"] == ["B-NP"] * len(sentences[0].tokens)
    text = sentences[0].text
    assert [text[e["start"]:e["end"]] for e in row["entities"]] == sentences[0].tokens
