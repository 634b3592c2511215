"""The shared training runtime (issue #16): checkpoints by variable path, and `nlpkit finetune` on it:
exact resume after SIGKILL, --tpu, two workers, mixed_bfloat16, --seed, the one start_encoder."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.training import checkpoints, runtime
from tests.classifier_fixtures import write_easy_task
from tests.cli import run_cli
from tests.training.test_pretrain import corpus  # noqa: F401 - a fixture: news.txt and micro.json

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_easy_task(tmp_path_factory.mktemp("task"), per_class=24, test_per_class=8)


def _args(task, output, *extra):
    return ["finetune", "--preset", task / "encoder.json", "--train", task / "train.csv",
            "--validation", task / "test.csv", "--output", output, "--seq-length", 16, "--batch-size", 8,
            "--learning-rate", 3e-3, "--patience", 100, *extra]


def _last_checkpoint(run):
    return checkpoints.load_arrays(checkpoints.latest_checkpoint(run) / "variables.npz")


# --------------------------------------------------------------------------------------------------
# Checkpoints keyed by variable path


class TwoDense(keras.Model):
    """Two Dense layers of equal shapes, created (and so listed in `variables`) in `order`."""

    def __init__(self, order, names=("first", "second")):
        super().__init__()
        for name in order:
            setattr(self, name, keras.layers.Dense(4, name=names[("first", "second").index(name)]))

    def call(self, x):
        return self.second(self.first(x))


def _built(model):
    model(np.ones((2, 4), "float32"))
    optimizer = keras.optimizers.AdamW(1e-2)
    optimizer.build(model.trainable_variables)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.random.default_rng(0).normal(size=(8, 4)), np.zeros((8, 4)), epochs=2, verbose=0)
    return model, optimizer


def test_checkpoint_restores_layers_created_in_another_order(tmp_path):
    saved, saved_optimizer = _built(TwoDense(["first", "second"]))
    checkpoints.save_checkpoint(tmp_path, 5, saved, saved_optimizer, keep=1)
    target = TwoDense(["second", "first"])
    target(np.ones((2, 4), "float32"))
    optimizer = keras.optimizers.AdamW(1e-2)
    optimizer.build(target.trainable_variables)
    # The two models list their (equally shaped) kernels in opposite orders: restoring by index would swap them.
    assert saved.variables[0].path.split("/")[-2] != target.variables[0].path.split("/")[-2]
    state = checkpoints.restore_checkpoint(checkpoints.latest_checkpoint(tmp_path), target, optimizer)
    assert state["step"] == 5
    for name in ("first", "second"):
        np.testing.assert_array_equal(getattr(target, name).kernel.numpy(), getattr(saved, name).kernel.numpy())
    momentum = {v.name: v.numpy() for v in saved_optimizer.variables}
    for variable in optimizer.variables:  # each slot follows its own variable, under the (other) model's name
        key = variable.name.replace(target.name, saved.name)
        np.testing.assert_array_equal(variable.numpy(), momentum[key], err_msg=variable.name)


def test_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    saved, optimizer = _built(TwoDense(["first", "second"]))
    checkpoints.save_checkpoint(tmp_path, 1, saved, optimizer, keep=1)
    other = TwoDense(["first", "second"], names=("first", "renamed"))
    other(np.ones((2, 4), "float32"))
    other_optimizer = keras.optimizers.AdamW(1e-2)
    other_optimizer.build(other.trainable_variables)
    before = other.second.kernel.numpy()
    with pytest.raises(NlpkitError, match="has no value for model/.*renamed/kernel"):
        checkpoints.restore_checkpoint(checkpoints.latest_checkpoint(tmp_path), other, other_optimizer)
    np.testing.assert_array_equal(other.second.kernel.numpy(), before)  # refused before anything was assigned


# --------------------------------------------------------------------------------------------------
# nlpkit finetune on the runtime


def _popen(args, **env):
    command = [sys.executable, "-m", "commands.main", "--quiet", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env={**ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_finetune_killed_mid_epoch_resumes_to_the_same_weights(task, tmp_path):
    """Real processes: 48 examples / batch 8 = 6 updates an epoch; evaluations every 4, checkpoints every 2."""
    common = ("--max-steps", 30, "--eval-every", 4, "--checkpoint-every", 2, "--seed", 7)
    whole = _popen(_args(task, tmp_path / "whole", *common))
    _, err = whole.communicate(timeout=120)
    assert whole.returncode == 0, err

    killed = _popen(_args(task, tmp_path / "resumed", *common))
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "resumed" / "checkpoints").glob("step-00000[2-9]")):
            assert killed.poll() is None, killed.communicate()
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    last = checkpoints.latest_checkpoint(tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "config.json").exists() and int(last.name[5:]) < 30  # it was cut short
    resumed = _popen(_args(task, tmp_path / "resumed", *common))
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err

    want, got = _last_checkpoint(tmp_path / "whole"), _last_checkpoint(tmp_path / "resumed")
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)
    best_want = checkpoints.load_arrays(tmp_path / "whole" / "best.weights.npz")
    best_got = checkpoints.load_arrays(tmp_path / "resumed" / "best.weights.npz")
    for name in best_want:
        np.testing.assert_allclose(best_got[name], best_want[name], atol=1e-6, err_msg=name)
    assert (tmp_path / "resumed" / "config.json").is_file() and list((tmp_path / "resumed" / "logs").iterdir())


def test_finetune_no_such_tpu_is_one_red_line(task, tmp_path, capsys):
    code, _, err = run_cli(capsys, *_args(task, tmp_path / "out", "--tpu", "no-such-tpu"))
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--tpu no-such-tpu" in lines[0]
    assert not (tmp_path / "out").exists()


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_finetune_on_two_workers_over_loopback(task, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = [
        _popen(_args(task, tmp_path / "run", "--strategy", "multi-worker", "--max-steps", 4, "--eval-every", 2),
               TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        for index in (0, 1)
    ]
    try:
        results = [worker.communicate(timeout=180) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, err) in zip(workers, results):
        assert worker.returncode == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["head"]["labels"] == ["news", "review"]
    assert checkpoints.latest_checkpoint(tmp_path / "run").name == "step-000004"


def test_finetune_trains_under_mixed_bfloat16(task, tmp_path):
    from nlpkit.training.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(train=str(task / "train.csv"), validation=str(task / "test.csv"),
                            output=str(tmp_path / "bf16"), preset=str(task / "encoder.json"), seq_length=16,
                            batch_size=8, learning_rate=3e-3, max_steps=24, eval_every=24, precision="mixed_bfloat16")
    losses = []
    finetune(config, on_step=lambda step, record: losses.append(record["loss"]))
    losses = np.array(losses)
    assert len(losses) == 24 and np.isfinite(losses).all()
    assert losses[-6:].mean() < losses[:6].mean() - 0.1, losses  # it learns
    saved = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert "mixed_bfloat16" in json.dumps(saved)  # the layers were built (and saved) under the mixed policy
    assert keras.config.dtype_policy().name == "float32"  # and the policy is restored for what runs next


def test_seed_reaches_finetune_from_the_global_option_and_its_own(task, tmp_path, capsys):
    runs = {"global": ("--seed", 3), "own": (), "other": ()}
    for name, prefix in runs.items():
        own = () if name == "global" else ("--seed", 3 if name == "own" else 4)
        code, _, err = run_cli(capsys, *prefix, *_args(task, tmp_path / name, "--max-steps", 2, *own))
        assert code == 0, err
    arrays = {name: _last_checkpoint(tmp_path / name) for name in runs}
    kernel = next(k for k in arrays["own"] if k.endswith("logits/kernel"))
    np.testing.assert_array_equal(arrays["global"][kernel], arrays["own"][kernel])
    assert not np.allclose(arrays["other"][kernel], arrays["own"][kernel])


def test_one_start_encoder_vocab_rule(task, tmp_path):
    from nlpkit.data.bundled import bert_vocab_path

    _, _, vocab, _ = runtime.start_encoder(preset=str(task / "encoder.json"))
    assert vocab == str(bert_vocab_path())  # the bundled vocab fits a 30522-token preset
    small = tmp_path / "small.json"
    small.write_text(json.dumps({**json.loads((task / "encoder.json").read_text()), "vocab_size": 50}))
    with pytest.raises(NlpkitError, match="vocab_size 50"):
        runtime.start_encoder(preset=str(small))


def test_pretrain_and_finetune_both_start_from_a_fine_tuned_classifier(task, corpus, tmp_path, capsys):
    from nlpkit.data.bundled import bert_vocab_path
    from nlpkit.training.pretrain import PretrainConfig, run_pretraining

    classifier = tmp_path / "classifier"
    code, _, err = run_cli(capsys, *_args(task, classifier, "--max-steps", 1))
    assert code == 0, err
    encoder_weights = {k: v for k, v in _last_checkpoint(classifier).items() if k.startswith("model/") and "/bert_encoder/" in k}
    summary = run_pretraining(PretrainConfig(
        data=str(corpus / "news.txt"), output=str(tmp_path / "run"), model=str(classifier), max_steps=1,
        batch_size=4, seq_length=16, max_predictions_per_seq=3, learning_rate=1e-12, warmup_steps=0,
    ))
    assert summary["history"][0]["loss"] > 0
    # The masked-LM model holds the classifier's encoder (a 1e-12 rate leaves it as it was) ...
    pretrained = _last_checkpoint(tmp_path / "run")
    for key, value in encoder_weights.items():
        match = [k for k in pretrained if k.startswith("model/") and k.endswith(key.split("/bert_encoder/")[1])
                 and "/bert_encoder/" in k]
        assert len(match) == 1, key
        np.testing.assert_allclose(pretrained[match[0]], value, atol=1e-6, err_msg=key)
    # ... and fine-tuning a fine-tuned classifier again takes its encoder too.
    again = tmp_path / "again"
    code, _, err = run_cli(capsys, "finetune", "--model", classifier, "--train", task / "train.csv", "--output", again,
                           "--seq-length", 16, "--max-steps", 1)
    assert code == 0, err
    assert json.loads((again / "config.json").read_text())["encoder"]["hidden_size"] == 32
