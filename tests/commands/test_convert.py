"""`nlpkit convert`: accounting table, failure on unused tensors, export back to HF."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from commands.main import app
from nlpkit.errors import NlpkitError
from tests.encoders import bert_reference as ref

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    """Rich would wrap and truncate at the runner's 80 columns."""
    from commands.common import console

    monkeypatch.setattr(console, "width", 250)
TENSORS = ref.random_bert_tensors(np.random.default_rng(1))


def _hf_folder(path, extra=None):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(ref.hf_config()))
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"t{i}" for i in range(36)]) + "\n")
    save_file({**TENSORS, **(extra or {})}, str(path / "model.safetensors"))
    return path


def test_convert_prints_the_accounting_table_and_exports_back(tmp_path):
    source = _hf_folder(tmp_path / "hf")
    result = runner.invoke(app, ["convert", str(source), "--output", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "weight accounting" in result.output and "encoder.layer.1.output.dense.weight" in result.output
    assert f"set {len(TENSORS)} variables" in result.output
    result = runner.invoke(app, ["convert", str(tmp_path / "m"), "--to", "hf", "--output", str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    exported = load_file(tmp_path / "back" / "model.safetensors")
    assert all(np.array_equal(exported[name], value) for name, value in TENSORS.items()) and len(exported) == len(TENSORS)


def test_unused_tensor_fails_with_the_table_unless_allowed(tmp_path):
    source = _hf_folder(tmp_path / "hf", extra={"cls.predictions.bias": np.zeros(40, "float32")})
    result = runner.invoke(app, ["convert", str(source), "--output", str(tmp_path / "m")])
    assert isinstance(result.exception, NlpkitError) and "unused 'cls.predictions.bias'" in str(result.exception)
    assert "cls.predictions.bias" in result.output and "unused" in result.output  # the failing rows, printed
    assert not (tmp_path / "m").exists()
    result = runner.invoke(app, ["convert", str(source), "--output", str(tmp_path / "m"), "--allow-unused", "cls.*"])
    assert result.exit_code == 0, result.output
    assert "1 allowed unused" in result.output
