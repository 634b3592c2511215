"""`nlpkit bench attention` and its library (tiny lengths: it checks the plumbing, not speed)."""

import json

import pytest
from typer.testing import CliRunner

from commands.main import app
from nlpkit.bench import attention as bench
from nlpkit.errors import NlpkitError


def test_command_writes_table_plot_and_json(tmp_path):
    plot, summary = tmp_path / "scaling.png", tmp_path / "scaling.json"
    result = CliRunner().invoke(
        app,
        ["bench", "attention", "--attentions", "multi_head,linear", "--lengths", "16", "--hidden", "8", "--heads", "2",
         "--plot", str(plot), "--json", str(summary)],
    )
    assert result.exit_code == 0, result.output
    assert "multi_head" in result.output and "linear" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(summary.read_text())
    for name in ("multi_head", "linear"):
        assert [m["length"] for m in data["results"][name]] == [16]
        assert all(m["seconds"] > 0 and m["peak_bytes"] >= 0 for m in data["results"][name])
    assert set(data["speedup_vs_multi_head"]["linear"]) == {"16"}


def test_row_stops_after_the_first_length_over_budget():
    row = bench.bench_row("linear", [16, 8, 32], batch=1, hidden=8, heads=2, time_budget=1e-9, memory_budget=bench.GIB)
    assert [m.length for m in row] == [8, 16, 32]  # sorted, and only the first one measured
    assert row[0].ok and row[0].note == "over time budget"
    assert [m.note for m in row[1:]] == ["stopped", "stopped"]


def test_prediction_uses_the_measured_growth():
    done = [bench.Measurement("a", 1000, 1.0, 100), bench.Measurement("a", 2000, 4.0, 200)]
    assert bench._predict(done, 4000, "seconds") == pytest.approx(16.0)  # quadratic
    assert bench._predict(done, 4000, "peak_bytes") == pytest.approx(400.0)  # linear
    assert bench._predict(done[:1], 2000, "seconds") == pytest.approx(4.0)  # one point: assume quadratic


def test_bad_options_are_clear_errors():
    with pytest.raises(NlpkitError, match="unknown attention"):
        bench.run(["nope"], [16], hidden=8, heads=2)
    with pytest.raises(NlpkitError, match="divisible"):
        bench.run(["linear"], [16], hidden=10, heads=4)


def test_a_failing_cell_is_recorded_and_the_table_finishes(tmp_path, monkeypatch):
    """A kernel error (not a MemoryError/RuntimeError/ValueError) in one row: that row records it and
    stops, the next attention still runs, the command exits 0 with the table and the JSON."""
    import tensorflow as tf

    real_measure = bench.measure

    def measure(name, length, *args, **kwargs):
        if (name, length) == ("linear", 32):
            message = "Incompatible shapes: [1,32] vs. [1,16]\n\t [[{{node x}}]]"  # as TF formats it
            raise tf.errors.InvalidArgumentError(None, None, message)
        return real_measure(name, length, *args, **kwargs)

    monkeypatch.setattr(bench, "measure", measure)
    summary = tmp_path / "scaling.json"
    result = CliRunner().invoke(
        app,
        ["bench", "attention", "--attentions", "linear,multi_head", "--lengths", "16,32,64", "--hidden", "8",
         "--heads", "2", "--plot", str(tmp_path / "scaling.png"), "--json", str(summary)],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(summary.read_text())["results"]
    assert [m["note"] for m in rows["linear"]] == [
        "", "failed: InvalidArgumentError: Incompatible shapes: [1,32] vs. [1,16]", "stopped"
    ]
    assert rows["linear"][0]["seconds"] > 0
    assert [m["length"] for m in rows["multi_head"] if m["seconds"]] == [16, 32, 64]
    assert "linear @ 32: failed: InvalidArgumentError: Incompatible shapes" in " ".join(result.output.split())


def test_failure_note_is_the_gist_of_a_graph_execution_error():
    traced = ("Graph execution error:\n\nDetected at node add defined at (most recent call last):\n"
              '  File "model.py", line 3, in call\n    return x + y\n'
              "Incompatible shapes: [1,32] vs. [1,16]\n\t [[{{node add}}]] [Op:__inference_step_7]")
    assert bench._failure_note(RuntimeError(traced)) == "failed: RuntimeError: Incompatible shapes: [1,32] vs. [1,16]"
    assert bench._failure_note(MemoryError()) == "failed: MemoryError"
