"""WordPiece tokenization against hand-worked BERT tokens and a pure-Python original-BERT reference."""

import itertools
import unicodedata

import numpy as np
import pytest

from nlpkit.data import bundled
from nlpkit.errors import NlpkitError
from nlpkit.text.wordpiece import BertTokenizer, WordPieceTokenizer, tf
from tests.layers.model_garden_config import assert_config_holds_arguments
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


# Offsets, special ids and Model Garden's arguments (issue #18).
ACCENTED_CJK_EMOJI = [
    "Héllo, Wörld! Crème brûlée à São Paulo.",
    "Cafe\u0301 decomposed, naïve ΟΔΟΣ ΣΑΣ",
    "東京都の天気は晴れ。中文 text 한국어",
    "emoji 😀👍🏽 and 🇫🇷 flags!",
    "tab\there nul\x00in ctrl\x07 end ΟΔΟ\x00Σ\x00 ok",
    "x" * 120 + " ok " + "é" * 101,
]


def real_lines(count=60):
    return bundled.news_texts(limit=count) + [text for text, _ in bundled.reviews()[:count]]


def check_slices(texts, ids, starts, ends, vocab):
    """Each token's offsets slice the original text back to it (BERT-normalised, "##" dropped).

    Tokens from one original character (the jamo of a Hangul syllable after NFD) share its span:
    together they give the slice.
    """
    for text, row_ids, row_starts, row_ends in zip(texts, ids.to_list(), starts.to_list(), ends.to_list()):
        raw = text.encode()
        spans = list(zip(row_starts, row_ends))
        assert all(prev[1] <= span[0] or span == prev for prev, span in zip(spans, spans[1:])), text
        for (start, end), group in itertools.groupby(zip(spans, row_ids), key=lambda pair: pair[0]):
            piece = raw[start:end].decode()
            tokens = [vocab[token_id] for _, token_id in group]
            if tokens == ["[UNK]"]:
                assert piece and not any(ch.isspace() for ch in piece), (text, piece)
            else:
                # A lone "Σ" is not word-final, so its lower-case form depends on context: compare σ = ς.
                normalized = "".join(bert_reference.basic_tokenize(piece)).replace("ς", "σ")
                joined = "".join(token.removeprefix("##") for token in tokens).replace("ς", "σ")
                assert normalized == joined, (text, piece, tokens)


@pytest.mark.parametrize("lower_case", [True, False])
def test_offsets_slice_the_original_text_back_to_each_token(lower_case):
    tokenizer = WordPieceTokenizer(VOCAB_PATH, lower_case=lower_case)
    texts = ACCENTED_CJK_EMOJI + real_lines()
    ids, starts, ends = tokenizer.tokenize_with_offsets(texts)
    assert ids.to_list() == tokenizer.tokenize(texts).to_list()
    check_slices(texts, ids, starts, ends, tokenizer.vocab)


def test_offsets_with_special_tokens_kept():
    tokenizer = WordPieceTokenizer(VOCAB_PATH, keep_special_tokens=True)
    texts = ["the [MASK] Sät on [MASK].[SEP]Ök 😀", "[CLS]東京[SEP]"]
    ids, starts, ends = tokenizer.tokenize_with_offsets(texts)
    assert ids.to_list() == tokenizer.tokenize(texts).to_list()
    raw = texts[0].encode()
    assert [raw[s:e].decode() for s, e in zip(starts[0].numpy(), ends[0].numpy())] == [
        "the", "[MASK]", "Sät", "on", "[MASK]", ".", "[SEP]", "Ök", "😀"
    ]


def test_offsets_inside_tf_function():
    layer = BertTokenizer(vocab_file=str(VOCAB_PATH), tokenize_with_offsets=True)
    texts = ACCENTED_CJK_EMOJI[:4]
    eager = layer(tf.constant(texts))
    graph = tf.function(layer)(tf.constant(texts))
    for eager_part, graph_part in zip(eager, graph):
        assert eager_part.to_list() == graph_part.to_list()
    check_slices(texts, *graph, layer.tokenizer.vocab)


def test_special_tokens_dict_has_the_vocab_file_ids():
    lines = VOCAB_PATH.read_text(encoding="utf-8").splitlines()
    expected = {"vocab_size": len(lines)} | {
        key: lines.index(token)
        for key, token in [("start_of_sequence_id", "[CLS]"), ("end_of_segment_id", "[SEP]"),
                           ("padding_id", "[PAD]"), ("mask_id", "[MASK]")]
    }
    assert BertTokenizer(vocab_file=str(VOCAB_PATH)).get_special_tokens_dict() == expected
    # Model Garden leaves out a special token the vocab lacks.
    small = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]).get_special_tokens_dict()
    assert small == {"vocab_size": 5, "start_of_sequence_id": 2, "end_of_segment_id": 3, "padding_id": 0}


def python_lower_strip(text, lower_case, strip_diacritics):
    """Original BERT's clean-up (drop NUL, U+FFFD and C* but tab, newline, return), then unicodedata."""
    text = "".join(ch for ch in text if ch in "\t\n\r" or not (ch == "\ufffd" or unicodedata.category(ch).startswith("C")))
    if lower_case:
        text = text.lower()
    if strip_diacritics:
        text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    return text


@pytest.mark.parametrize("lower_case,strip_diacritics", [(True, True), (True, False), (False, True), (False, False)])
def test_lower_case_and_strip_diacritics_equal_python(lower_case, strip_diacritics):
    layer = BertTokenizer(vocab_file=str(VOCAB_PATH), lower_case=lower_case, strip_diacritics=strip_diacritics)
    texts = ACCENTED_CJK_EMOJI[:4] + real_lines(30)
    normalized = [text.decode() for text in layer.tokenizer.normalize(texts).numpy()]
    assert normalized == [python_lower_strip(text, lower_case, strip_diacritics) for text in texts]


def test_built_from_model_garden_arguments():
    model_garden = {"vocab_file": str(VOCAB_PATH), "lower_case": True, "tokenize_with_offsets": True,
                    "strip_diacritics": True}
    layer = BertTokenizer(**model_garden, tokenizer_kwargs={"lower_case": True})
    config = assert_config_holds_arguments(
        layer, model_garden, renamed={"vocab_file": "vocabulary", "strip_diacritics": "strip_accents"}
    )
    rebuilt = BertTokenizer.from_config(config)
    ids, starts, ends = rebuilt(tf.constant("Héllo"))
    assert (ids.numpy().tolist(), starts.numpy().tolist(), ends.numpy().tolist()) == ([7592], [0], [6])
    with pytest.raises(NlpkitError, match="split_unknown_characters"):
        BertTokenizer(vocab_file=str(VOCAB_PATH), tokenizer_kwargs={"split_unknown_characters": True})
    with pytest.raises(NlpkitError, match="disagree"):
        BertTokenizer(vocab_file=str(VOCAB_PATH), lower_case=True, tokenizer_kwargs={"lower_case": False})
