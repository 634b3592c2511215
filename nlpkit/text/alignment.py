"""Words <-> word pieces for token classification: packed rows with piece-level labels, and back.

TensorFlow-only (the tokenizers are tensorflow-text); results are NumPy arrays.

- Each word is tokenized on its own (BERT splits text into words at spaces and punctuation first,
  so a word's pieces do not depend on its neighbours). Its first piece carries the word's label;
  later pieces, [CLS], [SEP] and padding get `IGNORE_INDEX` (-100), which the loss masks out.
- A sentence with more pieces than fit in `seq_length` ([CLS] and [SEP] included) is split into
  consecutive, non-overlapping windows at word boundaries; every word lands in exactly one row,
  so predictions cover every word. Only a single word with more pieces than a window holds is
  cut (its later pieces carry no label anyway). A word with no pieces at all (only characters the
  tokenizer drops) has no position; its prediction is `fill` (the "O" tag).
- `word_predictions` maps row-level predictions back to words (`nlpkit.data.token_tags.
  entities_with_offsets` then turns word tags into entity spans with character offsets).
"""

import re
from dataclasses import dataclass

import numpy as np

from nlpkit.errors import NlpkitError

IGNORE_INDEX = -100
# Words for raw text at predict time: runs of letters/digits, and each other visible character alone
# (the split BERT makes before WordPiece, so "U.S." is four words here and in the tokenizer).
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class AlignedWords:
    """Packed rows of a batch of sentences.

    inputs: `input_word_ids`, `input_mask`, `input_type_ids`, int32 `[R, T]`.
    labels: int32 `[R, T]` (the word's label at its first piece, IGNORE_INDEX elsewhere), or None.
    word_index: int32 `[R, T]`: index of the word (in its sentence) at its first piece, -1 elsewhere.
    row_sentence: int32 `[R]`: which sentence each row holds part of.
    num_words: words per sentence. split_sentences: sentences that needed more than one row.
    """

    inputs: dict
    labels: np.ndarray
    word_index: np.ndarray
    row_sentence: np.ndarray
    num_words: list
    split_sentences: int = 0


def word_pieces(tokenizer, sentences):
    """Piece ids of every word: a list (sentences) of lists (words) of lists of ids."""
    from nlpkit._tf import import_tensorflow

    tf = import_tensorflow()
    flat = [word for words in sentences for word in words]
    pieces = tokenizer.tokenize(tf.constant(flat, tf.string)) if flat else None
    if pieces is not None and pieces.shape.rank > 2:  # [words, (sub-words), (pieces)] -> [words, (pieces)]
        pieces = pieces.merge_dims(1, -1)
    flat_ids = pieces.to_list() if pieces is not None else []
    result, start = [], 0
    for words in sentences:
        result.append(flat_ids[start : start + len(words)])
        start += len(words)
    return result


def _windows(pieces, budget):
    """Split a sentence's words into consecutive groups of at most `budget` pieces each."""
    windows, current, used = [], [], 0
    for index, ids in enumerate(pieces):
        size = min(len(ids), budget)
        if current and used + size > budget:
            windows.append(current)
            current, used = [], 0
        current.append(index)
        used += size
    return windows + [current]


def align_words(tokenizer, sentences, seq_length, labels=None):
    """Pack tokenized sentences (lists of words) into rows of `seq_length`, labels on first pieces.

    `tokenizer`: a WordPiece or SentencePiece tokenizer (`nlpkit.text.tokenizers.load_tokenizer`);
    `labels`: per-sentence lists of label ids (same lengths as the sentences), or None.
    """
    from nlpkit.text.packing import check_seq_length

    check_seq_length(seq_length)
    if labels is not None and [len(s) for s in sentences] != [len(s) for s in labels]:
        raise NlpkitError("every sentence needs one label per word")
    budget = seq_length - 2
    rows = []  # (sentence, [(word, piece ids)])
    split = 0
    for n, pieces in enumerate(word_pieces(tokenizer, sentences)):
        windows = _windows(pieces, budget)
        split += len(windows) > 1
        rows.extend((n, [(w, pieces[w][:budget]) for w in window]) for window in windows)
    return _pack(rows, tokenizer, seq_length, labels, [len(s) for s in sentences], split)


def _pack(rows, tokenizer, seq_length, labels, num_words, split):
    shape = (len(rows), seq_length)
    ids = np.full(shape, tokenizer.pad_id, "int32")
    mask = np.zeros(shape, "int32")
    word_index = np.full(shape, -1, "int32")
    for r, (_, words) in enumerate(rows):
        row_ids = [tokenizer.cls_id] + [i for _, pieces in words for i in pieces] + [tokenizer.sep_id]
        ids[r, : len(row_ids)] = row_ids
        mask[r, : len(row_ids)] = 1
        firsts = 1 + np.cumsum([0] + [len(pieces) for _, pieces in words[:-1]])
        for position, (w, pieces) in zip(firsts, words):
            if pieces:
                word_index[r, position] = w
    row_sentence = np.asarray([n for n, _ in rows], "int32")
    piece_labels = None
    if labels is not None:
        piece_labels = np.full(shape, IGNORE_INDEX, "int32")
        at_rows, at_positions = np.nonzero(word_index >= 0)
        piece_labels[at_rows, at_positions] = [labels[row_sentence[r]][word_index[r, p]]
                                               for r, p in zip(at_rows, at_positions)]
    inputs = {"input_word_ids": ids, "input_mask": mask, "input_type_ids": np.zeros(shape, "int32")}
    return AlignedWords(inputs, piece_labels, word_index, row_sentence, num_words, split)


def word_predictions(aligned, row_values, fill=0):
    """Row-level values `[R, T, ...]` (tag ids or scores) -> one array per sentence `[num_words, ...]`.

    Each word takes the value at its first piece; words without pieces get `fill`.
    """
    row_values = np.asarray(row_values)
    rows, positions = np.nonzero(aligned.word_index >= 0)
    sentences = aligned.row_sentence[rows]
    words = aligned.word_index[rows, positions]
    offsets = np.concatenate([[0], np.cumsum(aligned.num_words)]).astype("int64")
    flat = np.full((offsets[-1],) + row_values.shape[2:], fill, row_values.dtype)
    flat[offsets[sentences] + words] = row_values[rows, positions]
    return [flat[offsets[n] : offsets[n + 1]] for n in range(len(aligned.num_words))]


def split_words(text):
    """Words of raw text (letter/digit runs and single symbols) and their (start, end) character offsets."""
    matches = list(_WORD.finditer(text))
    return [m.group() for m in matches], [(m.start(), m.end()) for m in matches]


def token_offsets(text, tokens):
    """(start, end) character offsets of given tokens found in order in `text`."""
    offsets, position = [], 0
    for token in tokens:
        start = text.find(token, position)
        if start < 0:
            raise NlpkitError(f"token {token!r:.40} is not in the text after character {position}",
                              hint="the tokens must appear in the text in order")
        offsets.append((start, start + len(token)))
        position = start + len(token)
    return offsets
