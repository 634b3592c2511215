"""A clean terminal (issue #14): real `nlpkit` processes print only nlpkit's own lines.

They run as a user would start them: none of the log-level variables a test runner or CI sets
(TF_CPP_MIN_LOG_LEVEL...), and `TF_ENABLE_ONEDNN_OPTS=1`, so TensorFlow's oneDNN banner is due on
any CPU. Every line of stdout and stderr is checked against what the command itself prints.
"""

import os
import re
import subprocess
import sys

from nlpkit.data import bundled

# What a user's shell would not have: variables that tune dependencies' logging or warnings.
_RUNNER_VARIABLES = re.compile(r"^(TF_|ABSL|GLOG|PYTHONWARNINGS$|DATASETS_VERBOSITY$|KERAS_BACKEND$)")
# Lines that are never nlpkit's: absl/glog ("I0000 00:00:..."), Python warnings and logging records.
_FOREIGN = re.compile(r"^[IWEF]\d{4} |^WARNING|Warning:|warnings\.warn|^(INFO|DEBUG|ERROR):|Traceback")
DOCTOR_COMPONENTS = {"python", "nlpkit", "tensorflow", "tensorflow-text", "keras", "datasets", "sentencepiece", "jax",
                     "--precision auto"}


def run_as_user(*args):
    environment = {name: value for name, value in os.environ.items() if not _RUNNER_VARIABLES.match(name)}
    environment.update(TF_ENABLE_ONEDNN_OPTS="1", COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "commands.main", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=environment)
    stdout, stderr = done.stdout.splitlines(), done.stderr.splitlines()
    foreign = [line for line in stdout + stderr if _FOREIGN.search(line)]
    assert not foreign, foreign  # the clearest message when noise leaks; the exact checks follow
    return done.returncode, stdout, stderr


def test_doctor_prints_only_its_table():
    code, out, err = run_as_user("doctor")
    assert (code, err) == (0, [])
    assert out[0].strip() == "nlpkit doctor"
    assert all(line[0] in "┏┃┡│└" for line in out[1:]), out
    rows = [line for line in out if line.startswith("│")]
    assert {row.split("│")[1].strip() for row in rows} == DOCTOR_COMPONENTS


def test_tokenize_prints_only_its_progress_and_summary(tmp_path):
    texts = bundled.news_texts(limit=5)  # one line each
    (tmp_path / "news.txt").write_text("\n".join(texts) + "\n")
    output = tmp_path / "out"
    code, out, err = run_as_user("tokenize", tmp_path / "news.txt", "--vocab", bundled.bert_vocab_path(),
                                 "--output", output)
    assert code == 0, err
    assert len(out) == 1 and re.fullmatch(
        rf"wrote {len(texts)} rows to {re.escape(str(output))} \(tfrecord, seq_length 128; "
        r"[\d,]+ truncated, [\d,]+ tokens dropped\)", out[0]
    ), out
    assert err and all(line.startswith("tokenize ") for line in err), err  # the progress bar


def test_failing_tokenize_prints_only_the_error_line(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    missing = tmp_path / "missing_vocab.txt"
    code, out, err = run_as_user("tokenize", tmp_path / "in.txt", "--vocab", missing, "--output", tmp_path / "out")
    assert (code, out) == (2, [])
    assert err == [f"error: vocab file {missing} does not exist (pass --vocab PATH of a vocab.txt or .model file)"]


def test_unreadable_csv_is_one_line_without_the_datasets_log(tmp_path):
    """`datasets` logs "Failed to read file ..." before raising; nlpkit's own line is the only one."""
    broken = tmp_path / "broken.csv"
    broken.write_text('text\na first row that parses\n"an opening quote that never closes\n')
    code, out, err = run_as_user("tokenize", broken, "--vocab", bundled.bert_vocab_path(), "--output", tmp_path / "o")
    assert (code, out, len(err)) == (2, [], 1), err
    assert err[0].startswith(f"error: cannot read {broken}: ")
