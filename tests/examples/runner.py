"""Running an example as a user does (`bash examples/NAME/run.sh OUT` at the reduced size) and checking
what its README promises. What the commands compute is tested in tests/training and tests/export.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REVIEW_LABELS = {"fresh", "rotten"}
METRICS = ("accuracy", "macro_f1", "nll", "ece")


def run_example(name, out, **env):
    """Output (stdout + stderr) of `bash examples/NAME/run.sh OUT` at the reduced size; fails with its tail."""
    environment = {**os.environ, "SMALL": "1", "PYTHON": sys.executable, "COLUMNS": "200", **env}
    # A session of its own, so a timeout stops the script's nlpkit processes too, not only bash.
    process = subprocess.Popen(["bash", str(EXAMPLES / name / "run.sh"), str(out)], env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    assert process.returncode == 0, f"{name} failed:\n{output[-4000:]}"
    assert f"{name} done in" in output
    return output


def read_json_lines(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def check_metrics(path, examples, extra=()):
    metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    for name in (*METRICS, *extra):
        assert name in metrics, f"{path} lacks {name}"
    for name in ("accuracy", "macro_f1", "ece", *extra):
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics[name])
    assert metrics["nll"] > 0.0
    assert sum(map(sum, metrics["confusion_matrix"])) == examples  # every test row counted once
    return metrics


def check_predictions(path, count, labels=REVIEW_LABELS):
    rows = read_json_lines(path)
    assert len(rows) == count
    for row in rows:
        assert row["label"] in labels
        assert set(row["probabilities"]) == labels
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    return rows


