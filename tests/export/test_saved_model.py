"""`nlpkit export`: the SavedModel runs without nlpkit and matches the in-process model."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.classifier_fixtures import finetune_args, write_easy_task
from tests.cli import run_cli, run_cli_ok

# Trained in float32: the ≤ 1e-5 comparisons are of one model's float32 outputs through two runtimes
# (a bfloat16 model, what --precision auto picks on a CPU with bf16 units, differs by its rounding).
FLOAT32 = ["--precision", "float32"]

SENTENCES = [
    "The central bank raised interest rates on Wednesday.",
    "A warm, funny and quietly devastating film.",
    "Über-long, self-indulgent, and a little bit boring.",
]

# Runs in a fresh interpreter that imports only tensorflow and tensorflow_text.
SERVE_SCRIPT = """
import json, sys
import numpy as np, tensorflow as tf, tensorflow_text  # noqa: F401
served = tf.saved_model.load(sys.argv[1])
texts = tf.constant(json.loads(sys.argv[2]))
example = lambda t: tf.train.Example(features=tf.train.Features(feature={
    "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()]))})).SerializeToString()
out = {
    "serving_default": served.signatures["serving_default"](text=texts),
    "serve_examples": served.signatures["serve_examples"](examples=tf.constant([example(t) for t in json.loads(sys.argv[2])])),
    "encode": served.signatures["encode"](text=texts),
}
print(json.dumps({sig: {k: v.numpy().tolist() if v.dtype != tf.string else [s.decode() for s in v.numpy()]
                        for k, v in res.items()} for sig, res in out.items()}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    task = write_easy_task(tmp_path_factory.mktemp("task"), per_class=60, test_per_class=20)
    root = tmp_path_factory.mktemp("export")
    model_dir, served = root / "cls", root / "served"
    for args in (finetune_args(task, model_dir, epochs=1) + FLOAT32, ["export", "--model", model_dir, "--output", served]):
        run_cli_ok(*args)
    return model_dir, served


def _in_process(model_dir):
    from nlpkit.models.inference import InferenceModel

    classifier = InferenceModel(model_dir)
    inputs = classifier.packer.pack(SENTENCES)
    outputs = {k: np.asarray(v) for k, v in classifier.model.predict_outputs(inputs).items()}
    outputs["raw_logits"] = np.asarray(classifier.model.head_outputs(inputs)["logits"])
    encoded = classifier.model.encoder(inputs, training=False)
    return classifier, outputs, {k: np.asarray(encoded[k]) for k in ("pooled_output", "sequence_output")}


def _softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _temperature(model_dir):
    """The fitted temperature, read from config.json as a user would (not through nlpkit)."""
    document = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    temperature = document["keras_model"]["config"]["temperature"]
    assert document["head"]["calibration"]["value"] == temperature != 1.0  # calibration is exercised
    return temperature


def _serve_in_fresh_process(served, model_dir, tmp_path):
    """The SERVE_SCRIPT's outputs for SENTENCES, run while `model_dir` is gone (the export must not point at it)."""
    moved = tmp_path / "moved"
    shutil.copytree(model_dir, moved)
    shutil.rmtree(model_dir)
    try:
        done = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, str(served), json.dumps(SENTENCES)],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        shutil.copytree(moved, model_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nlpkit" not in done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_export_serves_raw_text_without_nlpkit_after_model_dir_is_gone(exported, tmp_path):
    model_dir, served = exported
    classifier, want, want_encoded = _in_process(model_dir)
    got = _serve_in_fresh_process(served, model_dir, tmp_path)
    for signature in ("serving_default", "serve_examples"):
        out = got[signature]
        np.testing.assert_allclose(out["logits"], want["logits"], atol=1e-5)
        np.testing.assert_allclose(out["probabilities"], want["probabilities"], atol=1e-5)
        assert out["label"] == [classifier.labels[i] for i in want["label"]]
    for name, value in want_encoded.items():
        np.testing.assert_allclose(got["encode"][name], value, atol=1e-5)
    # The export applies the directory's calibration: softmax(raw logits / T), in NumPy here.
    want_calibrated = _softmax(want["raw_logits"].astype("float64") / _temperature(model_dir))
    np.testing.assert_allclose(got["serving_default"]["probabilities"], want_calibrated, atol=1e-5)


@pytest.fixture(scope="module")
def exported_sentencepiece(tmp_path_factory):
    """A classifier fine-tuned from a model directory whose tokenizer is the bundled (real, 32768-piece) SentencePiece model."""
    from nlpkit.data.bundled import spm_model_path

    task = write_easy_task(tmp_path_factory.mktemp("task"), per_class=60, test_per_class=20)
    encoder = {**json.loads((task / "encoder.json").read_text(encoding="utf-8")), "vocab_size": 32768}
    (task / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    root = tmp_path_factory.mktemp("export_spm")
    base, model_dir, served = root / "base", root / "cls", root / "served"
    finetune = finetune_args(task, model_dir, epochs=1) + FLOAT32
    finetune[1:3] = ["--model", base]  # start from the SentencePiece model directory, not the preset
    for args in (["build", "--config", task / "encoder.json", "--vocab", spm_model_path(), "--output", base],
                 finetune, ["export", "--model", model_dir, "--output", served]):
        run_cli_ok(*args)
    return model_dir, served


def test_sentencepiece_export_serves_raw_text_like_predict(exported_sentencepiece, tmp_path, capsys):
    model_dir, served = exported_sentencepiece
    assert json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["tokenizer"]["type"] == "sentencepiece"
    code, predicted, err = run_cli(capsys, "predict", "--model", model_dir, *SENTENCES)
    assert code == 0, err
    want = [json.loads(line) for line in predicted.splitlines()]
    moved_export = tmp_path / "served-elsewhere"
    shutil.copytree(served, moved_export)  # nor at where it was written (nor at the bundled .model: bytes, not a path)
    got = _serve_in_fresh_process(moved_export, model_dir, tmp_path)
    labels = list(want[0]["probabilities"])
    for signature in ("serving_default", "serve_examples"):
        out = got[signature]
        assert out["label"] == [row["label"] for row in want]
        np.testing.assert_allclose(out["probabilities"], [[row["probabilities"][k] for k in labels] for row in want],
                                   atol=1e-5)


def test_saved_model_cli_lists_signatures(exported):
    _, served = exported
    cli = shutil.which("saved_model_cli", path=str(__import__("pathlib").Path(sys.executable).parent))
    done = subprocess.run([cli, "show", "--dir", str(served), "--all"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("serving_default", "serving_pair", "serve_examples", "encode"):
        assert f"signature_def['{name}']" in done.stdout


def test_predict_with_saved_model_equals_model_dir(exported, capsys):
    model_dir, served = exported
    code, from_dir, err = run_cli(capsys, "predict", "--model", model_dir, *SENTENCES)
    assert code == 0, err
    code, from_export, err = run_cli(capsys, "predict", "--saved-model", served, *SENTENCES)
    assert code == 0, err
    for a, b in zip(from_dir.splitlines(), from_export.splitlines()):
        a, b = json.loads(a), json.loads(b)
        assert a["label"] == b["label"]
        for label, p in a["probabilities"].items():
            assert b["probabilities"][label] == pytest.approx(p, abs=1e-5)


def test_export_refuses_to_overwrite_without_force(exported, capsys):
    model_dir, served = exported
    code, _, err = run_cli(capsys, "export", "--model", model_dir, "--output", served)
    assert code == 2 and "already exists" in err


@pytest.fixture(scope="module")
def exported_sngp(tmp_path_factory):
    task = write_easy_task(tmp_path_factory.mktemp("task"), per_class=60, test_per_class=20)
    root = tmp_path_factory.mktemp("export_sngp")
    model_dir, served = root / "sngp", root / "served"
    for args in (finetune_args(task, model_dir, head="sngp", epochs=1) + FLOAT32,
                 ["export", "--model", model_dir, "--output", served]):
        run_cli_ok(*args)
    return model_dir, served


def _ece(probs, labels, bins=15):
    """ECE over 15 equal-width (lo, hi] confidence bins, written out here as the reference."""
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
               for b in range(bins) if (which == b).any())


@pytest.mark.parametrize("fixture", ["exported", "exported_sngp"])
def test_calibrated_model_gives_the_same_in_evaluate_predict_and_the_saved_model(fixture, request, tmp_path, capsys):
    model_dir, served = request.getfixturevalue(fixture)
    document = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    calibration, classes = document["head"]["calibration"], document["head"]["labels"]
    assert calibration["value"] not in (1.0, 3.14159265 / 8.0)  # a fitted value, not the raw default
    code, predicted, err = run_cli(capsys, "predict", "--model", model_dir, *SENTENCES)
    assert code == 0, err
    rows = [json.loads(line) for line in predicted.splitlines()]
    got = _serve_in_fresh_process(served, model_dir, tmp_path)["serving_default"]
    probs = np.asarray(got["probabilities"], dtype="float64")
    np.testing.assert_allclose(probs, [[row["probabilities"][k] for k in classes] for row in rows], atol=1e-5)
    assert got["label"] == [row["label"] for row in rows]

    truth = np.array([classes.index(label) for label in ("news", "review", "review")])
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{classes[i]}\n' for t, i in zip(SENTENCES, truth)), encoding="utf-8")
    code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", data, "--json", tmp_path / "m.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["nll"] == pytest.approx(-np.mean(np.log(probs[np.arange(3), truth])), abs=1e-5)
    assert metrics["ece"] == pytest.approx(_ece(probs, truth), abs=1e-5)
    # Undo the calibration on the served log-probabilities (softmax ignores a per-row constant).
    if "variance" in got:
        variance = np.asarray(got["variance"], dtype="float64")[:, None]
        raw_logits = np.log(probs) * np.sqrt(1 + calibration["value"] * variance) / np.sqrt(1 + 3.14159265 / 8 * variance)
    else:
        raw_logits = np.log(probs) * calibration["value"]
    assert metrics["ece_raw"] == pytest.approx(_ece(_softmax(raw_logits), truth), abs=1e-5)
