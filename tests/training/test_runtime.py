"""The shared training runtime (issue #16): checkpoints by variable path, and `nlpkit finetune` on it:
exact resume after SIGKILL, --tpu, two workers, mixed_bfloat16, --seed, the one start_encoder;
and --precision auto (issue #19)."""

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
from nlpkit.training import checkpoints, precision, runtime
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


# --------------------------------------------------------------------------------------------------
# --precision auto (issue #19): the choice, its overrides, and training under it

AVX2_ONLY = frozenset({"fpu", "sse2", "avx", "avx2", "fma", "f16c"})
AVX512F_ONLY = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
AVX512_BF16 = AVX512F_ONLY | {"avx512_bf16"}  # e.g. AMD Zen 4, Intel Cooper Lake
AMX = AVX512_BF16 | {"amx_bf16", "amx_tile", "amx_int8"}  # e.g. Intel Sapphire Rapids
AMX_TILE_INT8_ONLY = AVX512F_ONLY | {"amx_tile", "amx_int8"}  # AMX without its bf16 part: no bf16 units


@pytest.mark.parametrize(
    ("flags", "device", "backend", "extra", "precision", "jit"),
    [
        (AVX2_ONLY, "cpu", "tensorflow", {}, "float32", True),
        (AVX512F_ONLY, "cpu", "tensorflow", {}, "float32", True),
        (AVX512_BF16, "cpu", "tensorflow", {}, "mixed_bfloat16", False),
        (AMX, "cpu", "tensorflow", {}, "mixed_bfloat16", False),
        (AMX_TILE_INT8_ONLY, "cpu", "tensorflow", {}, "float32", True),
        (AMX, "cpu", "tensorflow", {"onednn": False}, "float32", True),
        (AVX2_ONLY, "cpu", "jax", {}, "float32", True),
        (AMX, "cpu", "jax", {"onednn": False}, "mixed_bfloat16", True),
        (AVX2_ONLY, "gpu", "tensorflow", {"compute_capability": (8, 0)}, "mixed_bfloat16", True),
        (AVX2_ONLY, "gpu", "tensorflow", {"compute_capability": (7, 5)}, "float32", True),
        (AMX, "gpu", "jax", {"compute_capability": (9, 0)}, "mixed_bfloat16", True),
        (AVX2_ONLY, "tpu", "tensorflow", {}, "mixed_bfloat16", True),
    ],
    ids=["avx2", "avx512f", "avx512-bf16", "amx", "amx-without-bf16", "amx-onednn-off", "jax-avx2", "jax-amx",
         "gpu-8.0", "gpu-7.5", "jax-gpu-9.0", "tpu"],
)
def test_auto_choice_follows_the_table(flags, device, backend, extra, precision, jit):
    choice = runtime.choose_auto(flags, device, backend, **extra)
    assert (choice.precision, choice.jit) == (precision, jit)
    assert choice.reason  # every choice says why (doctor prints it)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: x\nflags\t\t: fpu avx2 amx_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 amx_bf16\n")
    assert runtime.cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert runtime.cpu_flags(tmp_path / "missing") == frozenset()  # not Linux: no flags, so float32


@pytest.fixture
def avx2_machine(monkeypatch):
    """This process sees an AVX2-only CPU and no accelerator."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: AVX2_ONLY)
    monkeypatch.setattr(precision, "this_device", lambda tpu=None: ("cpu", None))


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        (("auto", None), ("float32", True)),
        (("auto", False), ("float32", False)),  # an explicit --no-jit wins over auto
        (("mixed_bfloat16", None), ("mixed_bfloat16", False)),  # the XLA choice for the precision given
        (("float32", None), ("float32", True)),
        (("mixed_bfloat16", True), ("mixed_bfloat16", True)),  # both explicit: left alone
        # XLA cannot compile CPU collectives: a replicated CPU run gets none, unless --jit is explicit
        (("auto", None, None, "multi-worker"), ("float32", False)),
        (("float32", None, None, "mirrored"), ("float32", False)),
        (("auto", None, None, "cpu"), ("float32", True)),
        (("auto", True, None, "multi-worker"), ("float32", True)),
    ],
)
def test_explicit_precision_and_jit_override_auto(avx2_machine, given, resolved):
    precision, jit, reason = runtime.resolve_precision_and_jit(*given)
    assert (precision, jit) == resolved
    assert bool(reason) == (given[1] is None or given[0] == "auto")


def test_unknown_precision_is_refused(avx2_machine):
    with pytest.raises(NlpkitError, match="unknown --precision 'bf16'"):
        runtime.resolve_precision_and_jit("bf16", None)


def _pretrain_cli(corpus, output, *extra):
    from nlpkit.data.bundled import bert_vocab_path

    return ["pretrain", "--data", corpus / "news.txt", "--output", output, "--preset", corpus / "micro.json",
            "--vocab", bert_vocab_path(), "--max-steps", 1, "--batch-size", 4, "--seq-length", 16,
            "--max-predictions", 3, *extra]


def test_pretrain_defaults_to_auto_and_explicit_options_override_it(corpus, tmp_path, capsys):
    choice = runtime.auto_choice()
    code, out, err = run_cli(capsys, *_pretrain_cli(corpus, tmp_path / "auto"))
    assert code == 0, err
    saved = json.loads((tmp_path / "auto" / "pretrain_config.json").read_text())
    assert (saved["precision"], saved["jit"]) == (choice.precision, choice.jit)
    assert f"precision {choice.precision}, XLA {'on' if choice.jit else 'off'} (auto: {choice.reason})" in " ".join(out.split())

    code, out, err = run_cli(capsys, *_pretrain_cli(corpus, tmp_path / "explicit", "--precision", "float32", "--no-jit"))
    assert code == 0, err
    saved = json.loads((tmp_path / "explicit" / "pretrain_config.json").read_text())
    assert (saved["precision"], saved["jit"]) == ("float32", False)
    assert "(auto:" not in out


def test_pretrain_unknown_precision_is_one_red_line(corpus, tmp_path, capsys):
    code, out, err = run_cli(capsys, *_pretrain_cli(corpus, tmp_path / "run", "--precision", "bf16"))
    assert code == 2 and out == ""
    assert [line for line in err.splitlines() if line.strip()] == [
        "error: unknown --precision 'bf16' (use one of float32, mixed_bfloat16, mixed_float16)"]
    assert not (tmp_path / "run").exists()


def test_a_run_started_with_other_precision_options_says_how_to_resume(corpus, tmp_path, capsys):
    """A run from before auto was the default (float32, no XLA) differs from what auto picks on any
    CPU (bf16 without XLA, or float32 with it): the error names the options to resume it with."""
    old = _pretrain_cli(corpus, tmp_path / "run", "--precision", "float32", "--no-jit")
    code, _, err = run_cli(capsys, *old)
    assert code == 0, err
    code, _, err = run_cli(capsys, *_pretrain_cli(corpus, tmp_path / "run"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "holds a different run (differs in: " in err and "pass --precision float32 --no-jit" in err
    code, _, err = run_cli(capsys, *old)  # as the hint says: it resumes (nothing left to train)
    assert code == 0, err


def test_training_under_the_auto_choice_matches_float32_losses(corpus, tmp_path):
    """Six masked-LM updates of the micro BERT (dropout off, so both runs see the same network)
    from the same initialisation and batches, float32 without XLA against auto's choice.

    Tolerance, bf16: its unit roundoff is 2^-8 = 0.39 %, the relative error of each matmul input;
    accumulation, softmax, layer norm, the loss, the weights and their updates stay float32, so
    the loss moves by a fraction of that (2.8e-4 relative measured on an AMX CPU). rtol 1e-2
    (2.5 roundoffs) allows for other CPUs' kernels and six updates of drift, yet fails a run whose
    updates are lost to bf16 weights (a pure "bfloat16" policy misses by 9 %). float32 (a CPU
    without bf16 units: XLA on): XLA only reorders float32 arithmetic (2e-7 measured), so 1e-5.
    """
    from nlpkit.training.pretrain import run_pretraining
    from tests.training.test_pretrain import MICRO_BERT, _config

    preset = tmp_path / "no_dropout.json"
    preset.write_text(json.dumps({**MICRO_BERT, "output_dropout": 0.0, "attention_dropout": 0.0}))
    settings = dict(preset=str(preset), learning_rate=3e-2, warmup_steps=1)
    choice = runtime.auto_choice()
    reference = run_pretraining(_config(corpus, tmp_path / "fp32", precision="float32", jit=False, **settings))
    auto = run_pretraining(_config(corpus, tmp_path / "auto", precision=choice.precision, jit=choice.jit, **settings))
    expected = np.array([h["loss"] for h in reference["history"]])
    losses = np.array([h["loss"] for h in auto["history"]])
    assert len(losses) == len(expected) == 6
    assert expected[-1] < expected[0] - 0.5, expected  # the steps do train, so lost updates would show
    tolerance = 1e-2 if choice.precision == "mixed_bfloat16" else 1e-5
    np.testing.assert_allclose(losses, expected, rtol=tolerance)
