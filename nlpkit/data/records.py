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


def serialize_examples(features):
    """[B] serialized tf.train.Example strings of a batch: `features` maps names to int [B, T] or [B] tensors.

    Built in the graph with `tf.io.encode_proto` from TensorFlow's own Example descriptors, one
    nested message level at a time, so a tf.data map serializes whole batches on both cores instead
    of filling one protobuf per row in Python.
    """
    names = sorted(features)
    batch = tf.shape(features[names[0]])[0]
    entries = [_feature_entry(name, features[name], batch) for name in names]
    maps = _encode("tensorflow.Features", batch, feature=(tf.stack(entries, axis=1), len(names)))
    return _encode("tensorflow.Example", batch, features=(maps[:, None], 1))


def _feature_entry(name, values, batch):
    """Serialized Features.FeatureEntry {key: name, value: Feature{int64_list}} of each row."""
    values = tf.cast(tf.reshape(values, [batch, -1]), tf.int64)
    int64_lists = _encode("tensorflow.Int64List", batch, value=(values, tf.shape(values)[1]))
    feature = _encode("tensorflow.Feature", batch, int64_list=(int64_lists[:, None], 1))
    return _encode("tensorflow.Features.FeatureEntry", batch, key=(tf.fill([batch, 1], name), 1),
                   value=(feature[:, None], 1))


def _encode(message_type, batch, **fields):
    """One message per row; fields: name -> ([B, n] values, n values per row)."""
    names = list(fields)
    sizes = tf.stack([tf.fill([batch], fields[name][1]) for name in names], axis=1)
    return tf.io.encode_proto(sizes, [fields[name][0] for name in names], names, message_type)


class ShardedRecordWriter:
    """Writes packed batches into part-NNNNN.tfrecord files of at most `rows_per_shard` rows each."""

    def __init__(self, folder, rows_per_shard=ROWS_PER_SHARD):
        self.folder = Path(folder)
        self.rows_per_shard = rows_per_shard
        self.shards = []  # [(file name, rows)]
        self._writer = None

    def _next_shard(self):
        self.close()
        name = f"part-{len(self.shards):05d}.tfrecord"
        self._writer = tf.io.TFRecordWriter(str(self.folder / name))
        self.shards.append([name, 0])

    def write_batch(self, batch):
        """batch: a packed batch whose "records" are serialized tf.train.Example strings (`serialize_examples`)."""
        records, start = batch["records"], 0
        while start < len(records):  # the part of the batch that fits in the current shard, at a time
            if self._writer is None or self.shards[-1][1] >= self.rows_per_shard:
                self._next_shard()
            part = records[start:start + self.rows_per_shard - self.shards[-1][1]]
            write = self._writer.write  # one bound method: the loop runs once a row
            for record in part:
                write(record)
            self.shards[-1][1] += len(part)
            start += len(part)

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class JsonLinesWriter:
    """Writes one JSON object per row (input_word_ids, input_mask, input_type_ids[, label]) to an open file."""

    def __init__(self, handle):
        self.handle = handle

    def write_batch(self, batch):
        """batch: dict of packed [B, T] int arrays (and [B] "label")."""
        columns = [batch[name].tolist() for name in FEATURES]
        labels = batch.get("label")
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
