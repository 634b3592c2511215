"""Loading and checking vocabularies: a WordPiece vocab.txt or a SentencePiece .model file.

A `.model` file (also `.model.v1`) is SentencePiece, anything else a WordPiece vocab (one token per
line). Every problem becomes one NlpkitError line naming the file. The tokenizers import this
module, never the other way round; `nlpkit.text.tokenizers.load_tokenizer` picks one for a file.
"""

import hashlib
from pathlib import Path

from nlpkit.errors import NlpkitError

# What a WordPiece vocab must hold to pack BERT inputs.
REQUIRED_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def _read_lines(path):
    path = Path(path)
    if not path.exists():
        raise NlpkitError(f"vocab file {path} does not exist", hint="pass --vocab PATH of a vocab.txt or .model file")
    if path.is_dir():
        raise NlpkitError(f"vocab {path} is a folder", hint="pass the vocab.txt or .model file inside it")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise NlpkitError(f"vocab file {path} is not UTF-8 text (byte {err.start})", hint="pass a vocab.txt")
    return text.splitlines()


def load_wordpiece_vocab(vocabulary, *, required=()):
    """A list of tokens from a vocab.txt path or a list; checks it is non-empty and holds `required`."""
    where = "vocabulary" if isinstance(vocabulary, (list, tuple)) else f"vocab file {vocabulary}"
    tokens = list(vocabulary) if isinstance(vocabulary, (list, tuple)) else _read_lines(vocabulary)
    tokens = [token.strip() for token in tokens]
    # Original BERT vocabs end with a newline; trailing blank lines are not tokens.
    while tokens and not tokens[-1]:
        tokens.pop()
    if not tokens:
        raise NlpkitError(f"{where} is empty", hint="train one with: nlpkit vocab CORPUS --output vocab.txt")
    first_line = {}
    for line, token in enumerate(tokens, 1):
        if token in first_line:
            raise NlpkitError(
                f"{where}:{line}: token {token!r} repeats line {first_line[token]}",
                hint="each token must appear once (its line number is its id); remove the duplicate",
            )
        first_line[token] = line
    missing = [token for token in required if token not in first_line]
    if missing:
        raise NlpkitError(
            f"{where} lacks the special tokens {', '.join(missing)}",
            hint="a BERT vocab needs [PAD], [UNK], [CLS] and [SEP]; nlpkit vocab adds them",
        )
    return tokens


def load_sentencepiece_processor(model):
    """A `sentencepiece.SentencePieceProcessor` for a .model path (or its bytes), checked to load."""
    import sentencepiece

    data = _read_sentencepiece_bytes(model)
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(data)
    except Exception as err:  # noqa: BLE001 - the library raises bare RuntimeError/OSError
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NlpkitError(f"{model} is not a SentencePiece model ({reason})", hint="pass a .model file") from None
    return processor, data


def _read_sentencepiece_bytes(model):
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise NlpkitError(f"SentencePiece model {path} does not exist", hint="pass the .model file")
    data = path.read_bytes()
    if not data:
        raise NlpkitError(f"SentencePiece model {path} is empty", hint="train one with: nlpkit vocab --kind sentencepiece")
    return data


def check_vocab_fits(path, vocab_size, *, owner="the model's"):
    """Check the vocab at `path` (vocab.txt or .model) is usable by an encoder with `vocab_size` word ids.

    Every command that pairs a vocabulary with an encoder calls this before building anything on
    the pair: an id past the embedding table would otherwise fail deep inside a training step.
    Returns the vocabulary's size.
    """
    if is_sentencepiece(path):
        size = load_sentencepiece_processor(path)[0].get_piece_size()
    else:
        size = len(load_wordpiece_vocab(path, required=REQUIRED_SPECIAL_TOKENS))
    if vocab_size is not None and size > vocab_size:
        raise NlpkitError(
            f"vocab {path} has {size} tokens but {owner} vocab_size is {vocab_size} (ids {vocab_size}..{size - 1} "
            f"would fall outside its embedding table)",
            hint="pass the vocab the model was trained with, or build a model with a larger vocab_size",
        )
    return size


def file_checksum(path):
    """sha256 of a file, as 'sha256:HEX' (recorded in manifests to pair ids with their vocab)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return f"sha256:{digest}"


def is_sentencepiece(path):
    """A SentencePiece model file: NAME.model or NAME.model.SOMETHING (e.g. tokenizer.model.v1)."""
    return ".model" in Path(path).suffixes
