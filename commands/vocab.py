"""`nlpkit vocab`: train a WordPiece vocab.txt or a SentencePiece .model from text."""

from pathlib import Path

import typer

from commands.common import info, progress


def vocab(
    input: str = typer.Argument(..., help="Text/csv/json(l)/parquet file or folder to learn from."),
    output: Path = typer.Option(..., "--output", "-o", help="vocab.txt (wordpiece) or NAME.model (sentencepiece)."),
    size: int = typer.Option(8000, "--size", help="Target vocabulary size (an upper bound for wordpiece)."),
    kind: str = typer.Option("wordpiece", "--kind", help="wordpiece or sentencepiece."),
    model_type: str = typer.Option("unigram", "--model-type", help="SentencePiece algorithm: unigram or bpe."),
    lower_case: bool = typer.Option(True, "--lower-case/--no-lower-case", help="WordPiece: lower-case and strip accents."),
    text_column: str = typer.Option(None, "--text-column", help="Column holding the text (default: text)."),
    errors: str = typer.Option("strict", "--errors", help="strict or replace (bytes that are not UTF-8)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --output, once the new one is complete."),
):
    """Train a vocabulary: WordPiece with [PAD] [UNK] [CLS] [SEP] [MASK] reserved, or a SentencePiece model."""
    from nlpkit.data.sources import check_source, iter_rows, open_source
    from nlpkit.errors import NlpkitError
    from nlpkit.io import check_not_input, check_output_file
    from nlpkit.text import vocab_training
    from nlpkit.text.vocab import is_sentencepiece

    if kind not in vocab_training.KINDS:
        raise NlpkitError(f"unknown --kind {kind!r}", hint="choose wordpiece or sentencepiece")
    if kind == "sentencepiece" and not is_sentencepiece(output):
        raise NlpkitError(f"--output {output} must end in .model for a SentencePiece model", hint="e.g. --output spm.model")
    if kind == "sentencepiece" and model_type not in vocab_training.SENTENCEPIECE_TYPES:
        raise NlpkitError(f"unknown --model-type {model_type!r}", hint="choose unigram or bpe")
    vocab_training.check_size(kind, size)
    check_not_input(output, {"INPUT": input})
    check_output_file(output, force)
    source = check_source(open_source(input, text_column=text_column, errors=errors))

    with progress("lines") as bar:
        task = bar.add_task(f"{kind} vocab", total=None, rate="")

        def batches():
            seen = 0
            for batch in iter_rows(source):
                seen += len(batch["text"])
                bar.update(task, completed=seen)
                yield batch["text"]

        if kind == "wordpiece":
            tokens = vocab_training.learn_wordpiece_vocab(batches, size, lower_case=lower_case)
            vocab_training.write_wordpiece_vocab(tokens, output)
            info(f"wrote {len(tokens):,} WordPiece tokens to {output}")
        else:
            vocab_training.train_sentencepiece(batches, size, output, model_type=model_type)
            info(f"wrote a {size:,}-piece SentencePiece {model_type} model to {output}")


def register(app):
    app.command()(vocab)
