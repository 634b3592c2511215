"""The examples built on the real MiniLM weights, at their reduced size (SMALL=1).

The expensive steps are shared: one conversion of the real MiniLM weights and one fine-tuned
classifier (the finetune_converted_bert example) feed the SNGP and export examples.
"""

import pytest

from tests.examples.runner import check_metrics, check_predictions, run_example


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune_converted_bert")
    return out, run_example("finetune_converted_bert", out)


def test_finetune_converted_bert(finetuned):
    out, stdout = finetuned
    assert (out / "minilm" / "config.json").is_file() and "converted" in stdout
    check_metrics(out / "metrics.json", examples=32)  # SMALL: 32 test reviews
    assert (out / "metrics.reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_predictions(out / "predictions.jsonl", count=3)


def test_sngp_ood_reuses_the_conversion(finetuned, tmp_path):
    converted = finetuned[0] / "minilm"
    stdout = run_example("sngp_ood", tmp_path, CONVERTED=str(converted))
    assert f"reusing the converted model directory {converted}" in stdout and not (tmp_path / "minilm").exists()
    check_metrics(tmp_path / "metrics.json", examples=32, extra=("ood_auroc",))
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in check_predictions(tmp_path / "predictions.jsonl", count=3):
        assert row["uncertainty"] >= 0.0


def test_export_and_serve_agrees_with_predict(finetuned, tmp_path):
    run_example("export_and_serve", tmp_path, MODEL=str(finetuned[0] / "classifier"))
    served = check_predictions(tmp_path / "served.jsonl", count=3)
    predicted = check_predictions(tmp_path / "predictions.jsonl", count=3)
    for plain, cli in zip(served, predicted):
        assert plain["label"] == cli["label"]
        for label, value in plain["probabilities"].items():
            assert value == pytest.approx(cli["probabilities"][label], abs=1e-4)  # serve.py rounds to 4 places
