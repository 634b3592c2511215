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
