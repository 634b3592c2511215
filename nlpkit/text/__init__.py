"""Text pipeline (TensorFlow-only): WordPiece / SentencePiece tokenizers, BERT input packing, vocab training.

Modules: wordpiece (WordPieceTokenizer, BertTokenizer layer), sentencepiece (SentencePieceTokenizer,
SentencepieceTokenizer layer), packing (pack_inputs, BertPackInputs layer), vocab (loading, checks),
tokenizers (load_tokenizer: the tokenizer for a vocab file), vocab_training, masking (MLM).
Import from those modules; this package imports nothing so it stays cheap.
"""
