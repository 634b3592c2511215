"""Length bucketing of packed training data (TensorFlow only): fewer padded positions per batch.

Packed rows are `[N, seq_length]`, but most rows are much shorter. Two pieces, both pure TensorFlow
ops so they run inside `tf.data` under any distribution strategy:

- `group_by_length(order, lengths, window, chunk, seed)`: a permutation of the rows in `order`
  (one epoch's order) in which each window of `window` consecutive rows is sorted by length and cut
  into chunks of `chunk` rows (one micro-batch each), the chunks of a window then put in a random
  order. Every row stays in the epoch (a permutation of it), near its old place (within its window),
  and each micro-batch holds rows of similar length. Stateless: a pure function of its arguments.
- `trim_batch(columns, lengths, boundaries)`: cut a gathered batch `[B, seq_length]` to the smallest
  boundary that holds its longest row, so the step computes on `[B, bucket]` instead.

A row's length is its number of positions up to its last unmasked one (`row_lengths`): packing pads
at the end, so cutting a batch to a length >= its longest row drops only padding.
"""

import numpy as np

from nlpkit._tf import import_tensorflow

tf = import_tensorflow()

# Micro-batches per window of `group_by_length`: enough rows that each chunk holds similar lengths,
# few enough that the data order stays close to the epoch's shuffle.
WINDOW_BATCHES = 16
# Bucket lengths are multiples of this (the matmul kernels' preferred tile).
MULTIPLE = 8
# Under a compiler that builds one program per shape (XLA, JAX), at most this many buckets.
COMPILED_BUCKETS = 4


def row_lengths(input_mask):
    """int32 `[N]`: for each row of a `[N, T]` padding mask, the position after its last unmasked one."""
    mask = np.asarray(input_mask) != 0
    width = mask.shape[1]
    last = width - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), last, 0).astype("int32")


def bucket_boundaries(seq_length, compiled=False):
    """Ascending bucket lengths ending at `seq_length`: every multiple of MULTIPLE below it, or,
    where each shape is compiled on its own (`compiled`), at most COMPILED_BUCKETS of them."""
    count = COMPILED_BUCKETS if compiled else max(seq_length // MULTIPLE, 1)
    step = max(MULTIPLE, -(-seq_length // count // MULTIPLE) * MULTIPLE)
    return tuple(range(step, seq_length, step)) + (seq_length,)


def group_by_length(order, lengths, window, chunk, seed):
    """`order` (int64 `[n]` row indices) reordered: windows of `window` sorted by `lengths[row]`,
    cut into `chunk`-row chunks, and the chunks of each window shuffled (stateless, by `seed`).

    A last chunk shorter than `chunk` (n not a multiple) stays last, so the full chunks line up with
    the micro-batches that follow from the start of `order`.
    """
    n = tf.shape(order, out_type=tf.int64)[0]
    position = tf.range(n, dtype=tf.int64)
    window_of = position // window
    # One stable sort on (window, length) sorts every window on its own.
    length = tf.cast(tf.gather(lengths, order), tf.int64)
    order = tf.gather(order, tf.argsort(window_of * (2**31) + length, stable=True))
    chunk_of = position // chunk
    chunks = (n + chunk - 1) // chunk
    draw = tf.random.stateless_uniform([chunks], seed=seed, minval=0, maxval=2**31 - 1, dtype=tf.int64)
    full_chunks = n // chunk
    draw = tf.where(tf.range(chunks) < full_chunks, draw, 2**31 - 1)  # the short chunk stays last
    # A stable sort on (window, chunk's draw): chunks stay whole (equal draws keep their order).
    return tf.gather(order, tf.argsort(window_of * (2**31) + tf.gather(draw, chunk_of), stable=True))


def epoch_batches(columns, micro_batch, seed, skip_batches=0, lengths=None, boundaries=None, cut=None):
    """Infinite micro-batches of `columns` (a tuple of arrays with N rows), from `skip_batches` on.

    Epoch e visits the rows in a stateless permutation seeded by (seed, e): the order depends on
    nothing but the seed, never on how often the dataset was iterated (a seeded `shuffle` reshuffles
    per iterator, and a distribution strategy may open more than one), so a resumed run skips to
    exactly the batch it stopped at. With `lengths` (`row_lengths`, int32 [N]) and `boundaries`, each
    epoch's order is `group_by_length`'s and each batch is cut (`trim_batch`) in the columns whose
    `cut` flag is set (those of shape [N, T]: inputs, per-token targets).
    """
    count = len(columns[1])
    bucketing = lengths is not None
    if bucketing:
        lengths = tf.constant(lengths, tf.int32)

    def epoch_order(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=[seed, epoch])
        if bucketing:
            chunk_seed = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(seed, tf.int64), epoch]), 1)
            order = group_by_length(order, lengths, WINDOW_BATCHES * micro_batch, micro_batch, chunk_seed)
        return tf.data.Dataset.from_tensor_slices(order)

    def take(rows):
        batch = tf.nest.map_structure(lambda column: tf.gather(column, rows), columns)
        if not bucketing:
            return batch
        batch_lengths = tf.gather(lengths, rows)
        return tuple(trim_batch(part, batch_lengths, boundaries) if flag else part for part, flag in zip(batch, cut))

    dataset = tf.data.Dataset.range(2**62).flat_map(epoch_order)
    dataset = dataset.batch(micro_batch, drop_remainder=True).skip(skip_batches).map(take)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def trim_batch(columns, lengths, boundaries):
    """`columns` (a nest of `[B, T]` tensors of one batch) cut to `[B, L]`: L the smallest of
    `boundaries` >= the longest of `lengths` (int32 `[B]`, the batch's row lengths)."""
    boundaries = tf.constant(boundaries, tf.int32)
    longest = tf.reduce_max(lengths)
    size = boundaries[tf.minimum(tf.searchsorted(boundaries, [longest])[0], tf.size(boundaries) - 1)]
    return tf.nest.map_structure(lambda column: column[:, :size], columns)
