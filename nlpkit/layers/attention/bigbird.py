"""BigBird block-sparse attention ("Big Bird: Transformers for Longer Sequences"), with Model
Garden's arguments (`official/nlp/modeling/layers/bigbird_attention.py`) and its `BigBirdMasks`.

Queries are cut into blocks of `from_block_size` tokens and keys into as many blocks of
`to_block_size` (so T != S when the two sizes differ). Global blocks (the first and last
`num_global_blocks`) attend to every key and are attended by every query; every other query
block attends to its window (previous, own and next block), the global blocks and
`num_rand_blocks` random blocks drawn for each head. The computation is blocked: a loop over
chunks of query blocks (CHUNK_TOKENS queries a step), each step gathering only its own key and
value blocks and rematerialised in the backward pass, so one chunk's scores exist at a time.
Memory is O(T·D) plus one step's CHUNK_TOKENS·N·block·(3 + 2·globals + random) scores.
"""

import keras
import numpy as np
from keras import ops

from nlpkit.errors import NlpkitError
import nlpkit.layers.attention.keras_mha as keras_mha
from nlpkit.layers.attention.efficient.masks import factorize_padding
from nlpkit.layers.attention.efficient.projected import ProjectedCoreAttention
from nlpkit.layers.attention.registry import register_attention
from nlpkit.layers.masks import masked_softmax
from nlpkit.errors import one_of_names

# Query tokens per step of the blocked loop: one step's scores are CHUNK_TOKENS x N x K·to_block_size.
CHUNK_TOKENS = 4096
# Model Garden's `max_rand_mask_length`: the longest input a traced, unknown length may have.
MAX_SEQ_LEN = 4096


def bigbird_random_blocks(num_blocks, uniforms, num_global_blocks):
    """Random key blocks of every query block and head, drawn from `uniforms`.

    Query block i draws R distinct blocks, without replacement, from the blocks that are neither
    global nor in its window {i-1, i, i+1}; where fewer than R such blocks exist, the extra picks
    are invalid. Works with a `num_blocks` known only when the graph runs.

    Args:
      num_blocks: number of key (= query) blocks, an int or a scalar int32 tensor.
      uniforms: `[num_blocks, N, R]` float32 in [0, 1): pick r of block i, head n uses `uniforms[i, n, r]`.
      num_global_blocks: global blocks at each end.
    Returns:
      (`[num_blocks, N, R]` int32 block ids, `[num_blocks, N, R]` bool valid).
    """
    g, rand = num_global_blocks, uniforms.shape[-1]
    query_block = ops.arange(num_blocks, dtype="int32")[:, None]  # [nb, 1]
    # The candidates are two runs of blocks: [g, lower_end) below the window, [upper_start, nb - g) above.
    lower_end = ops.minimum(ops.maximum(query_block - 1, g), num_blocks - g)
    upper_start = ops.minimum(ops.maximum(query_block + 2, g), num_blocks - g)
    lower_count = lower_end - g
    count = lower_count + (num_blocks - g - upper_start)
    picks, valid = [], []
    for r in range(rand):
        remaining = ops.maximum(count - r, 0)
        pick = ops.cast(ops.floor(uniforms[..., r] * ops.cast(remaining, "float32")), "int32")
        # The pick-th candidate not taken yet: step over the earlier picks in ascending order.
        if picks:
            for earlier in ops.unstack(ops.sort(ops.stack(picks, axis=-1), axis=-1), axis=-1):
                pick = pick + ops.cast(earlier <= pick, "int32")
        picks.append(pick)
        valid.append(ops.broadcast_to(remaining > 0, ops.shape(pick)))
    index = ops.stack(picks, axis=-1)  # position among the candidates
    lower_count = lower_count[..., None]
    blocks = ops.where(index < lower_count, g + index, upper_start[..., None] + index - lower_count)
    valid = ops.stack(valid, axis=-1)
    return ops.where(valid, blocks, 0), valid


@keras.saving.register_keras_serializable(package="nlpkit")
class BigBirdMasks(keras.layers.Layer):
    """Model Garden's `BigBirdMasks`: the masks its `BigBirdAttention` takes, from a padding mask.

    Args:
      block_size: tokens per block; the sequence length must be a multiple of it.

    Call: `layer(inputs [B, T, ...], mask [B, T])` (1 = real token) -> list of
    `band_mask [B, 1, T/block - 4, block, 3·block]`, `encoder_from_mask [B, 1, T, 1]`,
    `encoder_to_mask [B, 1, 1, T]`, `blocked_encoder_mask [B, T/block, block]`, in the dtype of
    `inputs`. BigBirdAttention reads the from/to masks (query and key padding); the band and
    blocked masks are Model Garden's forms of the same padding.
    """

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, inputs, mask):
        mask = ops.cast(mask, inputs.dtype)
        batch, length = ops.shape(mask)[0], ops.shape(mask)[1]
        blocked = ops.reshape(mask, (batch, length // self.block_size, self.block_size))
        from_mask = ops.reshape(mask, (batch, 1, length, 1))
        to_mask = ops.reshape(mask, (batch, 1, 1, length))
        # Each middle query block (2 .. nb-3) by its window of key blocks (previous, own, next).
        window = ops.concatenate([blocked[:, 1:-3], blocked[:, 2:-2], blocked[:, 3:-1]], axis=2)
        band = ops.einsum("blq,blk->blqk", blocked[:, 2:-2], window)[:, None]
        return [band, from_mask, to_mask, blocked]

    def compute_output_spec(self, inputs, mask):
        batch, length = mask.shape[0], mask.shape[1]
        blocks = None if length is None else length // self.block_size
        bands = None if blocks is None else blocks - 4
        shapes = [(batch, 1, bands, self.block_size, 3 * self.block_size), (batch, 1, length, 1), (batch, 1, 1, length),
                  (batch, blocks, self.block_size)]
        return [keras.KerasTensor(shape, dtype=inputs.dtype) for shape in shapes]

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="nlpkit")
class BigBirdAttention(ProjectedCoreAttention):
    """Block-sparse attention: window + global + per-head random blocks, O(T) memory.

    Args:
      num_heads, key_dim, value_dim, dropout, use_bias, output_shape, kernel_initializer, ...:
        as for MultiHeadAttention (`attention_axes` must be None).
      block_size: tokens per query block, and per key block unless `to_block_size` is given
        (default 64).
      from_block_size: Model Garden's name of `block_size` (give either; both must agree).
      to_block_size: tokens per key block (default `from_block_size`). T and S must make the same
        number of blocks (ceil(T / from_block_size) = ceil(S / to_block_size)); a length that is
        not a multiple is padded (a length under one block is full attention).
      num_rand_blocks: random key blocks per non-global query block, drawn separately per head.
      num_global_blocks: global blocks at each end (first and last); with 2x this >= the
        number of blocks, every block is global and this is full attention. Model Garden: 1.
      max_rand_mask_length: the longest input (tokens) whose length is unknown until the graph runs
        (a length known when the layer is called has no limit).
      seed: seed of the random blocks (NumPy `default_rng`, drawn once per head, block and pick);
        the same seed and length give the same blocks on every backend. None draws a seed once,
        at construction, and `get_config` records it.

    Call: `layer(query [B,T,D], value [B,S,D], key=None, attention_mask=None, training=None)`
    -> `[B,T,D]`. The lengths may differ from call to call, and be unknown (None) when traced.
    `attention_mask` is a `[B,S]` key padding mask, a padding-style `[B,T,S]` mask (query x key
    padding; others refused when their values are known) or the list `BigBirdMasks` returns.
    Padded queries output zeros before the output projection. With attention dropout in training,
    the dropped entries of all queries are drawn before the loop (T·N·K·to_block_size booleans).
    """

    def __init__(self, num_heads, key_dim, block_size=None, num_rand_blocks=3, num_global_blocks=1, seed=0,
                 from_block_size=None, to_block_size=None, max_rand_mask_length=MAX_SEQ_LEN, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        block = one_of_names("BigBirdAttention", ("block_size", "from_block_size"), (block_size, from_block_size))
        self.block_size = self.from_block_size = 64 if block is None else block
        self.to_block_size = self.from_block_size if to_block_size is None else to_block_size
        self.num_rand_blocks = num_rand_blocks
        self.num_global_blocks = num_global_blocks
        self.max_rand_mask_length = max_rand_mask_length
        # A drawn seed (not a global one) so that the config rebuilds the same random blocks.
        self.seed = int(np.random.default_rng().integers(2**31)) if seed is None else seed
        self._query_padding_call = None

    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False, training=None,
             use_causal_mask=False, **kwargs):
        if isinstance(attention_mask, (list, tuple)):
            # BigBirdMasks' outputs: the from/to masks are the query and key padding.
            _, from_mask, to_mask, _ = attention_mask
            self._query_padding_call = ops.cast(ops.squeeze(from_mask, axis=(1, 3)), "bool")
            attention_mask = ops.squeeze(to_mask, axis=(1, 2))
        try:
            return super().call(query, value, key=key, attention_mask=attention_mask, training=training,
                                return_attention_scores=return_attention_scores, use_causal_mask=use_causal_mask,
                                **kwargs)
        finally:
            self._query_padding_call = None

    def random_blocks(self, num_blocks):
        """(`[num_blocks, N, R]` int32 random key blocks per query block and head, bool valid)."""
        known = isinstance(num_blocks, int)
        uniforms = ops.convert_to_tensor(self._uniforms(num_blocks if known else 0))[:num_blocks]
        return bigbird_random_blocks(num_blocks, uniforms, self.num_global_blocks)

    def _uniforms(self, num_blocks):
        # Drawn row by row, so the first rows are the same however many are drawn.
        rows = max(num_blocks, -(-self.max_rand_mask_length // self.from_block_size))
        rng = np.random.default_rng(self.seed)
        return rng.random((rows, self.num_heads, self.num_rand_blocks), dtype=np.float32)

    def block_mask(self, query_length, key_length=None):
        """The `[N, T, S]` boolean pattern of each head (NumPy; for inspection and tests)."""
        key_length = query_length if key_length is None else key_length
        num_blocks = self._num_blocks(query_length, key_length)
        g, heads = self.num_global_blocks, self.num_heads
        blocks = np.zeros((heads, num_blocks, num_blocks), bool)
        ids, valid = (np.asarray(ops.convert_to_numpy(x)) for x in self.random_blocks(num_blocks))
        for i in range(num_blocks):
            blocks[:, i, [b for b in (i - 1, i, i + 1) if 0 <= b < num_blocks]] = True
            for n in range(heads):
                blocks[n, i, ids[i, n][valid[i, n]]] = True
        global_ids = [b for b in range(num_blocks) if b < g or b >= num_blocks - g]
        blocks[:, global_ids, :] = True
        blocks[:, :, global_ids] = True
        tokens = np.ones((1, self.from_block_size, self.to_block_size), bool)
        return np.kron(blocks, tokens)[:, :query_length, :key_length]

    def _num_blocks(self, query_length, key_length):
        num_blocks = (query_length + self.from_block_size - 1) // self.from_block_size
        if isinstance(query_length, int) and isinstance(key_length, int):
            key_blocks = -(-key_length // self.to_block_size)
            if key_blocks != num_blocks:
                raise NlpkitError(
                    f"BigBirdAttention needs as many query as key blocks, got T={query_length} "
                    f"({num_blocks} blocks of from_block_size={self.from_block_size}) and S={key_length} "
                    f"({key_blocks} blocks of to_block_size={self.to_block_size})",
                    hint="choose to_block_size = from_block_size * S / T",
                )
        return num_blocks

    def _compute_attention(self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs):
        if self._causal_call:
            raise NlpkitError(
                "BigBirdAttention is bidirectional: it does not support use_causal_mask",
                hint="use a causal attention ('causal-linear', 'local')",
            )
        query_padding, key_padding = self._query_padding_call, None
        if attention_mask is not None:
            rows, key_padding = factorize_padding(attention_mask)
            query_padding = rows if query_padding is None else ops.logical_and(query_padding, rows)
        length = ops.shape(query)[1]
        num_blocks = self._num_blocks(length, ops.shape(key)[1])
        if key_padding is None:
            key_padding = ops.ones(ops.shape(key)[:2], "bool")
        keys_valid = _to_blocks(key_padding, num_blocks, self.to_block_size, False)  # [B, nb, wn]
        q = _to_blocks(ops.cast(query, "float32") * (1.0 / np.sqrt(self.key_dim)), num_blocks, self.from_block_size)
        k, v = (_to_blocks(ops.cast(x, "float32"), num_blocks, self.to_block_size) for x in (key, value))

        output = self._attend_sparse(q, k, v, keys_valid, num_blocks, training)  # [B, nb, wm, N, M]
        if self.num_global_blocks:
            output = self._with_global_rows(output, q, k, v, keys_valid, num_blocks, training)
        output = ops.reshape(output, (-1, num_blocks * self.from_block_size, *output.shape[3:]))[:, :length]
        if query_padding is not None:
            output = output * ops.cast(query_padding, "float32")[:, :, None, None]
        return ops.cast(output, query.dtype), None

    def key_blocks(self, num_blocks):
        """Key blocks of each query block and head: (`[nb, N, K]` int32 ids, `[nb, N, K]` bool valid).

        K = 3 + 2·num_global_blocks + num_rand_blocks: the window (previous, own, next block; a
        global or outside one is invalid there, as the globals come next), the global blocks
        (first, then last; a block that is both counts once), then the head's random blocks."""
        g, heads = self.num_global_blocks, self.num_heads
        window = ops.arange(num_blocks, dtype="int32")[:, None] + ops.arange(-1, 2, dtype="int32")[None, :]
        ids, valid = [window], [ops.logical_and(window >= g, window < num_blocks - g)]
        if g:
            first_last, unique = self._global_blocks(num_blocks)
            ids.append(first_last[None, :] + ops.zeros_like(window[:, :1]))
            valid.append(ops.logical_and(unique[None, :], ops.ones_like(window[:, :1], "bool")))
        ids = ops.clip(ops.concatenate(ids, axis=-1), 0, num_blocks - 1)[:, None, :] + ops.zeros((1, heads, 1), "int32")
        valid = ops.logical_and(ops.concatenate(valid, axis=-1)[:, None, :], ops.ones((1, heads, 1), "bool"))
        if self.num_rand_blocks:
            random_ids, random_valid = self.random_blocks(num_blocks)
            ids, valid = ops.concatenate([ids, random_ids], axis=-1), ops.concatenate([valid, random_valid], axis=-1)
        return ids, valid

    def _global_blocks(self, num_blocks):
        """(`[2g]` ids of the first then the last g blocks, clipped to the blocks there are;
        `[2g]` bool: not already among the first ones, when there are fewer than 2g blocks)."""
        g = self.num_global_blocks
        first_last = ops.concatenate([ops.arange(g, dtype="int32"), num_blocks - g + ops.arange(g, dtype="int32")])
        unique = ops.concatenate([first_last[:g] < num_blocks, first_last[g:] >= g])
        return ops.clip(first_last, 0, num_blocks - 1), unique

    def _attend_sparse(self, q, k, v, keys_valid, num_blocks, training):
        """Every query block `[B, nb, wm, N, H]` over its key blocks -> `[B, nb, wm, N, M]`.

        A loop over chunks of CHUNK_TOKENS query tokens, each step rematerialised in the backward
        pass: only one chunk's gathered keys, values and scores exist at a time."""
        heads, wm, wn = self.num_heads, self.from_block_size, self.to_block_size
        ids, valid = self.key_blocks(num_blocks)  # [nb, N, K]
        width = ids.shape[-1] * wn  # keys per query
        chunk = max(1, CHUNK_TOKENS // wm)
        if isinstance(num_blocks, int):
            chunk = min(chunk, num_blocks)
        num_chunks = (num_blocks + chunk - 1) // chunk
        # Which keys each query may see: [B, nb, N * K * wn] (K blocks of wn keys per head).
        mask = ops.take(keys_valid, ops.reshape(ids, (-1,)), axis=1)  # [B, nb*N*K, wn]
        mask = ops.logical_and(ops.reshape(mask, (-1, num_blocks, heads, ids.shape[-1], wn)), valid[None, :, :, :, None])
        # Heads and blocks fold into one axis for the gather, a block's positions and features into
        # another: a [B, nb, N, K, wn, H] tensor would exceed rank 5, which oneDNN's kernels refuse.
        k_by_head, v_by_head = (ops.reshape(ops.transpose(x, (0, 3, 1, 2, 4)), (-1, heads * num_blocks, wn * x.shape[4]))
                                for x in (k, v))
        flat_ids = ids + ops.arange(heads, dtype="int32")[None, :, None] * num_blocks
        steps = [_chunked(q, num_chunks, chunk), _chunked(flat_ids[None], num_chunks, chunk),
                 _chunked(mask, num_chunks, chunk, False)]
        dropping = bool(training) and self.dropout > 0.0
        if dropping:  # drawn before the loop, so that the rematerialised steps drop the same entries
            dropout = keras_mha.probability_dropout(self)
            keep = keras.random.uniform((ops.shape(q)[0], num_blocks, heads, wm, width), seed=dropout.seed_generator)
            steps.append(_chunked(keep >= self.dropout, num_chunks, chunk, False))
        blocks_per_query = ids.shape[-1]

        def step(xs):
            # Rematerialised over its float inputs only: the ids and masks are not differentiable.
            def attend(q_chunk, keys, values):
                return self._sparse_step(chunk, blocks_per_query, q_chunk, xs[1], xs[2], keys, values, *xs[3:])

            return keras.remat(attend)(xs[0], k_by_head, v_by_head)

        out = ops.map(step, tuple(steps))
        out = ops.reshape(ops.transpose(out, (1, 0, 2)), (-1, num_chunks * chunk, wm, heads, v.shape[4]))
        return out[:, :num_blocks]

    def _sparse_step(self, chunk, blocks_per_query, q, flat_ids, mask, k_by_head, v_by_head, keep=None):
        """One step: `chunk` query blocks (flattened by `_chunked`) over their key blocks -> `[B, chunk*wm*N*M]`."""
        heads, wm, wn = self.num_heads, self.from_block_size, self.to_block_size
        width = blocks_per_query * wn
        key_dim, value_dim = k_by_head.shape[-1] // wn, v_by_head.shape[-1] // wn
        q = ops.reshape(q, (-1, chunk, wm, heads, key_dim))
        k, v = (ops.reshape(ops.take(x, ops.reshape(flat_ids, (-1,)), axis=1), (-1, chunk, heads, width, dim))
                for x, dim in ((k_by_head, key_dim), (v_by_head, value_dim)))
        scores = ops.einsum("bicnh,bindh->bincd", q, k)
        probs = masked_softmax(scores, ops.reshape(mask, (-1, chunk, heads, 1, width)), axis=-1)
        if keep is not None:
            probs = probs * ops.cast(ops.reshape(keep, (-1, chunk, heads, wm, width)), "float32") / (1.0 - self.dropout)
        out = ops.einsum("bincd,bindm->bicnm", probs, v)
        return ops.reshape(out, (-1, chunk * wm * heads * value_dim))

    def _with_global_rows(self, output, q, k, v, keys_valid, num_blocks, training):
        """Replace the rows of the global query blocks by their attention over every key."""
        g = self.num_global_blocks
        first_last, _ = self._global_blocks(num_blocks)
        q_global = _merge_blocks(ops.take(q, first_last, axis=1))  # [B, 2g*wm, N, H]
        scores = ops.einsum("btnh,bsnh->bnts", q_global, _merge_blocks(k))
        probs = self._drop(masked_softmax(scores, _merge_blocks(keys_valid)[:, None, None, :], axis=-1), training)
        rows = ops.einsum("bnts,bsnm->btnm", probs, _merge_blocks(v))
        rows = ops.reshape(rows, (-1, 2 * g, self.from_block_size, *rows.shape[2:]))
        block_ids = ops.arange(num_blocks, dtype="int32")
        is_global = ops.logical_or(block_ids < g, block_ids >= num_blocks - g)
        row_of_block = ops.clip(ops.where(block_ids < g, block_ids, block_ids - (num_blocks - 2 * g)), 0, 2 * g - 1)
        return ops.where(is_global[None, :, None, None, None], ops.take(rows, row_of_block, axis=1), output)

    def _drop(self, probs, training):
        if self.dropout > 0.0:
            return ops.cast(keras_mha.probability_dropout(self)(probs, training=training), "float32")
        return probs

    def get_config(self):
        config = super().get_config()
        config.update(
            block_size=self.block_size,
            from_block_size=self.from_block_size,
            to_block_size=self.to_block_size,
            num_rand_blocks=self.num_rand_blocks,
            num_global_blocks=self.num_global_blocks,
            max_rand_mask_length=self.max_rand_mask_length,
            seed=self.seed,
        )
        return config


def _to_blocks(x, num_blocks, block, value=0):
    """`x [B, L, ...]` padded with `value` to `num_blocks * block` and cut: `[B, nb, block, ...]`."""
    widths = [(0, 0)] * len(x.shape)
    widths[1] = (0, num_blocks * block - ops.shape(x)[1])
    x = ops.pad(x, widths, constant_values=value)
    return ops.reshape(x, (-1, num_blocks, block, *x.shape[2:]))


def _chunked(x, num_chunks, chunk, value=0):
    """`x [B, nb, ...]` padded to `num_chunks * chunk` blocks -> `[num_chunks, B, chunk * ...]` (a loop's steps)."""
    widths = [(0, 0)] * len(x.shape)
    widths[1] = (0, num_chunks * chunk - ops.shape(x)[1])
    x = ops.pad(x, widths, constant_values=value)
    return ops.transpose(ops.reshape(x, (-1, num_chunks, chunk * int(np.prod(x.shape[2:])))), (1, 0, 2))


def _merge_blocks(x):
    """`[B, nb, block, ...]` -> `[B, nb*block, ...]`."""
    return ops.reshape(x, (-1, ops.shape(x)[1] * x.shape[2], *x.shape[3:]))


register_attention("bigbird")(BigBirdAttention)
