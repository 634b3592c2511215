"""The pretraining loop on a micro BERT and bundled news text: learning, exact resume, bad input."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from nlpkit.data.bundled import bert_vocab_path, news_texts
from nlpkit.errors import NlpkitError
from nlpkit.training.pretrain import PretrainConfig, run_pretraining

MICRO_BERT = {
    "kind": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_layers": 1,
    "num_attention_heads": 2,
    "inner_dim": 64,
    "max_sequence_length": 64,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Bundled news articles, one sentence per line, a blank line between articles."""
    folder = tmp_path_factory.mktemp("pretrain")
    path = folder / "news.txt"
    with open(path, "w", encoding="utf-8") as handle:
        for text in news_texts(limit=40):
            handle.write("\n".join(re.split(r"(?<=[.!?]) +", text)) + "\n\n")
    (folder / "micro.json").write_text(json.dumps(MICRO_BERT))
    return folder


def _config(corpus, output, **overrides):
    settings = dict(
        data=str(corpus / "news.txt"),
        output=str(output),
        preset=str(corpus / "micro.json"),
        vocab=str(bert_vocab_path()),
        max_steps=6,
        batch_size=8,
        seq_length=32,
        max_predictions_per_seq=5,
        checkpoint_every=2,
        learning_rate=5e-3,
        warmup_steps=1,
        seed=11,
    )
    return PretrainConfig(**{**settings, **overrides})


def _final_variables(run):
    steps = sorted((run / "checkpoints").glob("step-*"))
    with np.load(steps[-1] / "variables.npz") as arrays:
        return {name: arrays[name] for name in arrays.files}


def test_loss_falls_and_run_becomes_a_model_directory(corpus, tmp_path):
    summary = run_pretraining(
        _config(corpus, tmp_path / "run", max_steps=30, checkpoint_every=3, warmup_steps=2, learning_rate=3e-2)
    )
    losses = [h["loss"] for h in summary["history"]]
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses
    run = tmp_path / "run"
    assert {"config.json", "model.weights.h5", "vocab.txt", "pretrain_config.json"} <= {p.name for p in run.iterdir()}
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step-000024", "step-000027", "step-000030"]
    assert list((run / "logs").iterdir())  # TensorBoard event file


def test_interrupted_run_resumes_to_the_same_weights(corpus, tmp_path):
    whole = run_pretraining(_config(corpus, tmp_path / "whole"))

    def interrupt_after_step_3(step, loss, tokens_per_s):
        if step == 3:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run; checkpoint 2 is the last one written

    with pytest.raises(KeyboardInterrupt):
        run_pretraining(_config(corpus, tmp_path / "resumed"), on_step=interrupt_after_step_3)
    resumed = run_pretraining(_config(corpus, tmp_path / "resumed"))
    assert resumed["start_step"] == 2
    # Same seed, same data position, same optimizer state: the same losses and the same weights.
    np.testing.assert_allclose(
        [h["loss"] for h in resumed["history"]], [h["loss"] for h in whole["history"][2:]], rtol=1e-5
    )
    want, got = _final_variables(tmp_path / "whole"), _final_variables(tmp_path / "resumed")
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)


def test_existing_directories_are_never_mixed(corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    with pytest.raises(NlpkitError, match="not a pretraining run"):
        run_pretraining(_config(corpus, other))
    run_pretraining(_config(corpus, tmp_path / "run", max_steps=1, warmup_steps=0))
    with pytest.raises(NlpkitError, match=r"different run \(differs in: seq_length\)"):
        run_pretraining(_config(corpus, tmp_path / "run", max_steps=1, warmup_steps=0, seq_length=16))


def test_bad_corpus_and_vocab(corpus, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(NlpkitError, match="is empty"):
        run_pretraining(_config(corpus, tmp_path / "a", data=str(empty)))
    short = tmp_path / "short.txt"
    short.write_text("one short sentence .\n")
    with pytest.raises(NlpkitError, match="fewer than one batch"):
        run_pretraining(_config(corpus, tmp_path / "b", data=str(short)))
    small_vocab = tmp_path / "vocab.txt"
    small_vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]) + "\n")
    with pytest.raises(NlpkitError, match="vocab_size is 30522"):
        run_pretraining(_config(corpus, tmp_path / "c", vocab=str(small_vocab)))


def test_cli_tpu_without_tpu_is_one_red_line(corpus, tmp_path):
    command = [
        sys.executable, "-m", "commands.main", "pretrain", "--data", str(corpus / "news.txt"),
        "--output", str(tmp_path / "run"), "--preset", str(corpus / "micro.json"), "--vocab", str(bert_vocab_path()),
        "--tpu", "local",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--tpu local" in lines[0] and "no TPU" in lines[0]


# Two workers on loopback: tests/examples/test_examples.py::test_two_worker_training runs them.
