"""WordPiece tokenization against hand-worked BERT tokens and a pure-Python original-BERT reference."""

import numpy as np
import pytest

from nlpkit.data import bundled
from nlpkit.text.wordpiece import BertTokenizer, WordPieceTokenizer, tf
from tests.text import bert_reference

VOCAB_PATH = bundled.bert_vocab_path()


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(VOCAB_PATH)


@pytest.fixture(scope="module")
def vocab(tokenizer):
    return tokenizer.token_to_id


def tokens_of(tokenizer, text):
    ids = tokenizer.tokenize([text])[0].numpy().tolist()
    return [tokenizer.vocab[i] for i in ids]


# Hand-worked with the bert-base-uncased vocab: original BERT lower-cases, strips accents after NFD,
# splits punctuation and CJK, drops control characters, never applies NFKC, and caps words at 100 characters.
HAND_WORKED = [
    ("Héllo, Wörld!", ["hello", ",", "world", "!"]),
    ("naïve café", ["naive", "cafe"]),
    ("中文 abc", ["中", "文", "abc"]),
    ("emoji 😀!", ["em", "##oj", "##i", "[UNK]", "!"]),
    ("  hello \t\n  world  ", ["hello", "world"]),
    ("hel\x00lo\u200b world\x07", ["hello", "world"]),
    ("don't stop...now!", ["don", "'", "t", "stop", ".", ".", ".", "now", "!"]),
    ("the [MASK] sat", ["the", "[", "mask", "]", "sat"]),
    # No NFKC: ½ ² µ stay themselves (NFKC would give 1⁄2, 2, μ); fullwidth letters are unknown; ﬁ stays.
    ("½ ² µ", ["½", "²", "µ"]),
    ("Ａｂｃ", ["[UNK]"]),
    ("ﬁne", ["ﬁ", "##ne"]),
    # Python's lower() writes a word-final sigma as ς.
    ("ΟΔΟΣ", ["ο", "##δ", "##ος"]),
    # 100 characters is the limit, not 100 bytes: 60 two-byte characters are still tokenized.
    ("ß" * 60, ["ß"] + ["##ß"] * 59),
    ("ß" * 101, ["[UNK]"]),
    ("x" * 101 + " ok", ["[UNK]", "ok"]),
    ("", []),
]


@pytest.mark.parametrize("text,expected", HAND_WORKED)
def test_hand_worked_tokens(tokenizer, text, expected):
    assert tokens_of(tokenizer, text) == expected


def test_special_tokens_kept_inside_text():
    tokenizer = WordPieceTokenizer(VOCAB_PATH, keep_special_tokens=True)
    assert tokens_of(tokenizer, "the [MASK] sat on [MASK].[SEP]Ok") == [
        "the", "[MASK]", "sat", "on", "[MASK]", ".", "[SEP]", "ok"
    ]
    # Matching is case-sensitive, as for never-split tokens: "[mask]" is ordinary text.
    assert tokens_of(tokenizer, "[mask]") == ["[", "mask", "]"]


def test_lower_case_and_accent_stripping_are_independent():
    # Lower-cased but accents kept: "café" needs "##é", which the uncased vocab lacks -> one [UNK].
    keep_accents = WordPieceTokenizer(VOCAB_PATH, lower_case=True, strip_accents=False)
    assert tokens_of(keep_accents, "Café naive") == ["[UNK]", "naive"]
    # Accents stripped but case kept: "naïve" -> "naive"; the uncased vocab has no capital N.
    cased_stripped = WordPieceTokenizer(VOCAB_PATH, lower_case=False, strip_accents=True)
    assert tokens_of(cased_stripped, "naïve Naïve") == ["naive", "[UNK]"]


TRICKY = [text for text, _ in HAND_WORKED] + [
    "İstanbul Σίσυφος ΣΑΣ", "a\ufffdb", "tab\there\u00a0nbsp\u2028ls", "\ue000 private", "€100 $5.00",
    "x" * 100, "é" * 101, "日本語のテキスト", "Ω≈ç√∫˜µ≤≥÷", "ǅungla Ǆ", "\u0301accent first",
]


@pytest.mark.parametrize("lower_case,strip_accents", [(True, None), (False, None), (True, False), (False, True)])
def test_matches_reference_on_tricky_strings(lower_case, strip_accents, vocab):
    tokenizer = WordPieceTokenizer(VOCAB_PATH, lower_case=lower_case, strip_accents=strip_accents)
    ids = tokenizer.tokenize(TRICKY).to_list()
    expected = [
        bert_reference.encode(text, vocab, lower_case=lower_case, strip_accents=strip_accents) for text in TRICKY
    ]
    assert ids == expected


def test_matches_reference_on_real_news(tokenizer, vocab):
    texts = bundled.news_texts(limit=400)
    ids = tokenizer.tokenize(texts).to_list()
    mismatches = [i for i, text in enumerate(texts) if ids[i] != bert_reference.encode(text, vocab)]
    assert mismatches == []


def test_layer_in_tf_data_and_config_round_trip():
    layer = BertTokenizer(vocabulary=str(VOCAB_PATH), keep_special_tokens=True)
    rebuilt = BertTokenizer.from_config(layer.get_config())
    assert rebuilt.get_config() == layer.get_config()
    dataset = tf.data.Dataset.from_tensor_slices(["Hello world!", "[MASK] it"]).batch(2).map(rebuilt)
    batch = next(iter(dataset))
    assert batch.to_list() == [[7592, 2088, 999], [103, 2009]]
    assert layer(tf.constant("Hello")).numpy().tolist() == [7592]


def test_layer_inside_saved_model(tmp_path):
    layer = BertTokenizer(vocabulary=str(VOCAB_PATH))
    module = tf.Module()
    module.tokenizer = layer
    module.serve = tf.function(
        lambda texts: layer(texts).to_tensor(), input_signature=[tf.TensorSpec([None], tf.string)]
    )
    tf.saved_model.save(module, str(tmp_path / "model"))
    restored = tf.saved_model.load(str(tmp_path / "model"))
    out = restored.serve(tf.constant(["Héllo world", "ok"])).numpy()
    np.testing.assert_array_equal(out, [[7592, 2088], [7929, 0]])
