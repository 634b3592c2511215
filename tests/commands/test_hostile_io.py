"""Issue #15: outputs that must not be lost, and command errors a user can act on.

Every case is a real `nlpkit` run: in-process through `tests.cli.run_cli`, or a real process where
a kill -9, a lock or two processes are the point. Each bad case must end in one line and exit 2,
with everything the user had left as it was.
"""

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlpkit.data.bundled import bert_vocab_path, news_texts
from tests.classifier_fixtures import TINY_ENCODER, write_easy_task
from tests.cli import run_cli, run_cli_ok
from tests.training.test_pretrain import corpus  # noqa: F401 - a fixture: news.txt and micro.json

VOCAB = bert_vocab_path()
ROOT = Path(__file__).resolve().parents[2]


def _one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()  # a progress bar may come first: the error is the one last line
    assert "Traceback" not in err and lines[-1].startswith("error:") and err.count("error:") == 1, err
    for word in words:
        assert word in err, err


def _tree(folder):
    """{relative path: bytes} of every file under `folder` (to show nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _leftovers(path):
    """Hidden siblings of `path` that a run wrote beside it (temps, old copies, locks)."""
    path = Path(path)
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def _pretrain_args(corpus, output, steps=2, *extra):
    return ["pretrain", "--data", corpus / "news.txt", "--preset", corpus / "micro.json", "--vocab", VOCAB,
            "--output", output, "--max-steps", steps, "--batch-size", 4, "--seq-length", 32,
            "--max-predictions", 5, "--checkpoint-every", 1, "--warmup-steps", 0, "--learning-rate", 1e-3, *extra]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_easy_task(tmp_path_factory.mktemp("task"), per_class=24, test_per_class=8)


def _finetune_args(task, output, *extra):
    return ["finetune", "--preset", task / "encoder.json", "--train", task / "train.csv",
            "--validation", task / "test.csv", "--output", output, "--epochs", 1, "--seq-length", 16,
            "--batch-size", 16, *extra]


@pytest.fixture(scope="module")
def classifier(task, tmp_path_factory):
    """A tiny fine-tuned classifier directory (one epoch), trained through the CLI once."""
    output = tmp_path_factory.mktemp("models") / "cls"
    run_cli_ok(*_finetune_args(task, output))
    return output


# --------------------------------------------------------------------------------------------------
# 4, 6. pretrain: --overwrite never destroys what is not a run, nor an old model before the new one;
#       one process at a time in a run directory


def test_pretrain_overwrite_refuses_a_folder_of_the_users_files(corpus, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code, _, err = run_cli(capsys, *_pretrain_args(corpus, mine), "--overwrite")
    _one_line_error(code, err, "is not a pretraining run")
    assert _tree(mine) == {"thesis.tex": b"years of work"}


def _wait_for(condition, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_overwrite_killed_keeps_the_old_model_and_a_second_process_is_locked_out(corpus, tmp_path, capsys):
    """Real processes: a finished run; `--overwrite` in another process, killed -9 while it trains
    beside the run; meanwhile a second run on the same output is refused; the next run takes the
    stale lock over, removes the abandoned folder, and replaces the model only when done."""
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *_pretrain_args(corpus, run))
    assert code == 0, err
    finished = _tree(run)
    assert {"config.json", "model.weights.h5"} <= set(finished)

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    other = subprocess.Popen(
        [sys.executable, "-m", "commands.main", "--quiet", *map(str, _pretrain_args(corpus, run, 100_000)),
         "--overwrite"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        # Wait until it trains: a first checkpoint in its fresh folder beside the run (or, as before
        # the fix, the old model already gone).
        _wait_for(lambda: any(run.parent.glob(f".{run.name}.*.tmp/checkpoints/step-*"))
                  or not (run / "model.weights.h5").exists(), other)
        assert _tree(run) == finished  # the old run is untouched while the new one trains

        code, _, err = run_cli(capsys, *_pretrain_args(corpus, run), "--overwrite")
        _one_line_error(code, err, "in use by another nlpkit pretrain", f"pid {other.pid}")
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    assert _tree(run) == finished
    assert any(name.endswith(".tmp") for name in _leftovers(run))  # what the killed run left

    code, _, err = run_cli(capsys, *_pretrain_args(corpus, run, 3), "--overwrite")
    assert code == 0, err  # the stale lock of the killed process is taken over
    assert _leftovers(run) == []
    assert json.loads((run / "pretrain_config.json").read_text())["max_steps"] == 3
    assert [p.name for p in sorted((run / "checkpoints").iterdir())][-1] == "step-000003"
    assert (run / "model.weights.h5").read_bytes() != finished["model.weights.h5"]


def test_max_predictions_zero_is_refused_before_the_run_directory_exists(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    args = _pretrain_args(corpus, run)
    args[args.index("--max-predictions") + 1] = 0
    code, _, err = run_cli(capsys, *args)
    _one_line_error(code, err, "--max-predictions must be at least 1")
    assert not run.exists()


def test_pretrain_refuses_non_utf8_text_like_tokenize(corpus, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes((corpus / "news.txt").read_bytes()[:2000] + b"\nan \xff byte\n")
    args = _pretrain_args(corpus, tmp_path / "run")
    args[args.index(corpus / "news.txt")] = bad
    code, _, err = run_cli(capsys, *args)
    _one_line_error(code, err, f"{bad}:", "not UTF-8")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# 5, 7. tokenize / vocab: no silent replacement, never the input, temps of a killed run removed


@pytest.fixture()
def text(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("".join(t + "\n" for t in news_texts(limit=5)), encoding="utf-8")
    return path


def _tokenize(capsys, source, output, *extra):
    return run_cli(capsys, "tokenize", source, "--vocab", VOCAB, "--output", output, "--seq-length", 16, *extra)


@pytest.mark.parametrize("fmt,name", [("tfrecord", "out"), ("jsonl", "out.jsonl")])
def test_tokenize_replaces_an_earlier_output_only_with_force(text, tmp_path, capsys, fmt, name):
    output = tmp_path / name
    assert _tokenize(capsys, text, output, "--format", fmt)[0] == 0
    before = _tree(tmp_path)
    code, _, err = _tokenize(capsys, text, output, "--format", fmt, "--seq-length", 24)
    _one_line_error(code, err, "already exists", "--force")
    assert _tree(tmp_path) == before
    code, _, err = _tokenize(capsys, text, output, "--format", fmt, "--seq-length", 24, "--force")
    assert code == 0, err
    assert _tree(tmp_path) != before and _leftovers(output) == []


def test_tokenize_force_still_refuses_a_folder_that_is_not_a_tokenize_output(text, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, _, err = _tokenize(capsys, text, tmp_path / "mine", "--force")
    _one_line_error(code, err, "is not an nlpkit tokenize folder")
    assert _tree(tmp_path / "mine") == {"notes.txt": b"keep"}


def test_tokenize_refuses_to_write_over_its_input(tmp_path, capsys):
    table = tmp_path / "D.csv"
    table.write_text("text\nhello world\nsecond row\n", encoding="utf-8")
    before = table.read_bytes()
    code, _, err = _tokenize(capsys, table, table, "--format", "jsonl", "--force")
    _one_line_error(code, err, "is also the input")
    assert table.read_bytes() == before
    # the input inside the output folder counts too: replacing the folder would delete it
    code, _, err = _tokenize(capsys, table, tmp_path, "--force")
    _one_line_error(code, err, "is also the input")
    assert table.read_bytes() == before


def test_vocab_refuses_its_input_and_an_existing_output_without_force(text, tmp_path, capsys):
    before = text.read_bytes()
    code, _, err = run_cli(capsys, "vocab", text, "-o", text, "--size", 200, "--force")
    _one_line_error(code, err, "is also the input")
    assert text.read_bytes() == before
    existing = tmp_path / "vocab.txt"
    existing.write_text("mine\n")
    code, _, err = run_cli(capsys, "vocab", text, "-o", existing, "--size", 200)
    _one_line_error(code, err, "already exists", "--force")
    assert existing.read_text() == "mine\n"
    (tmp_path / "folder").mkdir()
    code, _, err = run_cli(capsys, "vocab", text, "-o", tmp_path / "folder", "--size", 200, "--force")
    _one_line_error(code, err, "is a folder")
    code, _, err = run_cli(capsys, "vocab", text, "-o", existing, "--size", 200, "--force")
    assert code == 0, err
    assert "[PAD]" in existing.read_text()


def test_killed_tokenize_leaves_temps_the_next_run_removes(tmp_path, capsys):
    """Real process: tokenize killed -9 mid-write leaves `.out.PID.*.tmp`; the next tokenize of the
    same output removes it (and a pre-PID-format leftover), but not a live process's temp."""
    big = tmp_path / "big.txt"
    with open(big, "w", encoding="utf-8") as handle:
        lines = "".join(t + "\n" for t in news_texts(limit=400))
        for _ in range(20):
            handle.write(lines)
    output = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "commands.main", "--quiet", "tokenize", str(big), "--vocab", str(VOCAB),
         "--output", str(output), "--rows-per-shard", "50"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: any(tmp_path.glob(".out.*.tmp/*")), process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed = _leftovers(output)
    assert killed and not output.exists()
    legacy = tmp_path / ".out.abcd1234.tmp"  # the name nlpkit used before temps carried a PID
    legacy.mkdir()
    live = tmp_path / f".out.{os.getpid()}.live1234.tmp"  # another writer, still running
    live.mkdir()
    small = tmp_path / "small.txt"
    small.write_text("one line\nanother line\n", encoding="utf-8")
    code, _, err = _tokenize(capsys, small, output)
    assert code == 0, err
    assert _leftovers(output) == [live.name]


# --------------------------------------------------------------------------------------------------
# 5, 9, 11. predict / evaluate / finetune / export outputs, and JSON that stays JSON


def test_predict_and_evaluate_outputs_are_not_replaced_without_force(classifier, task, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    out.write_text("mine\n")
    code, _, err = run_cli(capsys, "predict", "--model", classifier, "-o", out, "some text")
    _one_line_error(code, err, "already exists", "--force")
    assert out.read_text() == "mine\n"
    code, _, err = run_cli(capsys, "predict", "--model", classifier, "-o", out, "some text", "--force")
    assert code == 0, err
    assert json.loads(out.read_text())["text"] == "some text"
    metrics = tmp_path / "m.json"
    metrics.write_text("{}")
    code, _, err = run_cli(capsys, "evaluate", "--model", classifier, "--data", task / "test.csv", "--json", metrics)
    _one_line_error(code, err, "--json", "already exists")
    assert metrics.read_text() == "{}"
    code, _, err = run_cli(capsys, "predict", "--model", classifier, "-o", tmp_path, "x")
    _one_line_error(code, err, "is a folder")


def test_finetune_and_export_output_checks(classifier, task, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = run_cli(capsys, *_finetune_args(task, mine, "--force"))
    _one_line_error(code, err, "is not a model directory")
    code, _, err = run_cli(capsys, *_finetune_args(task, task, "--overwrite"))
    _one_line_error(code, err, "is also the input")
    code, _, err = run_cli(capsys, "export", "--model", classifier, "--output", mine, "--force")
    _one_line_error(code, err, "is not a SavedModel")
    assert _tree(mine) == {"notes.txt": b"keep"}
    code, _, err = run_cli(capsys, "export", "--model", classifier, "--output", tmp_path / "s", "--seq-length", 0)
    _one_line_error(code, err, "--seq-length 0")
    code, _, err = run_cli(capsys, *_finetune_args(task, tmp_path / "long", "--seq-length", 100_000))
    _one_line_error(code, err, f"max_sequence_length {TINY_ENCODER['max_sequence_length']}")
    assert not (tmp_path / "long").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("rate", ["nan", "1e38"])
def test_finetune_stops_on_a_non_finite_loss_and_saves_nothing(task, tmp_path, capsys, rate):
    output = tmp_path / "model"
    code, _, err = run_cli(capsys, *_finetune_args(task, output, "--learning-rate", rate))
    _one_line_error(code, err)
    assert "NaN" in err or "--learning-rate" in err
    assert not output.exists() and _leftovers(output) == []


class _NanClassifier:
    """A classifier whose model gives NaN (what a broken model directory does)."""

    labels = ["a", "b"]

    def __init__(self, model_dir, *args, **kwargs):
        pass

    def predict(self, texts, *args, **kwargs):
        return texts

    def records(self, outputs):
        return [{"label": "a", "probabilities": {"a": float("nan"), "b": float("inf")}} for _ in outputs]


def test_predict_json_stays_valid_json_with_nan(tmp_path, capsys, monkeypatch):
    from nlpkit.models import inference

    monkeypatch.setattr(inference, "InferenceModel", _NanClassifier)
    code, out, err = run_cli(capsys, "predict", "--model", tmp_path, "one", "two")
    assert code == 0, err

    def refuse(constant):
        raise AssertionError(f"invalid JSON constant {constant}")

    rows = [json.loads(line, parse_constant=refuse) for line in out.splitlines()]
    assert rows[0]["probabilities"] == {"a": None, "b": None}


@pytest.mark.parametrize("case,content,words", [
    ("non-UTF-8 file", b"fine\nnot \xff fine\n", ["in.txt:2", "not UTF-8"]),
    ("empty file", b"", ["holds no texts"]),
    ("blank lines only", b"\n  \n", ["holds no texts"]),
    ("folder", None, ["is a folder"]),
])
def test_predict_input_file_errors(tmp_path, capsys, case, content, words):
    path = tmp_path / "in.txt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path, "-i", path)
    _one_line_error(code, err, *words)


@pytest.mark.parametrize("args", [["predict", "--model", "{tmp}", "-i", "/dev/null"],
                                  ["tokenize", "/dev/null", "--vocab", VOCAB, "-o", "{tmp}/out"],
                                  ["vocab", "/dev/null", "-o", "{tmp}/v.txt"]])
def test_a_device_as_input_is_named_as_such(tmp_path, capsys, args):
    code, _, err = run_cli(capsys, *[str(a).format(tmp=tmp_path) for a in args])
    _one_line_error(code, err, "/dev/null", "not a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("content,words", [(b"", ["standard input holds no texts"]),
                                           (b"ok\n\xfe\n", ["standard input", "not UTF-8"])])
def test_predict_stdin_errors(tmp_path, capsys, monkeypatch, content, words):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content), encoding="utf-8"))
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path, "-i", "-")
    _one_line_error(code, err, *words)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("writer", ["vocab", "tokenize jsonl", "predict"])
def test_a_full_disk_is_one_line_and_leaves_no_temp(text, tmp_path, capsys, monkeypatch, writer):
    from nlpkit.data import records
    from nlpkit.models import inference

    out = tmp_path / "out.txt"
    if writer == "vocab":
        monkeypatch.setattr(Path, "write_text", _no_space)
        args = ["vocab", text, "-o", out, "--size", 200]
    elif writer == "tokenize jsonl":
        monkeypatch.setattr(records.JsonLinesWriter, "write_batch", _no_space)
        args = ["tokenize", text, "--vocab", VOCAB, "-o", out, "--format", "jsonl"]
    else:
        monkeypatch.setattr(inference, "InferenceModel", _NanClassifier)
        monkeypatch.setattr(Path, "write_text", _no_space)
        args = ["predict", "--model", tmp_path, "-o", out, "text"]
    code, _, err = run_cli(capsys, *args)
    _one_line_error(code, err, "no space left on the device", str(out))
    assert not out.exists() and _leftovers(out) == []


# --------------------------------------------------------------------------------------------------
# 12. options checked before any work, under their own names


@pytest.mark.parametrize("args,words", [
    (["tokenize", "{text}", "--vocab", VOCAB, "-o", "{tmp}/o", "--batch-size", 0], ["--batch-size must be at least 1"]),
    (["tokenize", "{text}", "--vocab", VOCAB, "-o", "{tmp}/o", "--rows-per-shard", 0],
     ["--rows-per-shard must be at least 1"]),
    (["demo", "-o", "{tmp}/o", "--epochs", 0], ["--epochs must be at least 1"]),
    (["demo", "-o", "{tmp}/o", "--pretrain-steps", -1], ["--pretrain-steps must be at least 1"]),
])
def test_options_are_checked_first_under_their_own_names(text, tmp_path, capsys, args, words):
    args = [str(a).format(text=text, tmp=tmp_path) for a in args]
    code, _, err = run_cli(capsys, *args)
    _one_line_error(code, err, *words)
    assert not (tmp_path / "o").exists()


def test_demo_force_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep")
    code, _, err = run_cli(capsys, "demo", "-o", tmp_path, "--force")
    _one_line_error(code, err, "is not an nlpkit demo folder")
    assert (tmp_path / "notes.txt").read_text() == "keep"


def _earlier_demo(folder):
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "reviews_train.csv").write_text("text,label\nold,fresh\n")
    (folder / "predictions.jsonl").write_text('{"old": true}\n')
    return _tree(folder)


def test_demo_force_keeps_the_earlier_demo_when_the_new_one_fails(tmp_path, capsys, monkeypatch):
    import commands.run_all as run_all
    from nlpkit.errors import NlpkitError

    before = _earlier_demo(tmp_path / "demo")

    def failing_step(app, number, title, args):
        raise NlpkitError(f"step {number} failed")

    monkeypatch.setattr(run_all, "_run_step", failing_step)
    code, _, err = run_cli(capsys, "demo", "-o", tmp_path / "demo", "--force")
    _one_line_error(code, err, "step 1 failed")
    assert _tree(tmp_path / "demo") == before
    assert _leftovers(tmp_path / "demo") == []


def test_demo_force_replaces_the_earlier_demo_once_the_new_one_is_complete(tmp_path, capsys, monkeypatch):
    import commands.run_all as run_all

    _earlier_demo(tmp_path / "demo")
    seen_old = []

    def step(app, number, title, args):
        # While the new demo is built the earlier one is still whole at its place.
        seen_old.append((tmp_path / "demo" / "predictions.jsonl").read_text())
        if args[0] == "vocab":
            Path(args[args.index("--output") + 1]).write_bytes(Path(VOCAB).read_bytes())
        if args[0] == "predict":
            rows = [{"text": text, "label": "fresh", "probabilities": {"fresh": 0.6, "rotten": 0.4}, "uncertainty": 0.1}
                    for text in run_all.SENTENCES]
            Path(args[args.index("--output") + 1]).write_text("".join(json.dumps(row) + "\n" for row in rows))
        return 0.0

    monkeypatch.setattr(run_all, "_run_step", step)
    code, _, err = run_cli(capsys, "demo", "-o", tmp_path / "demo", "--force", "--news-articles", 3,
                           "--reviews-train", 4, "--reviews-test", 2)
    assert code == 0, err
    assert set(seen_old) == {'{"old": true}\n'}
    assert json.loads((tmp_path / "demo" / "predictions.jsonl").read_text().splitlines()[0])["uncertainty"] == 0.1
    assert (tmp_path / "demo" / "data" / "reviews_train.csv").read_text() != "text,label\nold,fresh\n"
    assert _leftovers(tmp_path / "demo") == []
