"""No example, demo or README command chooses the epoch on the file it then reports test figures on.

A newcomer copies what these do: the rows `finetune --validation` reads must never be the rows
`evaluate --data` scores (a held-out split of --train, or a separate file, is fine).
"""

import re
import shlex
from pathlib import Path

from commands.run_all import demo_steps

ROOT = Path(__file__).parents[2]


def _commands(text):
    """Each `nlpkit ...` command of a shell text (continuation lines joined, functions included)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        # nlpkit as the command word (after optional VAR=value assignments), not inside an echo
        command = re.match(r"\s*(?:[A-Z_]+=\S+\s+)*(nlpkit\s.*)", line.split("#", 1)[0])
        if command:
            yield shlex.split(command.group(1), posix=True)


def _option(words, name):
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == name]


def _validation_and_evaluation_files(commands):
    validation, evaluation = set(), set()
    for words in commands:
        words = [str(word) for word in words]
        if "finetune" in words:
            validation.update(_option(words, "--validation"))
        if "evaluate" in words:
            evaluation.update(_option(words, "--data"))
    return validation, evaluation


def _shell_texts():
    common = (ROOT / "examples" / "common.sh").read_text(encoding="utf-8")
    for script in sorted((ROOT / "examples").glob("*/run.sh")):
        yield script, common + script.read_text(encoding="utf-8")  # the helpers a script calls are in common.sh
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    inline = re.findall(r"`(nlpkit [^`]+)`", readme)  # e.g. the command table's examples
    yield ROOT / "README.md", "\n".join(blocks + inline)


def test_no_example_or_readme_validates_on_its_evaluation_file():
    checked = 0
    for path, text in _shell_texts():
        validation, evaluation = _validation_and_evaluation_files(_commands(text))
        assert not validation & evaluation, f"{path} passes {validation & evaluation} as --validation and evaluate --data"
        checked += bool(evaluation)
    assert checked >= 4  # the example scripts that evaluate and the README were found and read


def test_the_demo_validates_on_training_rows_only(tmp_path):
    steps = demo_steps(tmp_path, tmp_path / "data", epochs=1, seed=0, pretrain_steps=1)
    validation, evaluation = _validation_and_evaluation_files(args for _, args in steps)
    assert evaluation == {str(tmp_path / "data" / "reviews_test.csv")}
    assert not validation & evaluation
    finetunes = [args for _, args in steps if args[0] == "finetune"]
    assert finetunes and all("--validation-split" in args or "--validation" in args for args in finetunes)
