"""`nlpkit tokenize` end to end, and every bad input of the issue: one line, exit code 2, no output left."""

import json
import re

import pytest
import sentencepiece

from nlpkit.data import bundled
from tests.commands.test_cli import run_cli
from tests.text import bert_reference

VOCAB = bundled.bert_vocab_path()


@pytest.fixture()
def cli(capsys, monkeypatch):
    return lambda *args: run_cli(args, capsys, monkeypatch)


def bert_ids(text, seq_length, vocab):
    """[CLS] tokens [SEP] + padding from the pure-Python original-BERT reference."""
    ids = [101] + bert_reference.encode(text, vocab)[: seq_length - 2] + [102]
    return ids + [0] * (seq_length - len(ids))


def test_jsonl_matches_reference_in_input_order(cli, tmp_path):
    texts = bundled.news_texts(limit=12) + ["Héllo [MASK] wörld! 中文 😀", "short"]
    (tmp_path / "in.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    code, out, err = cli("tokenize", tmp_path / "in.txt", "--vocab", VOCAB, "--output", tmp_path / "o.jsonl",
                         "--format", "jsonl", "--seq-length", 32, "--preview", 2)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    vocab = {t: i for i, t in enumerate(VOCAB.read_text(encoding="utf-8").splitlines())}
    assert [r["input_word_ids"] for r in rows] == [bert_ids(t, 32, vocab) for t in texts]
    assert all(r["input_mask"] == [int(i != 0) for i in r["input_word_ids"]] for r in rows)
    assert all(r["input_type_ids"] == [0] * 32 for r in rows)
    assert "first 2 rows" in out and "michigan" in out  # the preview table of the first article
    assert "…" in out  # the article's tokens are cut at --seq-length


def test_tfrecord_with_pair_and_label_and_manifest(cli, tmp_path):
    (tmp_path / "d.csv").write_text("q,a,y\nWho?,Me.,fresh\nWhat?,That.,rotten\n", encoding="utf-8")
    code, _, err = cli("tokenize", tmp_path / "d.csv", "--vocab", VOCAB, "--output", tmp_path / "out",
                       "--text-column", "q", "--pair-column", "a", "--label-column", "y", "--seq-length", 8)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rows"] == 2 and manifest["seq_length"] == 8 and manifest["label_names"] == ["fresh", "rotten"]
    assert manifest["vocab_checksum"].startswith("sha256:") and manifest["truncation"]["truncated_rows"] == 0
    from nlpkit.data.records import load_records

    first = next(load_records(tmp_path / "out").as_numpy_iterator())
    # who ? | me .  (who=2040, ?=1029, me=2033, .=1012)
    assert first["input_word_ids"].tolist() == [101, 2040, 1029, 102, 2033, 1012, 102, 0]
    assert first["input_type_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    assert first["label"] == 0


def test_sentencepiece_model_as_vocab(cli, tmp_path):
    (tmp_path / "in.txt").write_text("Hello world!\n", encoding="utf-8")
    model = bundled.spm_model_path()
    code, _, err = cli("tokenize", tmp_path / "in.txt", "--vocab", model, "--output", tmp_path / "o.jsonl",
                       "--format", "jsonl", "--seq-length", 8)
    assert code == 0, err
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    pieces = processor.encode("Hello world!")
    expected = [processor.bos_id(), *pieces, processor.eos_id()]
    row = json.loads((tmp_path / "o.jsonl").read_text())
    assert row["input_word_ids"] == expected + [0] * (8 - len(expected))


def test_errors_replace_continues(cli, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"ok\nbad \xff here\n")
    code, _, err = cli("tokenize", tmp_path / "in.txt", "--vocab", VOCAB, "--output", tmp_path / "o.jsonl",
                       "--format", "jsonl", "--seq-length", 8, "--errors", "replace")
    assert code == 0, err
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


BAD_INPUTS = {
    "non-utf8": ({"in.txt": b"fine\nbad \xff\n"}, [], "in.txt:2: bytes that are not UTF-8"),
    "empty input": ({"in.txt": b""}, [], "is empty"),
    "blank input": ({"in.txt": b"\n \n"}, [], "has no text rows"),
    "missing vocab": ({"in.txt": b"x\n"}, ["--vocab", "{tmp}/nope.txt"], "vocab file .*nope.txt does not exist"),
    "empty vocab": ({"in.txt": b"x\n", "v.txt": b""}, ["--vocab", "{tmp}/v.txt"], "v.txt is empty"),
    "vocab without specials": (
        {"in.txt": b"x\n", "v.txt": b"[PAD]\n[UNK]\nx\n"}, ["--vocab", "{tmp}/v.txt"],
        r"lacks the special tokens \[CLS\], \[SEP\]",
    ),
    "unknown column": ({"in.csv": b"sentence\nhi\n"}, ["--input", "in.csv"], "column 'text' is not in"),
    "seq length": ({"in.txt": b"x\n"}, ["--seq-length", "2"], "--seq-length 2 is too small"),
    "unwritable output": ({"in.txt": b"x\n", "file": b"a file"}, ["--output", "{tmp}/file/out.jsonl"],
                          "cannot create output folder"),
    "hub name offline": ({}, ["--input", "some_hub_dataset"], "cannot load dataset 'some_hub_dataset'"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_one_line_exit_2_no_output(cli, tmp_path, case):
    files, overrides, message = BAD_INPUTS[case]
    for name, content in files.items():
        write(tmp_path / name, content)
    options = {"--input": "in.txt", "--vocab": str(VOCAB), "--output": "{tmp}/out.jsonl", "--seq-length": "16"}
    options.update(dict(zip(overrides[::2], overrides[1::2])))
    options = {k: v.format(tmp=tmp_path) for k, v in options.items()}
    source = options.pop("--input")
    source = str(tmp_path / source) if (tmp_path / source).exists() or "." in source else source
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["tokenize", source, "--format", "jsonl"] + [x for item in options.items() for x in item]
    code, _, err = cli(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporary left
