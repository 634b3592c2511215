"""Packed examples on disk: sharded TFRecord files of tf.train.Example plus a JSON manifest, or JSON lines.

A TFRecord output is a folder:

    manifest.json            counts, seq_length, vocab checksum, truncation statistics, shard list
    part-00000.tfrecord ...  tf.train.Example with int64 features input_word_ids / input_mask /
                             input_type_ids ([seq_length] each) and optionally label (scalar)

`load_records(folder)` turns it back into a tf.data.Dataset of int32 dicts for pretraining / fine-tuning.
"""

import json
from pathlib import Path

from nlpkit._tf import import_tensorflow
from nlpkit.errors import NlpkitError

tf = import_tensorflow()

MANIFEST = "manifest.json"
FEATURES = ("input_word_ids", "input_mask", "input_type_ids")
ROWS_PER_SHARD = 100_000


class ExampleSerializer:
    """Serializes rows as tf.train.Example bytes, refilling one proto (4x faster than a new proto per row)."""

    def __init__(self, has_label):
        self._example = tf.train.Example()
        names = FEATURES + (("label",) if has_label else ())
        self._values = [self._example.features.feature[name].int64_list.value for name in names]

    def __call__(self, *columns):
        """columns: word ids, mask, type ids (int sequences) and, if has_label, the label (an int)."""
        for values, column in zip(self._values, columns):
            del values[:]
            values.extend(column if isinstance(column, list) else [int(column)])
        return self._example.SerializeToString()


class ShardedRecordWriter:
    """Writes packed batches into part-NNNNN.tfrecord files of at most `rows_per_shard` rows each."""

    def __init__(self, folder, rows_per_shard=ROWS_PER_SHARD):
        self.folder = Path(folder)
        self.rows_per_shard = rows_per_shard
        self.shards = []  # [(file name, rows)]
        self._writer = None
        self._serializers = {}  # has_label -> ExampleSerializer

    def _next_shard(self):
        self.close()
        name = f"part-{len(self.shards):05d}.tfrecord"
        self._writer = tf.io.TFRecordWriter(str(self.folder / name))
        self.shards.append([name, 0])

    def write_batch(self, packed, labels=None):
        """packed: dict of [B, T] int arrays; labels: [B] ints or None."""
        columns = [packed[name].tolist() for name in FEATURES]
        if labels is not None:
            columns.append(labels.tolist() if hasattr(labels, "tolist") else list(labels))
        serialize = self._serializers.setdefault(labels is not None, ExampleSerializer(labels is not None))
        for row in zip(*columns):
            if self._writer is None or self.shards[-1][1] >= self.rows_per_shard:
                self._next_shard()
            self._writer.write(serialize(*row))
            self.shards[-1][1] += 1

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class JsonLinesWriter:
    """Writes one JSON object per row (input_word_ids, input_mask, input_type_ids[, label]) to an open file."""

    def __init__(self, handle):
        self.handle = handle

    def write_batch(self, packed, labels=None):
        columns = [packed[name].tolist() for name in FEATURES]
        for row, values in enumerate(zip(*columns)):
            record = dict(zip(FEATURES, values))
            if labels is not None:
                record["label"] = int(labels[row])
            self.handle.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self):
        pass


def write_manifest(folder, manifest):
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_manifest(folder):
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise NlpkitError(f"{folder} has no {MANIFEST}", hint="pass a folder written by: nlpkit tokenize --format tfrecord")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NlpkitError(f"{path} is not valid JSON ({err})", hint="re-run nlpkit tokenize") from None


def load_records(folder, *, shuffle_files=False, seed=None):
    """A tf.data.Dataset of dicts (int32 [seq_length] features, int32 `label` when present), unbatched.

    Rows come in written order, or from shuffled, interleaved shards with `shuffle_files`.
    """
    manifest = read_manifest(folder)
    seq_length = manifest["seq_length"]
    spec = {name: tf.io.FixedLenFeature([seq_length], tf.int64) for name in FEATURES}
    if manifest.get("has_label"):
        spec["label"] = tf.io.FixedLenFeature([], tf.int64)
    files = [str(Path(folder) / name) for name in manifest["files"]]
    if shuffle_files:
        dataset = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    else:  # rows in the order they were written
        dataset = tf.data.TFRecordDataset(files)

    def parse(record):
        parsed = tf.io.parse_single_example(record, spec)
        return {name: tf.cast(value, tf.int32) for name, value in parsed.items()}

    return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
