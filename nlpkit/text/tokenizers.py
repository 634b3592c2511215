"""Tokenizer loading: the tokenizer a vocab file calls for (it sits above `vocab` and both tokenizers)."""

from nlpkit.text.vocab import is_sentencepiece


def load_tokenizer(path, *, lower_case=True, **options):
    """The tokenizer for a vocab file: SentencePiece for a .model, WordPiece for a vocab.txt."""
    if is_sentencepiece(path):
        from nlpkit.text.sentencepiece import SentencePieceTokenizer

        return SentencePieceTokenizer(path, **options)
    from nlpkit.text.wordpiece import WordPieceTokenizer

    return WordPieceTokenizer(path, lower_case=lower_case, **options)
