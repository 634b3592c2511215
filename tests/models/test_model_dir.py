"""Model directories: save/load round trips for every preset, tokenizer assets, damaged directories."""

import json
from pathlib import Path

import numpy as np
import pytest

import nlpkit
from nlpkit.data import bundled
from nlpkit.models.model_dir import load_model, save_model_dir, tokenizer_assets
from nlpkit.encoders.presets import available_presets, build_encoder, load_preset
from nlpkit.errors import NlpkitError

# Built in full: the small presets. The others keep every size but depth, vocabulary and
# position table, which only scale the tables (cheap to build, same code paths).
FULL = ("bert_tiny",)
def _config(name):
    config = load_preset(name)
    if name in FULL:
        return config
    cheap = {"vocab_size": 64, "num_layers": min(config["num_layers"], 2)}
    if "max_sequence_length" in config:
        cheap["max_sequence_length"] = 32
    return {**config, **cheap}


def _vocab(tmp_path, size=64):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(size - 5)]) + "\n")
    return path


def _inputs(vocab_size=64):
    ids = np.array([[2, 10, 11, 12, 3, 0], [2, 40, 3, 0, 0, 0]], "int32") % vocab_size
    return dict(input_word_ids=ids, input_mask=(ids > 0).astype("int32"), input_type_ids=np.zeros_like(ids))


@pytest.mark.parametrize("name", available_presets())
def test_round_trip_keeps_outputs(tmp_path, name):
    config = _config(name)
    encoder = build_encoder(config)
    inputs = _inputs(config["vocab_size"])
    want = encoder(inputs)
    save_model_dir(encoder, config, _vocab(tmp_path, config["vocab_size"]), tmp_path / "model")
    loaded = nlpkit.load_model(tmp_path / "model")
    assert type(loaded) is type(encoder)
    got = loaded(inputs)
    assert {"encoder_outputs", "pooled_output", "sequence_output"} <= set(got)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
    document = json.loads((tmp_path / "model" / "config.json").read_text())
    assert document["kind"] == config["kind"] and document["encoder"] == config


def test_tokenizer_assets_are_copied_in(tmp_path):
    config = _config("bert_tiny")
    save_model_dir(build_encoder(config), config, _vocab(tmp_path, 100), tmp_path / "wp", lower_case=False)
    assets = tokenizer_assets(tmp_path / "wp")
    assert assets["type"] == "wordpiece" and assets["lower_case"] is False
    assert assets["path"] == tmp_path / "wp" / "vocab.txt" and assets["path"].read_text() == (tmp_path / "vocab.txt").read_text()
    spm = bundled.spm_model_path()  # a real SentencePiece model (32768 pieces)
    config = {**config, "vocab_size": 32768}
    save_model_dir(build_encoder(config), config, spm, tmp_path / "sp")
    assert tokenizer_assets(tmp_path / "sp")["path"].read_bytes() == spm.read_bytes()
    save_model_dir(build_encoder(config), config, None, tmp_path / "none")
    assert tokenizer_assets(tmp_path / "none") is None


def test_head_info_is_kept(tmp_path):
    config = _config("bert_tiny")
    save_model_dir(build_encoder(config), config, None, tmp_path / "m", head={"kind": "classification", "num_classes": 3})
    assert json.loads((tmp_path / "m" / "config.json").read_text())["head"] == {"kind": "classification", "num_classes": 3}


def test_refusals_and_damaged_directories(tmp_path):
    config = _config("bert_tiny")
    encoder = build_encoder(config)
    save_model_dir(encoder, config, None, tmp_path / "m")
    with pytest.raises(NlpkitError, match="already exists"):
        save_model_dir(encoder, config, None, tmp_path / "m")
    save_model_dir(encoder, config, None, tmp_path / "m", overwrite=True)
    with pytest.raises(NlpkitError, match="has 200 tokens but the model's vocab_size is 64"):
        save_model_dir(build_encoder(_config("bert_mini")), _config("bert_mini"), _vocab(tmp_path, 200), tmp_path / "v")
    assert not (tmp_path / "v").exists()
    with pytest.raises(NlpkitError, match="is not a model directory"):
        load_model(tmp_path)
    (tmp_path / "m" / "model.weights.h5").unlink()
    with pytest.raises(NlpkitError, match="weights file model.weights.h5 is missing"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize("fixture", ["classifier_0_1_0", "sngp_0_1_0"])
def test_a_model_directory_written_before_the_redesign_loads_and_predicts_the_same(tmp_path, capsys, fixture):
    """`fixtures/classifier_0_1_0` was written by nlpkit as of commit d8e3370 (before the session-4
    redesign: one runtime, registry, mask path), `fixtures/sngp_0_1_0` (SNGP head, scaled random
    features) as of commit 106aae1, each with `nlpkit vocab` + `nlpkit finetune`; the
    `.predictions.jsonl` beside it is what that version's `nlpkit predict` printed for the same
    texts. The current code must read the folder as it is and give the same probabilities."""
    import json
    import shutil

    from tests.cli import run_cli

    fixtures = Path(__file__).parent / "fixtures"
    model = shutil.copytree(fixtures / fixture, tmp_path / "cls")  # the fixture stays untouched
    expected = [json.loads(line) for line in (fixtures / f"{fixture}.predictions.jsonl").read_text().splitlines()]
    code, out, err = run_cli(capsys, "predict", "--model", model, *[row["text"] for row in expected])
    assert code == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    assert [row["label"] for row in got] == [row["label"] for row in expected]
    for new, old in zip(got, expected, strict=True):
        assert new["probabilities"].keys() == old["probabilities"].keys()
        for label, probability in old["probabilities"].items():
            assert abs(new["probabilities"][label] - probability) <= 2e-6, (label, new, old)
        if "uncertainty" in old:
            assert abs(new["uncertainty"] - old["uncertainty"]) <= 2e-6, (new, old)
