"""Pretraining corpora: `--data` paths -> tokenized documents -> packed, dynamically masked batches.

TensorFlow-only (tf.data). `--data` is one of three kinds, told apart by the path (`data_kind`):
    shards   a folder written by `nlpkit tokenize` (manifest.json + TFRecord shards): its rows are
             already packed, so they go straight to the dynamic masker (seq_length and vocab checked
             against the manifest; no sentence pairs, so no next-sentence / sentence-order objective)
    table    a .csv / .tsv / .json / .jsonl / .parquet file read through `datasets`: each row of
             `--text-column` is a document, its lines are its sentences
    text     a text file or a folder of them: one sentence per line, a blank line between documents
Tables and text are packed into sentence pairs (`pack_documents`), optionally labelled for the
next-sentence ("nsp") or sentence-order ("sop") objective. Everything streams.

`config` is the run's `nlpkit.training.pretrain.PretrainConfig` (these functions read its data,
text_column, seq_length, objective, masking and seed fields).
"""

from pathlib import Path

from nlpkit._tf import import_tensorflow
from nlpkit.data.records import FEATURES, MANIFEST, load_records, read_manifest
from nlpkit.data.sources import KINDS, check_source, check_utf8, iter_rows, open_source
from nlpkit.errors import NlpkitError
from nlpkit.text.masking import MlmMasker, mask_dataset, pack_documents

tf = import_tensorflow()

# --objective -> the label feature `pack_documents` adds (None: masked-LM only).
OBJECTIVE_LABELS = {"none": None, "nsp": "next_sentence_labels", "sop": "sentence_order_labels"}
_SHUFFLE_BUFFER = 1000
_ROWS_PER_READ = 256  # table rows read and tokenized together



def data_kind(path):
    """The kind of a --data path: "shards" (a `nlpkit tokenize` folder), "table" (csv/json/jsonl/parquet) or "text"."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        return "shards"
    if KINDS.get(path.suffix.lower(), "text") != "text":
        return "table"
    return "text"


def _text_files(path):
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]


def text_documents(path, tokenizer):
    """Tokenized documents from text files (checked to be UTF-8 by `check_corpus`): one sentence per
    line, documents split by blank lines."""
    for file in _text_files(path):
        lines = []
        with open(file, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    lines.append(line.strip())
                elif lines:
                    yield _tokenize(tokenizer, lines)
                    lines = []
        if lines:
            yield _tokenize(tokenizer, lines)


def _tokenize(tokenizer, lines):
    return tokenizer.tokenize(tf.constant(lines)).to_list()


def table_documents(config, tokenizer):
    """Tokenized documents from a csv/json/jsonl/parquet file: one per row, its lines are its sentences."""
    source = open_source(config.data, text_column=config.text_column)
    for batch in iter_rows(source, batch_size=_ROWS_PER_READ):
        rows = [[line.strip() for line in text.splitlines() if line.strip()] for text in batch["text"]]
        lines = [line for row in rows for line in row]
        tokens = iter(_tokenize(tokenizer, lines) if lines else [])  # all lines of the batch at once
        for row in rows:
            if row:
                yield [next(tokens) for _ in row]


def _documents(config, tokenizer):
    """Tokenized documents of a table or text corpus."""
    if data_kind(config.data) == "table":
        return table_documents(config, tokenizer)
    return text_documents(config.data, tokenizer)


def _examples(config, tokenizer, vocab):
    """Packed examples (dicts of int32 arrays) of a table or text corpus."""
    return pack_documents(
        _documents(config, tokenizer),
        seq_length=config.seq_length,
        cls_id=vocab.index("[CLS]"),
        sep_id=vocab.index("[SEP]"),
        short_seq_prob=config.short_seq_prob,
        objective=None if config.objective == "none" else config.objective,
        seed=config.seed,
    )


def check_corpus(config, tokenizer, vocab, micro_batch, vocab_path, streams=False):
    """Fail early on an unreadable, empty or mismatched corpus, or one that cannot fill a single batch.

    streams: the batch is `micro_batch` parallel documents (Transformer-XL memory), so count those.
    """
    if not Path(config.data).exists():
        raise NlpkitError(
            f"--data {config.data} does not exist",
            hint="pass a text file or folder, a csv/json/jsonl/parquet file, or a `nlpkit tokenize` folder",
        )
    kind = data_kind(config.data)
    if config.text_column is not None and kind != "table":
        raise NlpkitError(
            f"--text-column applies to csv/json/jsonl/parquet input, not to {config.data}",
            hint="drop --text-column",
        )
    if kind == "shards":
        count = _check_shards(config, vocab_path)
    else:
        if kind == "table":
            check_source(open_source(config.data, text_column=config.text_column))  # e.g. an unknown column
        else:  # as strict as `nlpkit tokenize` and the tables: no silent U+FFFD
            for file in _text_files(config.data):
                check_utf8(file, hint="fix the file, or re-encode it as UTF-8")
        count = 0
        for document in _documents(config, tokenizer) if streams else _examples(config, tokenizer, vocab):
            count += 1 if not streams or any(document) else 0  # a document of empty sentences is skipped
            if count >= micro_batch:
                break
    if count >= micro_batch:
        return
    unit = "document" if streams else "sequence"
    what = "is empty" if count == 0 else f"gives only {count} {unit}(s), fewer than one batch of {micro_batch}"
    raise NlpkitError(f"--data {config.data} {what}", hint="add text or lower --batch-size")


def _check_shards(config, vocab_path):
    """Check a `nlpkit tokenize` folder fits this run; returns its number of rows."""
    from nlpkit.text.vocab import file_checksum

    manifest = read_manifest(config.data)
    if config.objective != "none":
        raise NlpkitError(
            f"--objective {config.objective} needs sentence pairs, but {config.data} holds already packed rows",
            hint="pass the raw text (or a csv/json/jsonl/parquet file) as --data, or use --objective none",
        )
    length = manifest.get("seq_length")
    if length != config.seq_length:
        raise NlpkitError(
            f"--data {config.data} holds rows of length {length}, not --seq-length {config.seq_length}",
            hint=f"pass --seq-length {length} (or leave it out)",
        )
    if manifest.get("vocab_checksum") != file_checksum(vocab_path):
        raise NlpkitError(
            f"{Path(config.data) / MANIFEST} was made with another vocab ({manifest.get('vocab')}) than {vocab_path}",
            hint="re-run nlpkit tokenize with this vocab, or pretrain with the vocab the shards were made with",
        )
    return int(manifest.get("rows", 0))


def _packed_rows(config, tokenizer, vocab):
    """Unbatched dataset of packed rows (+ the objective's label): read from shards, or packed here."""
    if data_kind(config.data) == "shards":
        return load_records(config.data).map(lambda row: {name: row[name] for name in FEATURES})
    signature = {name: tf.TensorSpec([config.seq_length], tf.int32) for name in FEATURES}
    label = OBJECTIVE_LABELS[config.objective]
    if label is not None:
        signature[label] = tf.TensorSpec([], tf.int32)
    return tf.data.Dataset.from_generator(lambda: _examples(config, tokenizer, vocab), output_signature=signature)


def masked_batches(config, tokenizer, vocab, micro_batch, skip_batches, streams=False):
    """Infinite dataset of dynamically masked micro-batches (dicts of features), from `skip_batches` on.

    Each batch holds the packed inputs, `masked_lm_positions`, `masked_lm_ids`, `masked_lm_weights`
    and, with a sentence objective, its label feature (`OBJECTIVE_LABELS`).
    streams: Transformer-XL memory: unshuffled parallel document streams (`nlpkit.data.segments`).
    """
    if streams:
        from nlpkit.data.segments import stream_dataset

        dataset = stream_dataset(lambda: _documents(config, tokenizer), micro_batch, config.seq_length)
    else:
        dataset = _packed_rows(config, tokenizer, vocab)
        dataset = dataset.repeat().shuffle(_SHUFFLE_BUFFER, seed=config.seed).batch(micro_batch, drop_remainder=True)
    masker = MlmMasker(
        vocab,
        max_predictions_per_seq=config.max_predictions_per_seq,
        masked_lm_prob=config.masked_lm_prob,
        whole_word=config.whole_word,
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return mask_dataset(dataset, masker, config.seed, skip=skip_batches).with_options(options)
