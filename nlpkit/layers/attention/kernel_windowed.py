"""Causal windowed kernel attention (Model Garden's `causal_windowed_performer_attention`).

The sequence is cut into chunks of `chunk_length` tokens. A query attends, both ways, to every
key of its own chunk and to the keys of the `window_length - 1` chunks before it; a chunk
`d` chunks back is weighted by `decay ** d` (1 without decay). With `padding='left'` the chunk
boundaries are counted from the end of the sequence (the last chunk is full), with 'right' from
its start; with None the length must be a multiple of `chunk_length`.

Everything works on feature tensors phi(q), phi(k) `[B, L, N, F]` and values `[B, L, N, M]`: per
chunk sums of phi(k) v^T and phi(k), summed over the window of chunks by a cumulative sum or a
depthwise convolution over the chunk axis - no loop over tokens or chunks.
"""

from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient.base import pad_axis
from nlpkit.layers.attention.efficient.linear import safe_divide

CAUSAL_PADDINGS = (None, "left", "right")


def chunk_padding(length, chunk_length, padding):
    """(tokens added before, tokens added after) so that the length is a multiple of chunk_length."""
    extra = -length % chunk_length
    if extra and padding is None:
        raise NlpkitError(
            f"KernelAttention(use_causal_windowed=True): sequence length {length} is not a multiple "
            f"of causal_chunk_length={chunk_length}",
            hint="set causal_padding='left' or 'right', or pad the sequence to a multiple of the chunk length",
        )
    return (extra, 0) if padding == "left" else (0, extra)


def window_weights(num_queries, length, chunk_length, window_length, decay, padding):
    """`[num_queries, length]` float32: the weight of key s for query t (0 = not attended).

    The queries are the first `num_queries` positions of the sequence (the softmax prefix of
    `begin_kernel`, or all of them); the dense form of what `causal_windowed_attention` computes.
    """
    before, _ = chunk_padding(length, chunk_length, padding)
    query_chunk = (ops.arange(num_queries) + before) // chunk_length
    key_chunk = (ops.arange(length) + before) // chunk_length
    distance = ops.cast(query_chunk[:, None] - key_chunk[None, :], "float32")
    inside = ops.logical_and(distance >= 0, distance < window_length)
    weight = 1.0 if decay is None else ops.power(float(decay), ops.maximum(distance, 0.0))
    return ops.where(inside, weight, 0.0)


def _window_sum(chunks, window_length, decay):
    """`[B, J, ...]` per-chunk sums -> out_j = sum_{d < window_length} decay^d chunks_{j-d}."""
    if decay is None:
        total = ops.cumsum(chunks, axis=1)
        return total - pad_axis(total, 1, window_length, 0)[:, : chunks.shape[1]]
    # A weighted window: a depthwise convolution over the chunk axis, one channel per entry.
    flat = ops.reshape(chunks, (-1, chunks.shape[1], _size(chunks.shape[2:])))
    weights = ops.power(float(decay), ops.arange(window_length - 1, -1, -1, dtype="float32"))
    kernel = ops.broadcast_to(ops.reshape(weights, (window_length, 1, 1)), (window_length, flat.shape[-1], 1))
    padded = pad_axis(flat, 1, window_length - 1, 0)
    summed = ops.depthwise_conv(padded, kernel, strides=1, padding="valid", data_format="channels_last")
    return ops.reshape(summed, (-1, *chunks.shape[1:]))


def _size(shape):
    size = 1
    for dim in shape:
        size *= dim
    return size


def causal_windowed_attention(q_features, k_features, values, chunk_length, window_length, decay, padding, eps):
    """phi(q) `[B, L, N, F]`, phi(k) `[B, L, N, F]` (padded keys zeroed), values `[B, L, N, M]`
    -> `[B, L, N, M]`, attending as the module docstring says."""
    length = q_features.shape[1]
    before, after = chunk_padding(length, chunk_length, padding)
    chunks = (length + before + after) // chunk_length
    q, k, v = (
        ops.reshape(pad_axis(x, 1, before, after), (-1, chunks, chunk_length, *x.shape[2:]))
        for x in (q_features, k_features, values)
    )
    kv = _window_sum(ops.einsum("bjcnf,bjcnm->bjnfm", k, v), window_length, decay)
    k_sum = _window_sum(ops.sum(k, axis=2), window_length, decay)
    numerator = ops.einsum("bjcnf,bjnfm->bjcnm", q, kv)
    normaliser = ops.einsum("bjcnf,bjnf->bjcn", q, k_sum)
    output = safe_divide(numerator, normaliser + eps)
    output = ops.reshape(output, (-1, chunks * chunk_length, *output.shape[3:]))
    return output[:, before : before + length]


def initial_cache(batch_size, num_heads, value_dim, num_features):
    """Zeros in Model Garden's layout: kv `[B, N, M, F]`, k_sum `[B, N, F]` (float32)."""
    return {
        "kv": ops.zeros((batch_size, num_heads, value_dim, num_features), "float32"),
        "k_sum": ops.zeros((batch_size, num_heads, num_features), "float32"),
    }


def windowed_stream_step(q_features, k_features, values, cache, decay, eps):
    """One streaming call: the T new tokens form the newest chunk; the cache holds the decayed
    sums of all earlier chunks (Model Garden's streaming, which never drops a chunk).

    Returns (output `[B, T, N, M]`, the updated cache).
    """
    kv = decay * ops.cast(cache["kv"], "float32") + ops.einsum("btnf,btnm->bnmf", k_features, values)
    k_sum = decay * ops.cast(cache["k_sum"], "float32") + ops.sum(k_features, axis=1)
    numerator = ops.einsum("btnf,bnmf->btnm", q_features, kv)
    normaliser = ops.einsum("btnf,bnf->btn", q_features, k_sum)
    return safe_divide(numerator, normaliser + eps), {"kv": kv, "k_sum": k_sum}
