"""Usage errors (issue #15, item 8): one line, exit code 2, and answered before TensorFlow loads.

Real processes: what a user types, and `sys.modules` at exit shows whether TensorFlow (or Keras,
which imports it) was imported: that costs seconds, so a usage error must not wait for it.
"""

import os
import subprocess
import sys

import pytest

# The console script's entry point, plus a report at exit of any heavy framework that got imported.
PROBE = """
import atexit, sys
atexit.register(lambda: [sys.stderr.write(f"{name} was imported\\n")
                         for name in ("tensorflow", "keras") if name in sys.modules])
sys.argv[0] = "nlpkit"
from commands.main import run
run()
"""

TOKENIZE = ["tokenize", "in.txt", "--vocab", "vocab.txt", "--output", "out"]


def run_nlpkit(args):
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})
    return done.returncode, done.stdout, done.stderr.splitlines()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ([*TOKENIZE, "--bad-flag"], "error: no such option: --bad-flag (see `nlpkit tokenize --help`)"),
        (["--seed", "1", *TOKENIZE, "--bad-flag"], "error: no such option: --bad-flag (see `nlpkit tokenize --help`)"),
        (["tokenize", "in.txt", "--output", "out"], "error: missing option '--vocab' (see `nlpkit tokenize --help`)"),
        (["bench", "attention", "--bad-flag"],
         "error: no such option: --bad-flag (see `nlpkit bench attention --help`)"),
    ],
    ids=["unknown-option", "unknown-option-with-seed", "missing-option", "unknown-option-of-a-sub-group"],
)
def test_usage_error_is_exactly_one_line(args, line):
    code, out, err = run_nlpkit(args)
    assert (code, out, err) == (2, "", [line])


@pytest.mark.parametrize(
    ("args", "option"),
    [
        ([*TOKENIZE, "--seq-length", "many"], "--seq-length"),  # not an integer
        (["bench", "attention", "--batch", "0"], "--batch"),  # typer.BadParameter from min=1
    ],
    ids=["non-integer", "bad-parameter"],
)
def test_bad_value_is_one_line_naming_the_option(args, option):
    code, out, err = run_nlpkit(args)
    assert (code, out, len(err)) == (2, "", 1), err
    command = " ".join(args[: 2 if args[0] == "bench" else 1])
    assert err[0].startswith(f"error: invalid value for '{option}': ")
    assert err[0].endswith(f" (see `nlpkit {command} --help`)")


def test_a_valid_command_still_imports_tensorflow_after_parsing(tmp_path):
    """The probe can fail: a command that parsed runs with TensorFlow imported first."""
    code, out, err = run_nlpkit(["tokenize", str(tmp_path / "missing.txt"), "--vocab", "v.txt", "--output",
                                 str(tmp_path / "out")])
    assert code == 2 and out == ""
    assert err[1:] == ["tensorflow was imported", "keras was imported"]
