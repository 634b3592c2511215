"""Training a WordPiece vocabulary or a SentencePiece model from a text corpus.

Both read an iterator of text batches (so a corpus streams from disk) and write atomically.
"""

import io

from nlpkit._tf import import_tensorflow
from nlpkit.errors import NlpkitError
from nlpkit.io import atomic_file
from nlpkit.text.wordpiece import DEFAULT_SPECIAL_TOKENS, bert_normalize

tf = import_tensorflow()
from tensorflow_text.python.ops.bert_tokenizer import BasicTokenizer  # noqa: E402

KINDS = ("wordpiece", "sentencepiece")
SENTENCEPIECE_TYPES = ("unigram", "bpe")
# Pieces a BERT-style SentencePiece model reserves besides <pad>, <unk>, <s>, </s>.
SENTENCEPIECE_CONTROL_SYMBOLS = ("[CLS]", "[SEP]", "[MASK]")
# Smallest --size accepted (special tokens + room for characters and some subwords).
_MIN_SIZE = {"wordpiece": 200, "sentencepiece": 16}
# SentencePiece skips sentences over 4192 bytes; long texts are fed in chunks of this many words.
_WORDS_PER_SENTENCE = 256


def check_size(kind, size):
    """A vocabulary needs room for the special tokens and the characters of the corpus."""
    smallest = _MIN_SIZE[kind]
    if size < smallest:
        raise NlpkitError(f"--size {size} is too small for a {kind} vocab", hint=f"use at least {smallest}")


def _text_dataset(batches):
    """tf.data.Dataset of [B] string batches from an iterator factory."""
    return tf.data.Dataset.from_generator(batches, output_signature=tf.TensorSpec([None], tf.string))


def _bert_words(batches, lower_case):
    """Chunks of BERT words (normalised, split on whitespace / punctuation / CJK) joined by spaces."""
    splitter = BasicTokenizer(lower_case=False)
    split = tf.autograph.experimental.do_not_convert(  # plain TF ops: AutoGraph only costs start-up time
        lambda texts: splitter.tokenize(bert_normalize(texts, lower_case=lower_case))
    )
    words = _text_dataset(batches).map(split, num_parallel_calls=2)
    for batch in words.as_numpy_iterator():
        for row in batch:
            for start in range(0, len(row), _WORDS_PER_SENTENCE):
                yield b" ".join(row[start:start + _WORDS_PER_SENTENCE]).decode("utf-8", "replace")


def learn_wordpiece_vocab(batches, size, *, lower_case=True, reserved_tokens=DEFAULT_SPECIAL_TOKENS):
    """A WordPiece vocabulary of at most `size` tokens: reserved tokens, every kept character, subwords.

    `batches` is a callable returning an iterator of lists of texts. Words are split exactly as
    WordPieceTokenizer splits them; the subwords come from SentencePiece's BPE trainer (C++, fast)
    run on those words, converted to WordPiece form: a word-initial piece ("▁play") becomes "play",
    a continuation piece ("ing") becomes "##ing". Every character gets both forms, so no word fails
    for want of a character.
    """
    import sentencepiece

    check_size("wordpiece", size)
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=_bert_words(batches, lower_case),
            model_writer=model,
            vocab_size=size - len(reserved_tokens),
            model_type="bpe",
            split_by_number=False,
            split_by_unicode_script=False,
            character_coverage=0.9995,
            hard_vocab_limit=False,
            minloglevel=2,
            num_threads=2,
        )
    except RuntimeError as err:
        raise NlpkitError(f"vocabulary training failed: {_last_line(err)}", hint="pass a larger corpus") from None
    processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())
              if not (processor.is_control(i) or processor.is_unknown(i))]
    return _wordpiece_form(pieces, reserved_tokens, size)


def _wordpiece_form(pieces, reserved_tokens, size):
    """SentencePiece pieces -> WordPiece tokens: reserved first, then both forms of each character."""
    chars = sorted({c for piece in pieces for c in piece.lstrip("▁")})
    vocab = list(reserved_tokens) + chars + ["##" + c for c in chars]
    seen = set(vocab)
    for piece in pieces:
        token = piece[1:] if piece.startswith("▁") else "##" + piece
        if token and token != "##" and token not in seen:
            vocab.append(token)
            seen.add(token)
    return vocab[:size]


def _last_line(err):
    text = str(err).strip()
    return text.splitlines()[-1] if text else "trainer failed"


def write_wordpiece_vocab(vocab, output):
    with atomic_file(output) as tmp:
        tmp.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")


def train_sentencepiece(batches, size, output, *, model_type="unigram", character_coverage=0.9995,
                        max_sentences=2_000_000):
    """Train a SentencePiece model (<pad>=0, <unk>=1, <s>=2, </s>=3, then [CLS] [SEP] [MASK]) into `output`."""
    import sentencepiece

    if model_type not in SENTENCEPIECE_TYPES:
        raise NlpkitError(f"unknown SentencePiece type {model_type!r}", hint="choose unigram or bpe")
    check_size("sentencepiece", size)

    def sentences():
        for batch in batches():
            yield from (text for text in batch if text.strip())

    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_writer=model,
            vocab_size=size,
            model_type=model_type,
            character_coverage=character_coverage,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            control_symbols=list(SENTENCEPIECE_CONTROL_SYMBOLS),
            minloglevel=2,
            num_threads=2,
        )
    except RuntimeError as err:
        raise NlpkitError(f"SentencePiece training failed: {_last_line(err)}", hint="try a smaller --size or a larger corpus") from None
    with atomic_file(output) as tmp:
        tmp.write_bytes(model.getvalue())
