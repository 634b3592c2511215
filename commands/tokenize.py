"""`nlpkit tokenize`: text files / datasets -> packed BERT inputs (TFRecord shards + manifest, or JSON lines)."""

from pathlib import Path

import typer

from commands.common import console, info, progress

FORMAT_HELP = "tfrecord: a folder of shards + manifest.json; jsonl: one JSON object per input row"


def tokenize(
    input: str = typer.Argument(..., help="Text/csv/json(l)/parquet file or folder, or a dataset name."),
    vocab: Path = typer.Option(..., "--vocab", help="WordPiece vocab.txt or SentencePiece .model file."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (tfrecord) or file (jsonl)."),
    seq_length: int = typer.Option(128, "--seq-length", help="Length of every packed row (>= 3)."),
    format: str = typer.Option("tfrecord", "--format", help=FORMAT_HELP),
    lower_case: bool = typer.Option(True, "--lower-case/--no-lower-case", help="Lower-case (and strip accents)."),
    text_column: str = typer.Option(None, "--text-column", help="Column holding the text (default: text)."),
    pair_column: str = typer.Option(None, "--pair-column", help="Column of the second segment, if any."),
    label_column: str = typer.Option(None, "--label-column", help="Column of an integer or string label."),
    preview: int = typer.Option(0, "--preview", help="Print the tokens of the first N rows."),
    errors: str = typer.Option("strict", "--errors", help="strict: stop at bytes that are not UTF-8; replace: use U+FFFD."),
    truncation: str = typer.Option("round_robin", "--truncation", help="round_robin or waterfall."),
    keep_special_tokens: bool = typer.Option(
        False, "--keep-special-tokens", help="Read [MASK], [SEP]... written in the text as single tokens."
    ),
    batch_size: int = typer.Option(1024, "--batch-size", help="Rows tokenized together."),  # pipeline.BATCH_SIZE
    rows_per_shard: int = typer.Option(100_000, "--rows-per-shard", help="Rows per TFRecord file."),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing output (folder or file), once the new one is complete."
    ),
):
    """Tokenize and pack text into input_word_ids / input_mask / input_type_ids."""
    from nlpkit.data.pipeline import FORMATS, check_output, tokenize_to_disk
    from nlpkit.data.sources import check_source, open_source
    from nlpkit.errors import NlpkitError
    from nlpkit.io import check_at_least, check_not_input
    from nlpkit.text.packing import TRUNCATORS, check_seq_length
    from nlpkit.text.tokenizers import load_tokenizer
    from nlpkit.text.vocab import is_sentencepiece

    if format not in FORMATS:
        raise NlpkitError(f"unknown --format {format!r}", hint=f"choose one of {', '.join(FORMATS)}")
    if truncation not in TRUNCATORS:
        raise NlpkitError(f"unknown --truncation {truncation!r}", hint=f"choose one of {', '.join(TRUNCATORS)}")
    check_seq_length(seq_length, 2 if pair_column else 1)
    check_at_least(1, **{"--batch-size": batch_size, "--rows-per-shard": rows_per_shard})
    check_not_input(output, {"INPUT": input, "--vocab": vocab})
    source = check_source(open_source(
        input, text_column=text_column, pair_column=pair_column, label_column=label_column, errors=errors
    ))
    options = {} if is_sentencepiece(vocab) else {"keep_special_tokens": keep_special_tokens}
    tokenizer = load_tokenizer(vocab, lower_case=lower_case, **options)
    check_output(output, format, force)  # last check: it may create the output's parent folder
    if preview:
        _print_preview(source, tokenizer, preview, seq_length)
    with progress("lines") as bar:
        task = bar.add_task("tokenize", total=None, rate="")

        def on_batch(stats):
            bar.update(task, completed=stats.rows, rate=stats.rate())

        manifest = tokenize_to_disk(
            source, tokenizer, output, vocab_path=vocab, seq_length=seq_length, fmt=format,
            truncation=truncation, batch_size=batch_size, rows_per_shard=rows_per_shard, force=force,
            on_batch=on_batch,
        )
    cut = manifest["truncation"]
    info(
        f"wrote {manifest['rows']:,} rows to {output} ({format}, seq_length {seq_length}; "
        f"{cut['truncated_rows']:,} truncated, {cut['tokens_dropped']:,} tokens dropped)"
    )


def _print_preview(source, tokenizer, count, seq_length):
    """A rich table of the first `count` rows' tokens, each cut at `seq_length` (the rest is only counted)."""
    from rich.table import Table

    from nlpkit.data.pipeline import preview_tokens
    from nlpkit.data.sources import iter_rows

    texts = []
    for batch in iter_rows(source, batch_size=count):
        texts.extend(batch["text"])
        if len(texts) >= count:
            break
    table = Table(title=f"first {min(count, len(texts))} rows", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("text", overflow="fold", max_width=40)
    table.add_column("tokens", overflow="fold")
    table.add_column("n", justify="right")
    for index, (text, tokens) in enumerate(zip(texts[:count], preview_tokens(tokenizer, texts[:count])), 1):
        shown = " ".join(tokens[:seq_length]) + (f" … (+{len(tokens) - seq_length})" if len(tokens) > seq_length else "")
        table.add_row(str(index), text[:200], shown, str(len(tokens)))
    console.print(table)


def register(app):
    app.command()(tokenize)
