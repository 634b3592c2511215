"""BigBird block-sparse attention ("Big Bird: Transformers for Longer Sequences").

The sequence is cut into blocks of `block_size`. Global blocks (the first and last
`num_global_blocks`) attend to every key and are attended by every query; every other query
block attends to its window (previous, own and next block), the global blocks and
`num_rand_blocks` random blocks. Memory is O(T·block_size·(3 + globals + random)).
"""

import keras
import numpy as np
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention import keras_mha
from nlpkit.layers.attention.efficient.masks import factorize_padding
from nlpkit.layers.attention.efficient.projected import ProjectedCoreAttention
from nlpkit.layers.attention.registry import register_attention
from nlpkit.layers.masks import masked_softmax


def bigbird_block_plan(num_blocks, num_global_blocks, num_rand_blocks, seed):
    """Which key blocks each query block sees.

    Returns (global block ids, middle block ids, slots): `slots[i]` lists the distinct key blocks
    of middle query block `middle[i]` (window, globals, then random), padded with -1.
    Random blocks are drawn from the blocks outside the window and the globals, fixed by `seed`.
    """
    first = list(range(min(num_global_blocks, num_blocks)))
    last = list(range(max(num_blocks - num_global_blocks, len(first)), num_blocks))
    global_ids = first + last
    middle = [b for b in range(num_blocks) if b not in global_ids]
    rng = np.random.default_rng(seed)
    rows = []
    for block in middle:
        window = [b for b in (block - 1, block, block + 1) if 0 <= b < num_blocks]
        seen = list(dict.fromkeys(window + global_ids))
        candidates = [b for b in range(num_blocks) if b not in seen]
        picks = rng.choice(candidates, size=min(num_rand_blocks, len(candidates)), replace=False) if candidates else []
        rows.append(seen + sorted(int(b) for b in picks))
    width = max((len(r) for r in rows), default=0)
    slots = np.array([r + [-1] * (width - len(r)) for r in rows], dtype="int32").reshape(len(rows), width)
    return global_ids, middle, slots


def bigbird_block_mask(length, block_size, num_global_blocks=1, num_rand_blocks=3, seed=0):
    """The dense `[T, T]` boolean pattern BigBirdAttention computes (for inspection and tests)."""
    num_blocks = -(-length // block_size)
    global_ids, middle, slots = bigbird_block_plan(num_blocks, num_global_blocks, num_rand_blocks, seed)
    blocks = np.zeros((num_blocks, num_blocks), bool)
    blocks[global_ids, :] = True
    for block, row in zip(middle, slots):
        blocks[block, row[row >= 0]] = True
    return np.kron(blocks, np.ones((block_size, block_size), bool)).astype(bool)[:length, :length]


@keras.saving.register_keras_serializable(package="nlpkit")
class BigBirdAttention(ProjectedCoreAttention):
    """Block-sparse self-attention: window + global + random blocks, O(T) memory.

    Args:
      num_heads, key_dim, value_dim, dropout, use_bias, output_shape, kernel_initializer, ...:
        as for MultiHeadAttention (`attention_axes` must be None).
      block_size: tokens per block (a shorter input is one block, i.e. full attention).
      num_rand_blocks: random key blocks per non-global query block.
      num_global_blocks: global blocks at each end (first and last); with 2x this >= the
        number of blocks, every block is global and this is full attention.
      seed: seed of the random block choice (fixed per sequence length).

    Call: `layer(query [B,T,D], value [B,T,D], key=None, attention_mask=None, training=None)`
    -> `[B,T,D]`. Self-attention (T = S, static). `attention_mask` is a `[B,S]` key padding
    mask or a padding-style `[B,T,S]` mask (query x key padding; others refused when their
    values are known). Padded queries output zeros before the output projection.
    """

    def __init__(self, num_heads, key_dim, block_size=64, num_rand_blocks=3, num_global_blocks=1, seed=0, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.block_size = block_size
        self.num_rand_blocks = num_rand_blocks
        self.num_global_blocks = num_global_blocks
        self.seed = seed

    def _compute_attention(self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs):
        if self._causal_call:
            raise NlpkitError(
                "BigBirdAttention is bidirectional: it does not support use_causal_mask",
                hint="use a causal attention ('causal-linear', 'local')",
            )
        length = query.shape[1]
        if length is None or key.shape[1] != length:
            raise NlpkitError(
                f"BigBirdAttention is self-attention over a static length, got T={length}, S={key.shape[1]}",
                hint="give query and value the same fixed length",
            )
        block = min(self.block_size, length)
        num_blocks = -(-length // block)
        padded = num_blocks * block
        query_padding = None
        key_padding = ops.arange(padded)[None, :] < length
        if attention_mask is not None:
            query_padding, keys = factorize_padding(attention_mask)
            key_padding = ops.logical_and(key_padding, _pad(keys, padded - length, False))
        q, k, v = (_pad(ops.cast(x, "float32"), padded - length) for x in (query, key, value))
        q = q * (1.0 / np.sqrt(self.key_dim))
        global_ids, middle, slots = bigbird_block_plan(num_blocks, self.num_global_blocks, self.num_rand_blocks, self.seed)

        blocks = {}
        if global_ids:
            q_global = ops.concatenate([q[:, b * block : (b + 1) * block] for b in global_ids], axis=1)
            out = self._attend(q_global, k, v, key_padding[:, None, None, :], training)
            for i, b in enumerate(global_ids):
                blocks[b] = out[:, i * block : (i + 1) * block]
        if middle:
            out = self._attend_sparse(q, k, v, key_padding, middle, slots, block, num_blocks, training)
            for i, b in enumerate(middle):
                blocks[b] = out[:, i]
        output = ops.concatenate([blocks[b] for b in range(num_blocks)], axis=1)[:, :length]
        if query_padding is not None:
            output = output * ops.cast(query_padding, "float32")[:, :, None, None]
        return ops.cast(output, query.dtype), None

    def _attend(self, q, k, v, mask, training):
        probs = masked_softmax(ops.einsum("btnh,bsnh->bnts", q, k), mask, axis=-1)
        return ops.einsum("bnts,bsnm->btnm", self._drop(probs, training), v)

    def _attend_sparse(self, q, k, v, key_padding, middle, slots, block, num_blocks, training):
        """Middle query blocks `[B, n, C, N, H]` over their gathered key blocks -> `[B, n, C, N, M]`."""
        index = ops.convert_to_tensor(np.maximum(slots, 0))
        slot_valid = ops.convert_to_tensor(np.repeat(slots >= 0, block, axis=1))  # [n, K*C]

        def gather_blocks(x):
            # Each block's positions, heads and features fold into one axis for the gather: a
            # [B, n, K, C, N, H] tensor would exceed rank 5, which TensorFlow's oneDNN kernels refuse.
            rest = x.shape[2:]
            x = ops.reshape(x, (-1, num_blocks, int(np.prod((block, *rest)))))
            x = ops.take(x, index, axis=1)  # [B, n, K, C*...]
            return ops.reshape(x, (-1, len(middle), slots.shape[1] * block, *rest))

        q_mid = ops.take(ops.reshape(q, (-1, num_blocks, block, *q.shape[2:])), np.array(middle, "int32"), axis=1)
        mask = ops.logical_and(gather_blocks(key_padding), slot_valid[None])  # [B, n, K*C]
        scores = ops.einsum("bjcnh,bjknh->bjnck", q_mid, gather_blocks(k))
        probs = masked_softmax(scores, mask[:, :, None, None, :], axis=-1)
        return ops.einsum("bjnck,bjknm->bjcnm", self._drop(probs, training), gather_blocks(v))

    def _drop(self, probs, training):
        if self.dropout > 0.0:
            return ops.cast(keras_mha.probability_dropout(self)(probs, training=training), "float32")
        return probs

    def get_config(self):
        config = super().get_config()
        config.update(
            block_size=self.block_size,
            num_rand_blocks=self.num_rand_blocks,
            num_global_blocks=self.num_global_blocks,
            seed=self.seed,
        )
        return config


def _pad(x, amount, value=0):
    widths = [(0, 0)] * len(x.shape)
    widths[1] = (0, amount)
    return ops.pad(x, widths, constant_values=value)


register_attention("bigbird")(BigBirdAttention)
