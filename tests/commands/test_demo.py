"""`nlpkit demo`, reduced: every step of the main job runs for real on bundled data, end to end."""

import json

from commands import run_all
from tests.cli import run_cli


def test_reduced_demo_runs_every_step_and_ends_with_the_artefact_table(tmp_path, capsys, monkeypatch):
    from commands.common import console

    monkeypatch.setattr(console, "width", 250)  # the closing table on one line per step
    out_dir = tmp_path / "demo"
    code, out, err = run_cli(capsys, "demo", "--output", out_dir, "--pretrain-steps", 2, "--news-articles", 30,
                             "--reviews-train", 64, "--reviews-test", 32, "--epochs", 1)
    assert code == 0, err
    for title, _ in run_all.demo_steps(out_dir, out_dir / "data", epochs=1, seed=0, pretrain_steps=2):
        assert f"│ {title} " in out, title  # one row per step in the closing table
    pretrained = json.loads((out_dir / "pretrain.json").read_text())
    assert pretrained["steps"] == 2 and 0 <= pretrained["mlm_accuracy"] <= 1
    evaluation = json.loads((out_dir / "eval_sngp.json").read_text())
    assert 0 <= evaluation["accuracy"] <= 1 and "ood_auroc" in evaluation
    rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == run_all.SENTENCES
    assert all(row["uncertainty"] >= 0 for row in rows)
    assert "out-of-domain uncertainty" in out
    assert (out_dir / "served" / "saved_model.pb").is_file() and (out_dir / "minilm" / "config.json").is_file()
