"""`nlpkit build`: preset or config -> summary + model directory; bad input -> NlpkitError."""

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

import nlpkit
from commands.main import app
from nlpkit.data import bundled
from nlpkit.errors import NlpkitError
from tests.cli import run_cli

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    """Rich would wrap and truncate at the runner's 80 columns."""
    from commands.common import console

    monkeypatch.setattr(console, "width", 250)


def _vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(60)]) + "\n")
    return path


def test_build_from_config_prints_summary_and_writes_a_loadable_directory(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("kind: bert\nvocab_size: 64\nhidden_size: 16\nnum_layers: 2\nnum_attention_heads: 2\ninner_dim: 32\n")
    result = runner.invoke(app, ["build", "--config", str(config), "--output", str(tmp_path / "m"), "--vocab", str(_vocab(tmp_path))])
    assert result.exit_code == 0, result.output
    # Parameters: embeddings (64 + 512 + 2) * 16 + norm 32; per block 4 * (16*16 + 16) + 2 * 32
    # + (16*32 + 32) + (32*16 + 16) + 32 = 2224; pooler 16*16 + 16.
    parameters = (64 + 512 + 2) * 16 + 32 + 2 * 2224 + 272
    assert f"parameters: {parameters:,}" in result.output
    # FLOPs per token at T=128: 2 x (per-token kernels: 2 blocks x (4*256 + 2*512)) + 2 layers x 4 x 128 x 16.
    assert f"FLOPs per token at T=128: {2 * 2 * (4 * 256 + 2 * 512) + 2 * 4 * 128 * 16:,}" in result.output
    assert "transformer_layer_1" in result.output
    ids = np.array([[2, 5, 6, 3]], "int32")
    outputs = nlpkit.load_model(tmp_path / "m")(dict(input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=0 * ids))
    assert np.asarray(outputs["sequence_output"]).shape == (1, 4, 16)


def test_build_preset_takes_the_bundled_vocab_and_fine_tunes_without_vocab(tmp_path, capsys):
    result = runner.invoke(app, ["build", "--preset", "bert_tiny", "--output", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "parameters: 4,385,920" in result.output  # BERT-Tiny as published (4.4 M)
    assert "tokenizer: the bundled BERT vocab" in result.output
    assert (tmp_path / "m" / "model.weights.h5").is_file()
    assert (tmp_path / "m" / "vocab.txt").read_bytes() == bundled.bert_vocab_path().read_bytes()
    train = tmp_path / "train.csv"
    with open(train, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("text", "label"), *bundled.reviews()[:48]])
    code, _, err = run_cli(capsys, "finetune", "--model", tmp_path / "m", "--train", train, "--output", tmp_path / "cls",
                           "--epochs", 1, "--seq-length", 16, "--batch-size", 16)
    assert code == 0, err
    assert (tmp_path / "cls" / "vocab.txt").read_bytes() == bundled.bert_vocab_path().read_bytes()


def test_a_model_of_another_vocab_size_needs_vocab_at_build_time(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("kind: bert\nvocab_size: 64\nhidden_size: 16\nnum_layers: 1\nnum_attention_heads: 2\ninner_dim: 32\n")
    code, _, err = run_cli(capsys, "build", "--config", config, "--output", tmp_path / "m")
    assert code == 2 and not (tmp_path / "m").exists()
    assert f"--config {config} has vocab_size 64, not the bundled BERT vocab's 30522" in err
    assert "pass --vocab" in err and "Traceback" not in err


def test_list_shows_every_registry_entry_with_its_arguments(capsys, monkeypatch):
    import inspect

    from commands.common import console
    from nlpkit import registry
    from nlpkit.layers.attention.kernel import KernelAttention

    monkeypatch.setattr(console, "width", 400)  # one row per entry
    code, out, err = run_cli(capsys, "build", "--list")
    assert code == 0, err
    for kind in ("preset", "encoder", "block", "attention", "inner_attention"):
        for name in registry.names(kind):
            assert f"│ {name} " in out, (kind, name)
    # the arguments come from the constructor's own signature
    default = inspect.signature(KernelAttention.__init__).parameters["num_random_features"].default
    kernel_row = next(line for line in out.splitlines() if line.startswith("│ kernel "))
    assert f"num_random_features={default!r}" in kernel_row
    assert "vocab_size=30522" in next(line for line in out.splitlines() if line.startswith("│ bert_tiny "))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--preset", "bert_tinny"], "did you mean 'bert_tiny'"),
        ([], "exactly one of --preset NAME or --config FILE"),
        (["--preset", "bert_tiny", "--config", "x.yaml"], "exactly one of"),
    ],
)
def test_build_errors(tmp_path, arguments, message):
    result = runner.invoke(app, ["build", *arguments, "--output", str(tmp_path / "m")])
    assert isinstance(result.exception, NlpkitError) and message in str(result.exception)
    assert not (tmp_path / "m").exists()
