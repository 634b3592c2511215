"""read -> tokenize -> pack -> write: the library side of `nlpkit tokenize`.

Plain text files (already checked to be UTF-8) are read by tf.data itself; other rows stream from
`datasets` in batches. A tf.data map tokenizes and packs two batches at a time (both cores); the
main thread writes TFRecord shards or JSON lines into a temporary name that is renamed into place
only when everything succeeded.
"""

import time
from pathlib import Path

from nlpkit._tf import import_tensorflow
from nlpkit.data import records
from nlpkit.data.sources import has_lone_carriage_return, iter_rows
from nlpkit.errors import NlpkitError
from nlpkit.io import atomic_dir, atomic_file, check_replaceable, check_writable
from nlpkit.text.packing import check_seq_length, pack_inputs
from nlpkit.text.vocab import file_checksum

tf = import_tensorflow()

FORMATS = ("tfrecord", "jsonl")
# Rows tokenized together. Each batch pays a fixed cost in every op of the map (and tf.data's per-line
# reading), which dominates on short lines: on 20 MB of 8-word news lines (benchmarks/tokenize.py)
# the map took 4.5 CPU-s at 2048 rows against 5.3 at 256, the whole command 14.0-14.9 CPU-s at 1024
# against 15.2-15.4 at 256 (a loaded machine). 1024 rows of even 400-byte lines are 0.4 MB, so both
# cores still have a batch in flight. (256 once measured faster, while the autotuner still idled a
# core one run in three; see `without_autotune`.)
BATCH_SIZE = 1024


class LabelEncoder:
    """Label values -> ids by nlpkit's one label encoding (`nlpkit.data.labelled.sorted_labels`):
    the index in the sorted distinct label strings, so `nlpkit tokenize` numbers labels as
    `nlpkit finetune` does. Ids are fixed before any row is written: `for_source` reads the label
    column once first."""

    def __init__(self, names=()):
        self.names = list(names)
        self._index = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def for_source(cls, source):
        """The encoder of every label in `source` (none when it has no label column)."""
        from nlpkit.data.labelled import label_text, sorted_labels

        if not source.label_column:
            return cls()
        seen, row = set(), 0
        for batch in iter_rows(source):
            for value in batch["label"]:
                row += 1
                seen.add(label_text(value, source.name, row))
        return cls(sorted_labels(seen))

    def encode(self, values):
        from nlpkit.data.labelled import label_text

        ids = []
        for value in values:
            name = label_text(value, "the input", "?")
            if name not in self._index:
                raise NlpkitError(f"label {name!r} appeared after the labels were counted",
                                  hint="the input changed while it was read: run again")
            ids.append(self._index[name])
        return ids


def _batches_with_failure(source, batch_size, labels, failure):
    """Row batches for tf.data; an exception is stored in `failure` (tf.data would hide its type)."""
    try:
        for batch in iter_rows(source, batch_size=batch_size):
            out = {"text": batch["text"]}
            if "pair" in batch:
                out["pair"] = batch["pair"]
            if "label" in batch:
                out["label"] = labels.encode(batch["label"])
            yield out
    except Exception as err:  # noqa: BLE001 - re-raised by the caller after the dataset stops
        failure.append(err)


# A line Python's str.strip() would empty: ASCII and Unicode white space, \x1c-\x1f and NEL included.
_BLANK_LINE = r"[\s\v\x{1c}-\x{1f}\x{85}\pZ]*"


def _text_lines_dataset(source, batch_size):
    """Batches {"text": lines} of checked plain text files, read in C++ by tf.data (no Python per line).

    The same rows as `sources.iter_rows` (lines ending in \n or \r\n, blank lines dropped) for
    files without a lone \r, which tf.data would drop instead of ending a line there.
    """
    lines = tf.data.TextLineDataset([str(path) for path in source.files]).batch(batch_size)

    def drop_blank(batch):
        return {"text": tf.boolean_mask(batch, ~tf.strings.regex_full_match(batch, _BLANK_LINE))}

    return lines.map(tf.autograph.experimental.do_not_convert(drop_blank))


def _read_by_tf_data(source):
    return (source.kind == "text" and source.errors == "strict" and source.checked
            and not any(has_lone_carriage_return(path) for path in source.files))


def _row_dataset(source, batch_size, labels, failure):
    if _read_by_tf_data(source):
        return _text_lines_dataset(source, batch_size)
    signature = {"text": tf.TensorSpec([None], tf.string)}
    if source.pair_column:
        signature["pair"] = tf.TensorSpec([None], tf.string)
    if source.label_column:
        signature["label"] = tf.TensorSpec([None], tf.int64)
    return tf.data.Dataset.from_generator(
        lambda: _batches_with_failure(source, batch_size, labels, failure), output_signature=signature
    )


def packed_dataset(source, tokenizer, *, seq_length, truncation, batch_size=BATCH_SIZE, labels=None, failure=None,
                   serialize=False):
    """A tf.data.Dataset of packed batches (numpy-ready dicts) plus the batch's scalar counts (`_batch_counts`).

    With `serialize`, a batch holds "records" (its rows as serialized tf.train.Example strings)
    instead of the packed [B, T] arrays.
    """
    num_segments = 2 if source.pair_column else 1
    check_seq_length(seq_length, num_segments)
    labels = labels if labels is not None else LabelEncoder.for_source(source)
    failure = failure if failure is not None else []
    budget = seq_length - (num_segments + 1)

    def encode(batch):
        segments = [tokenizer.tokenize(batch["text"])]
        if "pair" in batch:
            segments.append(tokenizer.tokenize(batch["pair"]))
        packed = pack_inputs(
            segments, seq_length, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id,
            truncator=truncation,
        )
        if "label" in batch:
            packed["label"] = batch["label"]
        counts = _batch_counts(batch, segments, packed["input_mask"], budget)
        if serialize:  # the writer needs only the records: the [B, T] arrays stay in the graph
            return {"records": records.serialize_examples(packed), **counts}
        return {**packed, **counts}

    dataset = _row_dataset(source, batch_size, labels, failure)
    # Plain TensorFlow ops: AutoGraph's source conversion of every function `encode` calls would
    # only cost seconds at start-up.
    encode = tf.autograph.experimental.do_not_convert(encode)
    return without_autotune(dataset.map(encode, num_parallel_calls=2, deterministic=True).prefetch(2))


def _batch_counts(batch, segments, input_mask, budget):
    """Scalar int64 counts of one batch for `Statistics`, summed in the graph (no [B] arrays to Python)."""
    lengths = tf.add_n([tf.cast(segment.row_lengths(), tf.int64) for segment in segments])
    rows = tf.size(lengths, out_type=tf.int64)
    texts = [batch[column] for column in ("text", "pair") if column in batch]
    return {
        "rows": rows,
        "tokens": tf.reduce_sum(lengths),
        # input_mask covers the kept tokens plus [CLS] and one [SEP] a segment.
        "tokens_kept": tf.reduce_sum(tf.cast(input_mask, tf.int64)) - rows * (len(segments) + 1),
        "truncated_rows": tf.reduce_sum(tf.cast(lengths > budget, tf.int64)),
        "bytes": tf.add_n([tf.reduce_sum(tf.cast(tf.strings.length(text), tf.int64)) for text in texts]),
    }


def without_autotune(dataset):
    """The dataset with tf.data's autotuner off: its parallelism and buffers stay as written.

    With the autotuner on, about one run in three on this 2-core machine kept one core idle for the
    whole run (raw WordPiece at 15 MB/s instead of 22-30; benchmarks/tokenize.py, 16 runs each way).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class Statistics:
    """Counts for the manifest and the progress bar."""

    def __init__(self):
        self.rows = self.truncated_rows = self.tokens = self.tokens_kept = self.bytes = 0
        self.started = time.perf_counter()

    def add(self, batch):
        """batch: a packed batch with the scalar counts of `_batch_counts`."""
        self.rows += int(batch["rows"])
        self.truncated_rows += int(batch["truncated_rows"])
        self.tokens += int(batch["tokens"])
        self.tokens_kept += int(batch["tokens_kept"])
        self.bytes += int(batch["bytes"])

    def rate(self):
        seconds = max(time.perf_counter() - self.started, 1e-9)
        return f"{self.rows / seconds:,.0f} lines/s {self.bytes / seconds / 1e6:.1f} MB/s"

    def as_dict(self, truncation):
        return {
            "rows": self.rows,
            "bytes": self.bytes,
            "tokens": self.tokens,
            "truncation": {
                "strategy": truncation,
                "truncated_rows": self.truncated_rows,
                "truncated_fraction": round(self.truncated_rows / max(self.rows, 1), 6),
                "tokens_dropped": self.tokens - self.tokens_kept,
            },
        }


def check_output(path, fmt, force=False):
    """Fail early (before any work) on an output that cannot be written or must not be replaced."""
    path = Path(path)
    if fmt == "jsonl" and path.is_dir():
        raise NlpkitError(f"output {path} is a folder", hint="--format jsonl writes one file: pass a file name")
    is_ours = _is_tokenize_folder if fmt == "tfrecord" else None
    check_replaceable(path, force, is_ours=is_ours, kind="an nlpkit tokenize folder")
    check_writable(path)


def _is_tokenize_folder(path):
    return path.is_dir() and (path / records.MANIFEST).is_file()


def tokenize_to_disk(
    source,
    tokenizer,
    output,
    *,
    vocab_path,
    seq_length=128,
    fmt="tfrecord",
    truncation="round_robin",
    batch_size=BATCH_SIZE,
    rows_per_shard=records.ROWS_PER_SHARD,
    force=False,
    on_batch=None,
):
    """Tokenize and pack every row of `source` into `output`; return the manifest (a dict).

    `on_batch(statistics)` is called after each written batch (for a progress bar).
    """
    if fmt not in FORMATS:
        raise NlpkitError(f"unknown --format {fmt!r}", hint=f"choose one of {', '.join(FORMATS)}")
    num_segments = 2 if source.pair_column else 1
    check_seq_length(seq_length, num_segments)
    labels, failure, stats = LabelEncoder.for_source(source), [], Statistics()
    dataset = packed_dataset(
        source, tokenizer, seq_length=seq_length, truncation=truncation, batch_size=batch_size,
        labels=labels, failure=failure, serialize=fmt == "tfrecord",
    )
    check_output(output, fmt, force)
    context = atomic_dir(output, overwrite=True) if fmt == "tfrecord" else atomic_file(output)
    with context as tmp:
        handle = open(tmp, "w", encoding="utf-8") if fmt == "jsonl" else None
        writer = records.JsonLinesWriter(handle) if handle else records.ShardedRecordWriter(tmp, rows_per_shard)
        try:
            for batch in dataset.as_numpy_iterator():
                writer.write_batch(batch)
                stats.add(batch)
                if on_batch:
                    on_batch(stats)
        finally:
            writer.close()
            if handle:
                handle.close()
        if failure:
            raise failure[0]
        manifest = _manifest(source, tokenizer, vocab_path, seq_length, fmt, stats, truncation, labels)
        if fmt == "tfrecord":
            manifest["files"] = [name for name, _ in writer.shards]
            manifest["shard_rows"] = [rows for _, rows in writer.shards]
            records.write_manifest(tmp, manifest)
    return manifest


def _manifest(source, tokenizer, vocab_path, seq_length, fmt, stats, truncation, labels):
    return {
        "nlpkit": "tokenize",
        "format": fmt,
        "input": source.name,
        "columns": {"text": source.text_column, "pair": source.pair_column, "label": source.label_column},
        "seq_length": seq_length,
        "tokenizer": type(tokenizer).__name__,
        "lower_case": getattr(tokenizer, "lower_case", None),
        "vocab": str(vocab_path),
        "vocab_checksum": file_checksum(vocab_path),
        "vocab_size": tokenizer.vocab_size,
        "special_ids": {"cls": tokenizer.cls_id, "sep": tokenizer.sep_id, "pad": tokenizer.pad_id},
        "has_label": source.label_column is not None,
        "label_names": labels.names or None,
        **stats.as_dict(truncation),
    }


def preview_tokens(tokenizer, texts):
    """Token strings of each text (for `--preview`)."""
    ids = tokenizer.tokenize(tf.constant(texts))
    tokens = tokenizer.id_to_token(ids)
    return [[t.decode("utf-8", "replace") for t in row] for row in tokens.to_list()]
