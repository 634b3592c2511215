"""Attention masks: one convention for the whole catalogue.

An attention mask is `[B, T, S]` (or broadcastable to it): 1/True = the query at t may attend to
the key at s, 0/False = it may not. A padding mask is `[B, S]` with 1 for real tokens.
Helpers here turn padding and causal structure into that form, and `masked_softmax` turns scores
into probabilities that are exactly 0 at masked keys (a fully masked row is all zeros, never NaN).
"""

import keras
from keras import ops

# Added to masked logits before the softmax. Large enough to vanish after exp in float32,
# small enough not to overflow when added to bfloat16/float16 scores cast to float32.
_MASKED_LOGIT = -1e9


def attention_mask_from_padding(padding_mask, query_length=None):
    """`[B, S]` padding mask -> `[B, T, S]` attention mask (T = S unless `query_length`)."""
    padding_mask = ops.cast(padding_mask, "bool")
    length = ops.shape(padding_mask)[1] if query_length is None else query_length
    mask = ops.expand_dims(padding_mask, axis=1)
    return ops.broadcast_to(mask, (ops.shape(padding_mask)[0], length, ops.shape(padding_mask)[1]))


def causal_mask(query_length, key_length=None, offset=0):
    """`[T, S]` lower-triangular mask: query t attends to keys s <= t + offset.

    With `key_length > query_length` and `offset = key_length - query_length`, the queries are
    the last T positions of the key sequence (decoding with a cache or a memory).
    """
    key_length = query_length if key_length is None else key_length
    rows = ops.expand_dims(ops.arange(query_length), 1) + offset
    cols = ops.expand_dims(ops.arange(key_length), 0)
    return ops.greater_equal(rows, cols)


def combine_masks(*masks):
    """Logical AND of masks (None entries are skipped); None if all are None."""
    result = None
    for mask in masks:
        if mask is None:
            continue
        mask = ops.cast(mask, "bool")
        result = mask if result is None else ops.logical_and(result, mask)
    return result


def masked_softmax(scores, mask=None, axis=-1):
    """Softmax in float32 over `axis` with masked entries exactly 0.

    Args:
      scores: logits of any float dtype.
      mask: broadcastable to `scores`; 1 = keep, 0 = masked. None = no mask.
      axis: int or tuple of ints to normalise over.
    Returns:
      float32 probabilities of the shape of `scores`; rows with no allowed entry are all zeros.
    """
    scores = ops.cast(scores, "float32")
    if mask is not None:
        mask = ops.cast(mask, "bool")
        scores = ops.where(mask, scores, _MASKED_LOGIT)
    probs = _softmax(scores, axis)
    return probs if mask is None else ops.where(mask, probs, 0.0)


# TensorFlow's oneDNN softmax kernel (on by default on x86 CPUs) refuses inputs of higher rank.
_MAX_SOFTMAX_RANK = 5


def _softmax(scores, axis):
    """Softmax over one axis or several; `ops.softmax` with a tuple reshapes with static dims,
    which fails when a dimension (the batch) is unknown while tracing. Scores of rank > 5
    (attention over inner axes of a rank-5 input) take the same exp-minus-logsumexp form."""
    if isinstance(axis, (tuple, list)):
        if len(axis) == 1:
            axis = axis[0]
        else:
            return ops.exp(scores - ops.logsumexp(scores, axis=tuple(axis), keepdims=True))
    if len(scores.shape) > _MAX_SOFTMAX_RANK:
        return ops.exp(scores - ops.logsumexp(scores, axis=axis, keepdims=True))
    return ops.softmax(scores, axis=axis)


@keras.saving.register_keras_serializable(package="nlpkit")
class SelfAttentionMask(keras.layers.Layer):
    """Builds a `[B, T, S]` attention mask from a `[B, S]` padding mask.

    Call: `SelfAttentionMask()(inputs, to_mask)`; `inputs` is `[B, T, ...]` (only its first two
    dimensions are used), `to_mask` is the `[B, S]` padding mask (1 = real token).
    Output: `[B, T, S]` mask in the layer's compute dtype (1.0 = may attend).
    """

    def call(self, inputs, to_mask):
        query_length = ops.shape(inputs)[1]
        mask = attention_mask_from_padding(to_mask, query_length)
        return ops.cast(mask, self.compute_dtype)


@keras.saving.register_keras_serializable(package="nlpkit")
class MaskedSoftmax(keras.layers.Layer):
    """Softmax with an attention mask, in float32, masked entries exactly 0.

    Args:
      mask_expansion_axes: axes at which to insert size-1 dims into the mask so it broadcasts
        against the scores (e.g. `[1]` for `[B, T, S]` masks and `[B, N, T, S]` scores).
      normalization_axes: axes to normalise over; default the last.
    Call: `layer(scores, mask=None)`; scores `[..., S]`, output the same shape, float32.
    """

    def __init__(self, mask_expansion_axes=None, normalization_axes=None, **kwargs):
        super().__init__(**kwargs)
        self.mask_expansion_axes = mask_expansion_axes
        self.normalization_axes = normalization_axes

    def call(self, scores, mask=None):
        if mask is not None:
            for axis in self.mask_expansion_axes or ():
                mask = ops.expand_dims(mask, axis=axis)
        axes = tuple(self.normalization_axes) if self.normalization_axes else -1
        return masked_softmax(scores, mask, axis=axes)

    def get_config(self):
        config = super().get_config()
        config.update(mask_expansion_axes=self.mask_expansion_axes, normalization_axes=self.normalization_axes)
        return config
