"""`nlpkit bench train-step` and benchmarks/pretrain_step.py: one measurement (nlpkit.bench.train_step),
a table, JSON, FLOPs per token from the encoder summary, one-line errors (tiny sizes: the plumbing,
not the figures)."""

import json
import sys

import pytest

from tests.cli import run_cli
from tests.training.test_pretrain import MICRO_BERT

BATCH, SEQ, PREDICTIONS = 2, 16, 3


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "micro.json"
    path.write_text(json.dumps(MICRO_BERT))
    return path


def _bench(micro, *extra):
    return ["bench", "train-step", "--preset", micro, "--batch", BATCH, "--seq-length", SEQ,
            "--predictions", PREDICTIONS, "--steps", 2, "--warmup", 1, *extra]


def _bert_step_flops(config, seq, predictions):
    """Closed form: 3 x forward; forward = 2 x (per-layer kernels 4 D^2 + 2 D F) + attention scores
    and weighted sum 4 T D per layer + the MLM head (transform D^2 and tied logits V D) on P of T."""
    d, f, layers, vocab = config["hidden_size"], config["inner_dim"], config["num_layers"], config["vocab_size"]
    forward = layers * (2 * (4 * d * d + 2 * d * f) + 4 * seq * d) + 2 * (d * d + vocab * d) * predictions / seq
    return 3 * forward


def test_table_json_and_flops(micro, tmp_path, capsys):
    out_json = tmp_path / "steps.json"
    code, out, err = run_cli(capsys, *_bench(micro, "--precisions", "float32,mixed_bfloat16", "--xla", "off",
                                             "--json", out_json))
    assert code == 0, err
    rows = json.loads(out_json.read_text())["results"]
    assert [(r["precision"], r["jit"]) for r in rows] == [("float32", "off"), ("mixed_bfloat16", "off")]
    flops = _bert_step_flops(MICRO_BERT, SEQ, PREDICTIONS)
    for row in rows:
        assert (row["batch"], row["seq"], row["predictions"]) == (BATCH, SEQ, PREDICTIONS)
        assert row["flops_per_token"] == pytest.approx(flops, abs=1)
        step_s = row["step_ms"] / 1000
        assert row["tokens_per_s"] == pytest.approx(BATCH * SEQ / step_s, rel=1e-3, abs=0.06)  # rounded to 0.1
        assert row["gflops_per_s"] == pytest.approx(row["tokens_per_s"] * flops / 1e9, abs=0.1)
        assert row["loss"] > 0
    text = " ".join(out.split())
    for heading in ("preset", "precision", "XLA", "tokens/s", "step ms", "GFLOP/s"):
        assert heading in text
    assert "mixed_bfloat16" in text and f"{rows[0]['tokens_per_s']:,.0f}" in text
    assert "train-step" in err and "6/6" in err  # the progress bar: 2 rows x (1 warm-up + 2 timed) steps


def test_model_directory_and_default_precisions(micro, tmp_path, capsys):
    from nlpkit.training.runtime import auto_choice

    code, _, err = run_cli(capsys, "build", "--config", micro, "--output", tmp_path / "model")
    assert code == 0, err
    out_json = tmp_path / "steps.json"
    code, _, err = run_cli(capsys, "bench", "train-step", "--model", tmp_path / "model", "--batch", BATCH,
                           "--seq-length", SEQ, "--predictions", PREDICTIONS, "--steps", 1, "--warmup", 0,
                           "--xla", "off", "--json", out_json)
    assert code == 0, err
    rows = json.loads(out_json.read_text())["results"]
    expected = ["float32"] + (["mixed_bfloat16"] if auto_choice().precision == "mixed_bfloat16" else [])
    assert [r["precision"] for r in rows] == expected
    assert rows[0]["preset"] == "model"
    assert rows[0]["flops_per_token"] == pytest.approx(_bert_step_flops(MICRO_BERT, SEQ, PREDICTIONS), abs=1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--precisions", "bf16"), "--precisions 'bf16': unknown precision bf16"),
        (("--xla", "maybe"), "--xla 'maybe': use on, off or on,off"),
        (("--steps", "0"), "--steps must be at least 1, got 0"),
        (("--seq-length", "100"), "--seq-length 100 exceeds the model's max_sequence_length 64"),
        (("--predictions", "16"), "--predictions 16 must be below --seq-length 16"),
    ],
    ids=["precision", "xla", "steps", "seq-length", "predictions"],
)
def test_bad_option_is_one_red_line(micro, tmp_path, capsys, extra, message):
    code, out, err = run_cli(capsys, *_bench(micro, *extra, "--json", tmp_path / "x.json"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "x.json").exists()


def test_preset_or_model_is_required(capsys):
    code, _, err = run_cli(capsys, "bench", "train-step")
    assert code == 2 and err.strip() == "error: pass exactly one of --preset NAME and --model DIR (e.g. --preset bert_small)"


def test_benchmark_script_prints_the_library_measurement_as_its_last_json_line(monkeypatch, capsys):
    """benchmarks/pretrain_step.py (what ../shared/anchors/side_by_side.sh parses) measures through
    nlpkit.bench.train_step: its row is the library's, plus the config and head names."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script sets sys.path[0] when imported
    from benchmarks import pretrain_step
    from nlpkit.bench import train_step

    calls = []
    real = train_step.measure

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_step, "measure", spy)
    monkeypatch.setattr(sys, "argv", ["pretrain_step.py", "--config", "tiny", "--batch", "2", "--seq", "16",
                                      "--predictions", "3", "--steps", "1", "--warmup", "0", "--jit", "off"])
    pretrain_step.main()
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    assert len(calls) == 1
    assert (calls[0]["jit"], calls[0]["precision"], calls[0]["batch"]) == (False, "float32", 2)
    assert (row["config"], row["jit"], row["head"], row["batch"], row["seq"]) == ("tiny", "off", "MaskedLM", 2, 16)
    assert row["tokens_per_s"] == pytest.approx(2 * 16 / (row["step_ms"] / 1000), rel=1e-3, abs=0.06)
