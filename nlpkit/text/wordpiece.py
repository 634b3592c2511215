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
from nlpkit.errors import NlpkitError
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
# Characters that end a word for BERT: whitespace, ASCII symbols, Unicode punctuation, CJK ideographs.
_WORD_BREAK = (
    r"[\s!-/:-@\[-`{-~\p{P}"
    r"\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]"
)
# A private-use character: never in a vocab, kept by FastBertTokenizer, so it becomes one [UNK].
# (Private-use characters of the input are C* and were removed before it is inserted.)
_UNK_PLACEHOLDER = "\ue000"
# A UTF-8 character takes at most 4 bytes.
_MAX_BYTES_PER_CHAR = 4

DEFAULT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


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

    `tokenize(texts)` takes a string tensor of shape [B] and returns an int32 RaggedTensor [B, (tokens)].
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

    def normalize(self, texts):
        """This tokenizer's `bert_normalize` of [B] texts (long words are handled in `_tokenize_plain`)."""
        return bert_normalize(texts, lower_case=self.lower_case, strip_accents=self.strip_accents)

    def _tokenize_plain(self, texts):
        """WordPiece ids of [B] texts, with BERT's 100-*character* word limit.

        FastBertTokenizer caps words in bytes, so words over the limit in characters are replaced by
        one placeholder ([UNK]) first. Only a text with a run of more non-space characters than the
        limit can hold such a word (a word never spans a space), so batches without one skip that step.
        """
        normalized = self.normalize(texts)
        long_run = tf.strings.regex_full_match(normalized, f"(?s).*\\S{{{self.max_chars_per_word + 1}}}.*")

        # A cond: splitting words is slower than the whole tokenization, and is almost never needed.
        marked = tf.cond(tf.reduce_any(long_run), lambda: self._mark_long_words(normalized), lambda: normalized)
        return self._fast.tokenize(marked)

    def _mark_long_words(self, texts):
        """Replace each word longer than max_chars_per_word characters by one placeholder -> [UNK]."""
        # Word breaks are put between \x01 marks (a control character: none is left after normalize).
        pieces = tf.strings.split(tf.strings.regex_replace(texts, f"({_WORD_BREAK})", "\x01\\1\x01"), "\x01")
        lengths = tf.strings.length(pieces.flat_values, unit="UTF8_CHAR")
        marked = tf.where(lengths > self.max_chars_per_word, _UNK_PLACEHOLDER, pieces.flat_values)
        return tf.strings.reduce_join(pieces.with_flat_values(marked), axis=1)

    def tokenize(self, texts):
        """[B] strings -> int32 RaggedTensor [B, (tokens)]."""
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if not (self.keep_special_tokens and self.special_tokens):
            return self._tokenize_plain(texts)
        return self._tokenize_keeping_specials(texts)

    def _tokenize_keeping_specials(self, texts):
        """Split the raw text around special tokens, tokenize the rest, put the special ids back in place."""
        pattern = "|".join(_regex_escape(token) for token in self.special_tokens)
        pieces = tf_text.regex_split(texts, pattern, keep_delim_regex_pattern=pattern)  # [B, (pieces)]
        flat = pieces.flat_values
        is_special = tf.strings.regex_full_match(flat, pattern)
        # Special pieces tokenize to nothing in one part and to their one id in the other; concat joins them.
        ordinary = self._tokenize_plain(tf.where(is_special, "", flat))
        special_ids = tf.gather(
            tf.constant([self.token_to_id[token] for token in self.special_tokens], tf.int32),
            _index_of(flat, self.special_tokens),
        )
        specials = tf.ragged.boolean_mask(special_ids[:, None], is_special[:, None])
        merged = tf.concat([ordinary, specials], axis=1)
        return tf.RaggedTensor.from_row_splits(merged, pieces.row_splits).merge_dims(1, 2)

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

    Args:
        vocabulary: vocab.txt path or list of tokens (holding [PAD], [UNK], [CLS], [SEP]).
        lower_case: lower-case the text.
        strip_accents: drop accents (None: same as lower_case).
        special_tokens: tokens recognised whole in the text when keep_special_tokens is set.
        keep_special_tokens: emit [MASK] etc. written in the text as their own id.
        max_chars_per_word: longer words become [UNK].

    Input: string tensor [B] (or a scalar string). Output: int32 RaggedTensor [B, (tokens)]
    (or a 1-D int32 tensor for a scalar input).
    """

    def __init__(
        self,
        vocabulary,
        lower_case=True,
        strip_accents=None,
        special_tokens=DEFAULT_SPECIAL_TOKENS,
        keep_special_tokens=False,
        max_chars_per_word=100,
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        # Strings and ragged tensors pass through Keras' __call__ as they are.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.vocabulary = str(vocabulary) if not isinstance(vocabulary, (list, tuple)) else list(vocabulary)
        self.lower_case = lower_case
        self.strip_accents = strip_accents
        self.special_tokens = list(special_tokens)
        self.keep_special_tokens = keep_special_tokens
        self.max_chars_per_word = max_chars_per_word
        self.tokenizer = WordPieceTokenizer(
            self.vocabulary,
            lower_case=lower_case,
            strip_accents=strip_accents,
            special_tokens=special_tokens,
            keep_special_tokens=keep_special_tokens,
            max_chars_per_word=max_chars_per_word,
        )

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs, dtype=tf.string)
        if inputs.shape.rank == 0:
            return self.tokenizer.tokenize(inputs[None])[0]
        return self.tokenizer.tokenize(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary=self.vocabulary,
            lower_case=self.lower_case,
            strip_accents=self.strip_accents,
            special_tokens=self.special_tokens,
            keep_special_tokens=self.keep_special_tokens,
            max_chars_per_word=self.max_chars_per_word,
        )
        return config
