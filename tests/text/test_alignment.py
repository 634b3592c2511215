"""Word/piece alignment worked by hand with the real bert-base-uncased vocab, windows, offsets."""

import numpy as np
import pytest

from nlpkit.data.bundled import bert_vocab_path
from nlpkit.data.token_tags import entities_with_offsets
from nlpkit.text import alignment as al
from nlpkit.text.tokenizers import load_tokenizer

X = al.IGNORE_INDEX


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(bert_vocab_path())


def _pieces(tokenizer, aligned, row):
    ids = aligned.inputs["input_word_ids"][row][aligned.inputs["input_mask"][row] == 1]
    return [t.decode() for t in tokenizer.id_to_token(ids).numpy()]


def test_first_piece_carries_the_label_punctuation_and_sub_words_ignored(tokenizer):
    # "(U.S.)" is one CoNLL word that BERT splits at every symbol; "Blackburn's" into sub-words.
    words = ['"(U.S.)', "Steel", "Blackburn's", '."']
    aligned = al.align_words(tokenizer, [words], seq_length=32, labels=[[1, 2, 3, 0]])
    assert _pieces(tokenizer, aligned, 0) == [
        "[CLS]", '"', "(", "u", ".", "s", ".", ")", "steel", "blackburn", "'", "s", ".", '"', "[SEP]"]
    want = [X, 1, X, X, X, X, X, X, 2, 3, X, X, 0, X, X]
    np.testing.assert_array_equal(aligned.labels[0, :15], want)
    assert (aligned.labels[0, 15:] == X).all() and (aligned.inputs["input_mask"][0, 15:] == 0).all()
    np.testing.assert_array_equal(np.flatnonzero(aligned.word_index[0] >= 0), [1, 8, 9, 12])


def test_a_sentence_longer_than_seq_length_is_split_into_windows_at_words(tokenizer):
    words = ["Rockwell", "International", "Corp.", "'s", "Tulsa", "unit", "said"]
    # pieces: rockwell | international | corp . | ' s | tulsa | unit | said  -> 9 pieces, 6 fit a row
    aligned = al.align_words(tokenizer, [words, ["Boeing"]], seq_length=8, labels=[[1, 2, 2, 3, 4, 5, 6], [7]])
    assert aligned.split_sentences == 1
    assert _pieces(tokenizer, aligned, 0) == ["[CLS]", "rockwell", "international", "corp", ".", "'", "s", "[SEP]"]
    assert _pieces(tokenizer, aligned, 1) == ["[CLS]", "tulsa", "unit", "said", "[SEP]"]
    np.testing.assert_array_equal(aligned.row_sentence, [0, 0, 1])
    np.testing.assert_array_equal(aligned.labels[0], [X, 1, 2, 2, X, 3, X, X])
    np.testing.assert_array_equal(aligned.labels[1], [X, 4, 5, 6, X, X, X, X])
    # Every word is predicted exactly once: mapping the labels back gives the word labels.
    back = al.word_predictions(aligned, aligned.labels, fill=-1)
    assert [list(b) for b in back] == [[1, 2, 2, 3, 4, 5, 6], [7]]


def test_a_word_longer_than_a_window_is_cut_and_words_without_pieces_get_fill(tokenizer):
    aligned = al.align_words(tokenizer, [["a", "(((((((", "b"], ["\u0000", "c"]], seq_length=5)
    assert _pieces(tokenizer, aligned, 1) == ["[CLS]", "(", "(", "(", "[SEP]"]
    scores = np.arange(aligned.word_index.size).reshape(aligned.word_index.shape)
    first, second = al.word_predictions(aligned, scores, fill=-7)
    assert list(first) == [scores[0, 1], scores[1, 1], scores[2, 1]]
    assert list(second) == [-7, scores[3, 1]]  # NUL gives no piece


def test_entities_with_character_offsets_into_the_original_text():
    text = 'He met  Peter Blackburn (of "U.S. Steel") today.'
    words, offsets = al.split_words(text)
    assert words[:6] == ["He", "met", "Peter", "Blackburn", "(", "of"]
    tags = ["O"] * len(words)
    tags[2:4] = ["B-PER", "I-PER"]
    us = words.index("U")
    tags[us:us + 5] = ["B-ORG"] + ["I-ORG"] * 4  # U . S . Steel
    entities = entities_with_offsets(text, offsets, tags)
    assert [(e["type"], e["start"], e["end"], e["text"]) for e in entities] == [
        ("PER", 8, 23, "Peter Blackburn"), ("ORG", 29, 39, "U.S. Steel")]
    assert al.token_offsets(text, ["Peter", "Blackburn", "(of"]) == [(8, 13), (14, 23), (24, 27)]


def test_sentencepiece_words_align_to_the_pieces_the_library_gives_each_word():
    import sentencepiece

    from nlpkit.data.bundled import spm_model_path

    tokenizer = load_tokenizer(spm_model_path())
    reference = sentencepiece.SentencePieceProcessor(model_file=str(spm_model_path()))
    words = ["Blackburn", "'s", "(U.S.)", "unit"]
    aligned = al.align_words(tokenizer, [words], seq_length=24, labels=[[3, 0, 1, 2]])
    pieces = [reference.encode(word) for word in words]
    flat = [tokenizer.cls_id] + [i for p in pieces for i in p] + [tokenizer.sep_id]
    np.testing.assert_array_equal(aligned.inputs["input_word_ids"][0, : len(flat)], flat)
    firsts = 1 + np.cumsum([0] + [len(p) for p in pieces[:-1]])
    want = np.full(24, X)
    want[firsts] = [3, 0, 1, 2]
    np.testing.assert_array_equal(aligned.labels[0], want)
