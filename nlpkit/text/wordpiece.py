"""WordPiece tokenization on tensorflow-text, giving the ids of the original BERT tokenizer.

tensorflow-text's `FastBertTokenizer` splits words on whitespace, punctuation and CJK ideographs and
runs WordPiece much faster than `BertTokenizer`, but its own lower-casing differs from original BERT:
it case-folds with NFKC (`½` -> `1⁄2`, `ﬁ` -> `fi`), turns control characters into word breaks, and
caps words at 100 *bytes* instead of 100 *characters*. So we normalise first, with a few vectorised
string ops, exactly as the original does (drop control characters, map whitespace to spaces,
lower-case, NFD, strip combining marks, [UNK] for words over 100 characters) and hand the result to
`FastBertTokenizer` with its own normalisation switched off.
"""

from nlpkit._tf import import_tensorflow
from nlpkit.errors import NlpkitError, one_of_names
from nlpkit.text.offsets import normalize_with_offsets
from nlpkit.text.vocab import REQUIRED_SPECIAL_TOKENS, load_wordpiece_vocab

tf = import_tensorflow()
import keras  # noqa: E402 - imported after TensorFlow so its import noise stays filtered
import tensorflow_text as tf_text  # noqa: E402

# Original BERT drops U+FFFD and Unicode "other" characters (C*: NUL, controls, format, private use)
# except \t \n \r (whitespace). FastBertTokenizer already splits on every Unicode whitespace.
_CONTROL = r"\x{FFFD}|[^\P{C}\t\n\r]"
_CONTROL_OR_COMBINING_MARK = r"\x{FFFD}|[^\P{C}\t\n\r]|\p{Mn}"
# Python's str.lower() (used by original BERT) writes a word-final capital sigma as ς, not σ.
_FINAL_SIGMA = r"(\p{L}\p{M}*)Σ([^\p{L}\p{M}]|$)"
# The same rule on raw text, where NULs (removed before it in bert_normalize) may sit around the Σ.
# The replacement keeps byte lengths (Σ and ς are both two bytes), so offsets stay valid.
_FINAL_SIGMA_AMID_NULS = r"(\p{L}[\p{M}\x00]*)Σ(\x00*(?:[^\p{L}\p{M}\x00]|$))"
# A UTF-8 character takes at most 4 bytes.
_MAX_BYTES_PER_CHAR = 4

DEFAULT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Model Garden's names for the special-token ids (get_special_tokens_dict) and BERT's tokens for them.
SPECIAL_TOKEN_KEYS = {
    "start_of_sequence_id": "[CLS]",
    "end_of_segment_id": "[SEP]",
    "padding_id": "[PAD]",
    "mask_id": "[MASK]",
}


def bert_normalize(texts, *, lower_case=True, strip_accents=None):
    """Original BERT's clean-up, lower-casing and accent stripping, as vectorised string ops on [B] texts."""
    strip_accents = lower_case if strip_accents is None else strip_accents
    # tf.strings.lower stops at a NUL byte, so NULs go first (a literal pattern: a fast scan).
    texts = tf.strings.regex_replace(texts, "\\x00", "")
    if lower_case:
        texts = tf.strings.regex_replace(texts, _FINAL_SIGMA, "\\1ς\\2")
        texts = tf.strings.lower(texts, encoding="utf-8")
    if strip_accents:
        texts = tf_text.normalize_utf8(texts, "NFD")
        return tf.strings.regex_replace(texts, _CONTROL_OR_COMBINING_MARK, "")
    return tf.strings.regex_replace(texts, _CONTROL, "")


class WordPieceTokenizer:
    """Text -> WordPiece ids, identical to the original BERT tokenizer for the same vocab.

    Args:
        vocabulary: path of a vocab.txt (one token per line) or a list of tokens; must hold
            [PAD], [UNK], [CLS] and [SEP].
        lower_case: lower-case the text (as BERT's do_lower_case).
        strip_accents: drop combining marks after NFD; None means "same as lower_case" (original BERT).
        special_tokens: tokens recognised whole inside the text (e.g. "[MASK]") when
            `keep_special_tokens` is set; each must be in the vocabulary.
        keep_special_tokens: find `special_tokens` in the raw text (case-sensitive) and emit their id,
            instead of splitting "[MASK]" into "[", "mask", "]".
        max_chars_per_word: words longer than this many characters become [UNK] (100 in BERT).

    `tokenize(texts)` takes a string tensor of shape [B] and returns an int32 RaggedTensor [B, (tokens)];
    `tokenize_with_offsets(texts)` adds each token's int64 byte offsets into the original text;
    `get_special_tokens_dict()` gives Model Garden's special ids.
    """

    def __init__(
        self,
        vocabulary,
        *,
        lower_case=True,
        strip_accents=None,
        special_tokens=DEFAULT_SPECIAL_TOKENS,
        keep_special_tokens=False,
        max_chars_per_word=100,
    ):
        self.vocab = load_wordpiece_vocab(vocabulary, required=REQUIRED_SPECIAL_TOKENS)
        self.lower_case = lower_case
        self.strip_accents = lower_case if strip_accents is None else strip_accents
        self.max_chars_per_word = max_chars_per_word
        self.token_to_id = {token: index for index, token in enumerate(self.vocab)}
        missing = [token for token in special_tokens if keep_special_tokens and token not in self.token_to_id]
        if missing:
            raise NlpkitError(f"special tokens {missing} are not in the vocabulary", hint="add them or drop them")
        self.special_tokens = tuple(special_tokens)
        self.keep_special_tokens = keep_special_tokens
        self._unk_id = self.token_to_id["[UNK]"]
        # Words are capped in characters by `_mark_long_words`; the byte cap only has to let every
        # word of at most max_chars_per_word characters through.
        self._fast = tf_text.FastBertTokenizer(
            self.vocab,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            max_bytes_per_word=max_chars_per_word * _MAX_BYTES_PER_CHAR,
            lower_case_nfd_strip_accents=False,
        )
        self._id_to_token = tf.constant(self.vocab)
        self._is_continuation = tf.constant([token.startswith("##") for token in self.vocab])

    @property
    def cls_id(self):
        return self.token_to_id["[CLS]"]

    @property
    def sep_id(self):
        return self.token_to_id["[SEP]"]

    @property
    def pad_id(self):
        return self.token_to_id["[PAD]"]

    @property
    def unk_id(self):
        return self._unk_id

    @property
    def mask_id(self):
        return self.token_to_id.get("[MASK]", self._unk_id)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def get_special_tokens_dict(self):
        """Model Garden's special-token ids: start_of_sequence_id ([CLS]), end_of_segment_id ([SEP]),
        padding_id ([PAD]), mask_id ([MASK], left out when the vocab lacks it) and vocab_size."""
        ids = {"vocab_size": self.vocab_size}
        for key, token in SPECIAL_TOKEN_KEYS.items():
            if token in self.token_to_id:
                ids[key] = self.token_to_id[token]
        return ids

    def normalize(self, texts):
        """This tokenizer's `bert_normalize` of [B] texts (long words are handled in `_wordpiece`)."""
        return bert_normalize(texts, lower_case=self.lower_case, strip_accents=self.strip_accents)

    def tokenize(self, texts):
        """[B] strings -> int32 RaggedTensor [B, (tokens)]."""
        return self._tokenize(texts, with_offsets=False)[0]

    def tokenize_with_offsets(self, texts):
        """[B] strings -> (ids, starts, ends): int32 ids and int64 byte offsets, RaggedTensors [B, (tokens)].

        `texts[b][starts[b, i]:ends[b, i]]` (in UTF-8 bytes) is the original text of token i: from
        its first to its last original character, accents and capitals as written; for "##" pieces
        the part of the word they cover; for [UNK] the whole word; for a kept special token itself.
        """
        return self._tokenize(texts, with_offsets=True)

    def _tokenize(self, texts, with_offsets):
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if not (self.keep_special_tokens and self.special_tokens):
            return self._tokenize_plain(texts, with_offsets)
        return self._tokenize_keeping_specials(texts, with_offsets)

    def _tokenize_plain(self, texts, with_offsets):
        """(ids,) of [B] texts, or (ids, starts, ends) with offsets into `texts` `with_offsets`."""
        if not with_offsets:
            return (self._wordpiece(self.normalize(texts)),)
        if self.lower_case:
            texts = tf.strings.regex_replace(texts, _FINAL_SIGMA_AMID_NULS, "\\1ς\\2")
        normalized, to_original = normalize_with_offsets(texts, self.normalize)
        ids, starts, ends = self._wordpiece(normalized, with_offsets=True)
        return (ids, *to_original(starts, ends))

    def _wordpiece(self, normalized, with_offsets=False):
        """WordPiece ids (with_offsets: ids, starts, ends into `normalized`) of normalised [B] texts,
        with BERT's 100-*character* word limit.

        FastBertTokenizer caps words in bytes (at 4 bytes per character of the limit), so the pieces of
        a word over the limit in characters are merged into one [UNK] afterwards. Only a text with a
        run of more non-space characters than the limit can hold such a word, so batches without one
        skip that step (a cond: it costs more than the tokenization, and is almost never needed), and
        offsets (which slow FastBertTokenizer down by a third) are found only when needed.
        """
        long_run = tf.reduce_any(
            tf.strings.regex_full_match(normalized, f"(?s).*\\S{{{self.max_chars_per_word + 1}}}.*")
        )
        if with_offsets:
            tokens = self._fast.tokenize_with_offsets(normalized)
            return tf.cond(long_run, lambda: self._unk_long_words(normalized, *tokens), lambda: tokens)
        return tf.cond(
            long_run,
            lambda: self._unk_long_words(normalized, *self._fast.tokenize_with_offsets(normalized))[0],
            lambda: self._fast.tokenize(normalized),
        )

    def _unk_long_words(self, normalized, ids, starts, ends):
        """Replace the pieces of each word longer than max_chars_per_word characters by one [UNK]."""
        rows, flat_ids = ids.value_rowids(), ids.flat_values
        lengths = ends.flat_values - starts.flat_values
        piece_chars = tf.strings.length(
            tf.strings.substr(tf.gather(normalized, rows), starts.flat_values, lengths), unit="UTF8_CHAR"
        )
        # A word is a first piece and the "##" pieces after it (a row always starts a word).
        continues = tf.gather(self._is_continuation, flat_ids)
        word = tf.cumsum(tf.cast(~continues, tf.int64)) - 1
        too_long = tf.gather(tf.math.segment_sum(piece_chars, word) > self.max_chars_per_word, word)
        word_ends = tf.gather(tf.math.segment_max(ends.flat_values, word), word)
        keep = ids.with_flat_values(~(too_long & continues))
        merged = (
            tf.where(too_long, self._unk_id, flat_ids),
            starts.flat_values,
            tf.where(too_long, word_ends, ends.flat_values),
        )
        return tuple(tf.ragged.boolean_mask(ids.with_flat_values(values), keep) for values in merged)

    def _tokenize_keeping_specials(self, texts, with_offsets):
        """Split the raw text around special tokens, tokenize the rest, put the special ids back in place."""
        pattern = "|".join(_regex_escape(token) for token in self.special_tokens)
        pieces, piece_starts, piece_ends = tf_text.regex_split_with_offsets(
            texts, pattern, keep_delim_regex_pattern=pattern
        )  # [B, (pieces)]
        flat = pieces.flat_values
        is_special = tf.strings.regex_full_match(flat, pattern)
        # Special pieces tokenize to nothing in one part and to their one id in the other; concat joins them.
        ordinary = self._tokenize_plain(tf.where(is_special, "", flat), with_offsets)
        special_ids = tf.gather(
            tf.constant([self.token_to_id[token] for token in self.special_tokens], tf.int32),
            _index_of(flat, self.special_tokens),
        )
        piece_lengths = piece_ends.flat_values - piece_starts.flat_values
        specials = (special_ids, tf.zeros_like(piece_lengths), piece_lengths)  # offsets within the piece
        merged = []
        for ordinary_part, special_part in zip(ordinary, specials):  # ids (and offsets)
            special_part = tf.ragged.boolean_mask(special_part[:, None], is_special[:, None])
            merged.append(tf.concat([ordinary_part, special_part], axis=1))  # [pieces, (tokens)]
        if with_offsets:  # offsets within a piece -> offsets within its text
            shift = tf.gather(piece_starts.flat_values, merged[1].value_rowids())
            merged[1:] = [part.with_flat_values(part.flat_values + shift) for part in merged[1:]]
        return tuple(tf.RaggedTensor.from_row_splits(part, pieces.row_splits).merge_dims(1, 2) for part in merged)

    def id_to_token(self, ids):
        """Token strings of ids (any shape, ragged or not)."""
        if isinstance(ids, tf.RaggedTensor):
            return ids.with_flat_values(tf.gather(self._id_to_token, ids.flat_values))
        return tf.gather(self._id_to_token, ids)


def _regex_escape(token):
    return "".join(f"\\{c}" if not c.isalnum() else c for c in token)


def _index_of(strings, choices):
    """Index into `choices` of each string (0 where none matches)."""
    index = tf.zeros_like(strings, dtype=tf.int32)
    for position, choice in enumerate(choices):
        index = tf.where(tf.equal(strings, choice), position, index)
    return index


@keras.saving.register_keras_serializable(package="nlpkit")
class BertTokenizer(keras.layers.Layer):
    """Keras preprocessing layer: raw text -> WordPiece ids of the original BERT tokenizer.

    Runs on TensorFlow tensors only (inside tf.data, a tf.function or an exported SavedModel).
    Takes Model Garden's `BertTokenizer` arguments too (`vocab_file`, `strip_diacritics`,
    `tokenizer_kwargs={"lower_case": ...}`); the config keeps nlpkit's names.

    Args:
        vocabulary: vocab.txt path or list of tokens (holding [PAD], [UNK], [CLS], [SEP]).
            `vocab_file` is the same (Model Garden's name).
        lower_case: lower-case the text (None: True, as tensorflow-text).
        strip_accents: drop accents (combining marks after NFD; None: same as lower_case).
            `strip_diacritics` is the same.
        special_tokens: tokens recognised whole in the text when keep_special_tokens is set.
        keep_special_tokens: emit [MASK] etc. written in the text as their own id.
        max_chars_per_word: longer words become [UNK].
        tokenize_with_offsets: return `(ids, starts, ends)` instead of ids: int64 byte offsets into
            the original string of each token (see `WordPieceTokenizer.tokenize_with_offsets`).
        tokenizer_kwargs: Model Garden's options for tensorflow-text's tokenizer; only `lower_case`
            has a meaning here.

    Input: string tensor [B] (or a scalar string). Output: int32 RaggedTensor [B, (tokens)]
    (or a 1-D int32 tensor for a scalar input); with tokenize_with_offsets, that and two int64
    tensors of the same shape. `get_special_tokens_dict()` gives Model Garden's special ids.
    """

    def __init__(
        self,
        vocabulary=None,
        lower_case=True,
        strip_accents=None,
        special_tokens=DEFAULT_SPECIAL_TOKENS,
        keep_special_tokens=False,
        max_chars_per_word=100,
        tokenize_with_offsets=False,
        *,
        vocab_file=None,
        strip_diacritics=None,
        tokenizer_kwargs=None,
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        # Strings and ragged tensors pass through Keras' __call__ as they are.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        unknown = sorted(set(tokenizer_kwargs or {}) - {"lower_case"})
        if unknown:
            raise NlpkitError(f"BertTokenizer(tokenizer_kwargs=...) has options {unknown} nlpkit does not take",
                              hint="only lower_case is supported there; drop the others")
        lower_case = one_of_names("BertTokenizer", ("lower_case", "tokenizer_kwargs lower_case"),
                             (lower_case, (tokenizer_kwargs or {}).get("lower_case")))
        vocabulary = one_of_names("BertTokenizer", ("vocabulary", "vocab_file"), (vocabulary, vocab_file))
        if vocabulary is None:
            raise NlpkitError("BertTokenizer needs a vocabulary", hint="pass vocabulary= (or vocab_file=) a vocab.txt")
        self.vocabulary = str(vocabulary) if not isinstance(vocabulary, (list, tuple)) else list(vocabulary)
        self.lower_case = True if lower_case is None else lower_case
        self.strip_accents = one_of_names("BertTokenizer", ("strip_accents", "strip_diacritics"),
                                          (strip_accents, strip_diacritics))
        self.special_tokens = list(special_tokens)
        self.keep_special_tokens = keep_special_tokens
        self.max_chars_per_word = max_chars_per_word
        self.tokenize_with_offsets = tokenize_with_offsets
        self.tokenizer = WordPieceTokenizer(
            self.vocabulary,
            lower_case=self.lower_case,
            strip_accents=self.strip_accents,
            special_tokens=special_tokens,
            keep_special_tokens=keep_special_tokens,
            max_chars_per_word=max_chars_per_word,
        )

    @property
    def vocab_size(self):
        return self.tokenizer.vocab_size

    def get_special_tokens_dict(self):
        return self.tokenizer.get_special_tokens_dict()

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs, dtype=tf.string)
        tokenize = self.tokenizer.tokenize_with_offsets if self.tokenize_with_offsets else self.tokenizer.tokenize
        if inputs.shape.rank == 0:
            return tf.nest.map_structure(lambda part: part[0], tokenize(inputs[None]))
        return tokenize(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary=self.vocabulary,
            lower_case=self.lower_case,
            strip_accents=self.strip_accents,
            special_tokens=self.special_tokens,
            keep_special_tokens=self.keep_special_tokens,
            max_chars_per_word=self.max_chars_per_word,
            tokenize_with_offsets=self.tokenize_with_offsets,
        )
        return config
