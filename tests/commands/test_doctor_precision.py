"""`nlpkit doctor` shows what `--precision auto` picks on this machine and why (issue #19)."""

import pytest

from nlpkit.training import precision, runtime
from tests.cli import run_cli


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    """Rich would wrap the row at the console's width (COLUMNS is read once, when it is made)."""
    from commands.common import console

    monkeypatch.setattr(console, "width", 400)


def _auto_row(out):
    rows = [" ".join(line.replace("│", " ").split()) for line in out.splitlines() if "--precision auto" in line]
    assert len(rows) == 1, out
    return rows[0]


def test_doctor_prints_this_machines_auto_choice(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    choice = runtime.auto_choice()
    code, out, err = run_cli(capsys, "doctor")
    assert code == 0, err
    assert _auto_row(out) == f"--precision auto {choice.describe()} {choice.reason}"


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        ({"avx2", "fma"}, "float32, XLA on CPU has no bf16 dot-product units"),
        ({"avx2", "avx512f", "avx512_bf16"}, "mixed_bfloat16, XLA off CPU has bf16 dot-product units (avx512_bf16)"),
    ],
    ids=["avx2", "avx512-bf16"],
)
def test_doctor_row_follows_the_cpu_flags(capsys, monkeypatch, flags, shown):
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(precision, "this_device", lambda tpu=None: ("cpu", None))
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    code, out, err = run_cli(capsys, "doctor")
    assert code == 0, err
    assert _auto_row(out).startswith(f"--precision auto {shown}")
