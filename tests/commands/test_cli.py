"""The CLI skeleton: --version, --help everywhere, doctor, and how user errors are shown."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from commands import main
from nlpkit import __version__
from nlpkit.errors import NlpkitError


def run_cli(args, capsys, monkeypatch):
    """Run `nlpkit ARGS` in this process through the real entry point; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["nlpkit", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as done:
        main.run()
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def test_version(capsys, monkeypatch):
    code, out, _ = run_cli(["--version"], capsys, monkeypatch)
    assert code == 0 and out.strip() == f"nlpkit {__version__}"


def test_help_on_every_registered_command():
    runner = CliRunner()
    names = [command.name or command.callback.__name__ for command in main.app.registered_commands]
    assert {"doctor", "vocab", "tokenize"} <= set(names)
    for name in names:
        result = runner.invoke(main.app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output


def test_doctor_lists_versions(capsys, monkeypatch):
    code, out, _ = run_cli(["doctor"], capsys, monkeypatch)
    assert code == 0
    for component in ("python", "tensorflow", "tensorflow-text", "keras", "datasets"):
        assert component in out


def test_user_error_is_one_line_exit_2(capsys, monkeypatch, tmp_path):
    code, out, err = run_cli(["tokenize", tmp_path / "missing.txt", "--vocab", "v.txt", "--output", tmp_path / "o"],
                             capsys, monkeypatch)
    assert code == 2
    assert err.strip().splitlines() == [f"error: input {tmp_path / 'missing.txt'} does not exist "
                                        "(pass a text/csv/json(l)/parquet file or a folder)"]
    assert "Traceback" not in out + err


def test_debug_shows_the_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["nlpkit", "--debug", "tokenize", str(tmp_path / "missing.txt"),
                                      "--vocab", "v.txt", "--output", str(tmp_path / "o")])
    with pytest.raises(NlpkitError, match="does not exist"):
        main.run()
    main.common.STATE["debug"] = False


def test_real_process_prints_only_the_error_line(tmp_path):
    """A subprocess, so TensorFlow's import-time native log lines would show if they leaked."""
    (tmp_path / "in.txt").write_text("hello\n")
    result = subprocess.run(
        [sys.executable, "-m", "commands.main", "tokenize", str(tmp_path / "in.txt"), "--vocab",
         str(tmp_path / "missing_vocab.txt"), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: vocab file {tmp_path / 'missing_vocab.txt'} does not exist "
        "(pass --vocab PATH of a vocab.txt or .model file)"
    ]
    assert result.stdout == ""


def test_an_error_naming_a_path_with_brackets_is_printed_as_plain_text(capsys, monkeypatch, tmp_path):
    # rich would read "[/b]" as a closing markup tag and crash with a traceback instead
    model = tmp_path / "models[" / "b]"  # the path text holds "[/b]"; it does not exist
    code, out, err = run_cli(["predict", "--model", model, "a text"], capsys, monkeypatch)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(model) in err
