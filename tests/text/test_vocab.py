"""Vocab loading checks, tokenizer choice by file type, and vocabulary training."""

import pytest
import sentencepiece

from nlpkit.data import bundled
from nlpkit.errors import NlpkitError
from nlpkit.text import vocab_training
from nlpkit.text.sentencepiece import SentencePieceTokenizer
from nlpkit.text.tokenizers import load_tokenizer
from nlpkit.text.vocab import file_checksum, load_wordpiece_vocab
from nlpkit.text.wordpiece import WordPieceTokenizer
from tests.text import bert_reference

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def test_loader_picks_the_tokenizer_from_the_file():
    assert isinstance(load_tokenizer(bundled.bert_vocab_path()), WordPieceTokenizer)
    assert isinstance(load_tokenizer(bundled.spm_model_path()), SentencePieceTokenizer)


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("[PAD]\n[UNK]\n[CLS]\nhello\n", "lacks the special tokens \\[SEP\\]"),
        ("hello\nworld\n", "lacks the special tokens \\[PAD\\], \\[UNK\\], \\[CLS\\], \\[SEP\\]"),
    ],
)
def test_bad_vocab_files(tmp_path, content, message):
    path = tmp_path / "vocab.txt"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(NlpkitError, match=message):
        load_tokenizer(path)


def test_vocab_folder_and_non_utf8(tmp_path):
    with pytest.raises(NlpkitError, match="is a folder"):
        load_wordpiece_vocab(tmp_path)
    (tmp_path / "v.txt").write_bytes(b"[PAD]\n\xff\n")
    with pytest.raises(NlpkitError, match="not UTF-8"):
        load_wordpiece_vocab(tmp_path / "v.txt")


def test_checksum_changes_with_content(tmp_path):
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("y")
    assert file_checksum(tmp_path / "a") != file_checksum(tmp_path / "b")
    assert file_checksum(tmp_path / "a").startswith("sha256:")


def news_batches(count=120):
    texts = bundled.news_texts(limit=count)
    return lambda: (texts[i:i + 32] for i in range(0, len(texts), 32))


def test_wordpiece_training_reserves_specials_and_covers_the_corpus():
    vocab = vocab_training.learn_wordpiece_vocab(news_batches(), 1500)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) <= 1500 and len(set(vocab)) == len(vocab)
    assert "the" in vocab
    # Tokenizing the training text with the new vocab (reference tokenizer): almost never [UNK].
    lookup = {token: index for index, token in enumerate(vocab)}
    tokens = [t for text in bundled.news_texts(limit=20) for t in bert_reference.tokenize(text, lookup)]
    assert tokens.count("[UNK]") / len(tokens) < 0.01
    assert WordPieceTokenizer(vocab).vocab_size == len(vocab)


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_training(tmp_path, model_type):
    path = tmp_path / "spm.model"
    vocab_training.train_sentencepiece(news_batches(), 600, path, model_type=model_type)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    assert processor.get_piece_size() == 600
    assert [processor.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    tokenizer = SentencePieceTokenizer(path)
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id) == (4, 5, 0)
    text = "The president said on Tuesday."
    assert tokenizer.detokenize(tokenizer.tokenize([text])).numpy()[0].decode() == text


def test_training_errors(tmp_path):
    with pytest.raises(NlpkitError, match="too small"):
        vocab_training.learn_wordpiece_vocab(news_batches(), 10)
    with pytest.raises(NlpkitError, match="SentencePiece training failed"):
        vocab_training.train_sentencepiece(lambda: iter([["tiny corpus"]]), 5000, tmp_path / "x.model")
    assert not (tmp_path / "x.model").exists()


@pytest.mark.parametrize(
    "name,is_model",
    [("spm.model", True), ("tokenizer.model.v1", True), ("vocab.txt", False), ("model.txt", False),
     ("spm.models", False), ("model", False)],
)
def test_one_sentencepiece_file_rule(name, is_model):
    from nlpkit.text.vocab import is_sentencepiece

    assert is_sentencepiece(name) is is_model


def test_vocab_command_writes_a_model_the_loader_reads_as_sentencepiece(tmp_path, capsys):
    # `nlpkit vocab` and `load_tokenizer` must agree on what a SentencePiece file is called:
    # tokenizer.model.v1 (the name of the bundled Mistral model) is one for both.
    from tests.cli import run_cli

    corpus = tmp_path / "news.txt"
    corpus.write_text("".join(t + "\n" for t in bundled.news_texts(limit=60)), encoding="utf-8")
    output = tmp_path / "tokenizer.model.v1"
    code, _, err = run_cli(capsys, "vocab", corpus, "--output", output, "--size", 300, "--kind", "sentencepiece")
    assert code == 0, err
    tokenizer = load_tokenizer(output)
    assert isinstance(tokenizer, SentencePieceTokenizer)
    reference = sentencepiece.SentencePieceProcessor(model_file=str(output))
    assert tokenizer.vocab_size == reference.get_piece_size() == 300
