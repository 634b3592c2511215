"""`nlpkit vocab`: WordPiece and SentencePiece training from the command line, and its bad inputs."""

import pytest
import sentencepiece

from nlpkit.data import bundled
from tests.commands.test_cli import run_cli


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "news.txt"
    path.write_text("".join(t + "\n" for t in bundled.news_texts(limit=60)), encoding="utf-8")
    return path


@pytest.fixture()
def cli(capsys, monkeypatch):
    return lambda *args: run_cli(args, capsys, monkeypatch)


def test_wordpiece_vocab_then_tokenize_with_it(cli, corpus, tmp_path):
    code, _, err = cli("vocab", corpus, "--output", tmp_path / "vocab.txt", "--size", 800)
    assert code == 0, err
    vocab = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(vocab) <= 800
    code, _, err = cli("tokenize", corpus, "--vocab", tmp_path / "vocab.txt", "--output", tmp_path / "out",
                       "--seq-length", 16)
    assert code == 0, err
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_sentencepiece_model(cli, corpus, tmp_path):
    code, _, err = cli("vocab", corpus, "--output", tmp_path / "spm.model", "--size", 500,
                       "--kind", "sentencepiece", "--model-type", "bpe")
    assert code == 0, err
    processor = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "spm.model"))
    assert processor.get_piece_size() == 500 and processor.piece_to_id("[CLS]") == 4


@pytest.mark.parametrize(
    "args,message",
    [
        (["--kind", "bpe"], "unknown --kind 'bpe'"),
        (["--kind", "sentencepiece"], "must end in .model"),
        (["--size", "20"], "too small"),
    ],
)
def test_bad_options(cli, corpus, tmp_path, args, message):
    code, _, err = cli("vocab", corpus, "--output", tmp_path / "vocab.txt", *args)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and message in err
    assert not (tmp_path / "vocab.txt").exists()


def test_non_utf8_corpus(cli, tmp_path):
    (tmp_path / "c.txt").write_bytes(b"one\ntwo \xc3\x28\n")
    code, _, err = cli("vocab", tmp_path / "c.txt", "--output", tmp_path / "vocab.txt")
    assert code == 2 and "c.txt:2: bytes that are not UTF-8" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
