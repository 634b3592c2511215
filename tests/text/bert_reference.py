"""A pure-Python reference of the original BERT tokenizer (basic + WordPiece), written from its description.

The original behaviour: drop NUL, U+FFFD and control characters (Unicode category C*, except tab,
newline, carriage return, which are whitespace); map whitespace to spaces; put spaces around CJK
ideographs; split on whitespace; per word: lower-case then NFD and drop combining marks (Mn) when
lower-casing; split punctuation (ASCII symbols and Unicode category P*) into single tokens; then
greedy longest-match-first WordPiece with a "##" continuation prefix, and [UNK] for a word longer
than 100 characters or with no match.
"""

import unicodedata

_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch):
    return any(lo <= ord(ch) <= hi for lo, hi in _CJK_RANGES)


def basic_tokenize(text, lower_case=True, strip_accents=None):
    cleaned = []
    for ch in text:
        if ord(ch) == 0 or ord(ch) == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            cleaned.append(" ")
        elif _is_cjk(ch):
            cleaned.append(f" {ch} ")
        else:
            cleaned.append(ch)
    tokens = []
    for word in "".join(cleaned).split():
        if lower_case:
            word = word.lower()
        if lower_case if strip_accents is None else strip_accents:
            word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    tokens.append(current)
                tokens.append(ch)
                current = ""
            else:
                current += ch
        if current:
            tokens.append(current)
    return tokens


def wordpiece(word, vocab, unk="[UNK]", max_chars=100):
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


def tokenize(text, vocab, lower_case=True, strip_accents=None):
    """Token strings of the original BERT tokenization of `text` with `vocab` (a dict token -> id).

    `strip_accents` (None: same as lower_case) is the later Hugging Face option that separates the two.
    """
    words = basic_tokenize(text, lower_case, strip_accents)
    return [piece for word in words for piece in wordpiece(word, vocab)]


def encode(text, vocab, lower_case=True, strip_accents=None):
    return [vocab[token] for token in tokenize(text, vocab, lower_case, strip_accents)]
