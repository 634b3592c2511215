"""Transformer-XL / XLNet attention masks over memory + current keys, and the segment matrix."""

from keras import ops

from nlpkit.layers.attention.relative import not_self_mask
from nlpkit.layers.masks import causal_mask, combine_masks


def xl_attention_masks(
    query_length,
    memory_length,
    padding_mask=None,
    permutation_mask=None,
    causal=False,
    same_length=False,
    memory_mask=None,
):
    """Content-stream and query-stream masks `[B or 1, T, M+T]` (1 = may attend), or (None, None).

    Keys are the M memory positions followed by the T current ones.
      causal: query i sees keys j <= i + M (itself and what precedes it).
      same_length: with causal, also j >= i, so every query sees exactly M + 1 keys.
      padding_mask `[B, T]`: 1 = real token.
      permutation_mask `[B, T, T]` over the current tokens: 1 = may attend (XLNet's factorisation order).
      memory_mask `[B, M]`: 1 = a memory position that may be attended (0: e.g. memory of another
        document, after a stream moved on to a new one); None = all memory is visible.
    The query stream gets all of these; the content stream additionally always sees its own token.
    """
    key_length = memory_length + query_length
    structure = None
    if causal:
        structure = causal_mask(query_length, key_length, offset=memory_length)
        if same_length:
            rows = ops.expand_dims(ops.arange(query_length), 1)
            structure = ops.logical_and(structure, ops.expand_dims(ops.arange(key_length), 0) >= rows)
        structure = ops.expand_dims(structure, 0)
    if padding_mask is not None:
        padding_mask = _with_memory(ops.cast(padding_mask, "bool"), memory_length, axis=1)
        padding_mask = ops.expand_dims(padding_mask, 1)
    if permutation_mask is not None:
        permutation_mask = _with_memory(ops.cast(permutation_mask, "bool"), memory_length, axis=2)
    if memory_mask is not None:
        # [B, M] -> [B, 1, M+T]: the memory positions as given, the current ones all visible.
        current = ops.ones((ops.shape(memory_mask)[0], query_length), "bool")
        memory_mask = ops.concatenate([ops.cast(memory_mask, "bool"), current], axis=1)
        memory_mask = ops.expand_dims(memory_mask, 1)
    query_mask = combine_masks(structure, padding_mask, permutation_mask, memory_mask)
    if query_mask is None:
        return None, None
    own_position = ops.logical_not(not_self_mask(query_length, key_length))
    return ops.logical_or(query_mask, ops.expand_dims(own_position, 0)), query_mask


def _with_memory(mask, memory_length, axis):
    """Prepend `memory_length` True entries along `axis` (memory positions are always visible)."""
    shape = list(ops.shape(mask))
    shape[axis] = memory_length
    return ops.concatenate([ops.ones(shape, "bool"), mask], axis=axis)


def segment_matrix(segment_ids, memory_length):
    """`[B, T]` segment ids -> `[B, T, M+T]` True where query and key are in different segments.

    Memory positions count as segment 0 (as in XLNet).
    """
    segment_ids = ops.cast(segment_ids, "int32")
    key_ids = _with_memory_ids(segment_ids, memory_length)
    return ops.not_equal(ops.expand_dims(segment_ids, 2), ops.expand_dims(key_ids, 1))


def _with_memory_ids(segment_ids, memory_length):
    zeros = ops.zeros((ops.shape(segment_ids)[0], memory_length), "int32")
    return ops.concatenate([zeros, segment_ids], axis=1)
