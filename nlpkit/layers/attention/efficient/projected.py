"""MultiHeadAttention projections around a core that is not a softmax over a score matrix.

Shared by the registry adapters, KernelAttention and BigBirdAttention: they attend over the
sequence axis only, never materialise attention scores, accept a `[B, S]` key padding mask as
well as `[B, T, S]` masks, and read `use_causal_mask` themselves, so Keras never builds a dense
T x S causal mask for them.
"""

from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.multi_head import MultiHeadAttention


class ProjectedCoreAttention(MultiHeadAttention):
    """Base class; subclasses implement `_compute_attention` and read `self._causal_call`."""

    def __init__(self, num_heads, key_dim, **kwargs):
        if kwargs.get("attention_axes") not in (None, (1,), [1], 1):
            raise NlpkitError(
                f"{type(self).__name__} attends over the sequence axis only, got attention_axes={kwargs['attention_axes']}",
                hint="leave attention_axes unset",
            )
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self._causal_call = False

    def _always_causal(self):
        return False

    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False, training=None, use_causal_mask=False, **kwargs):
        if return_attention_scores:
            raise NlpkitError(
                f"{type(self).__name__} does not materialise attention scores",
                hint="call without return_attention_scores, or use the 'multi_head' attention",
            )
        if attention_mask is not None and len(attention_mask.shape) == 2:
            attention_mask = ops.expand_dims(attention_mask, 1)  # [B, S] key padding -> [B, 1, S]
        self._causal_call = bool(use_causal_mask) or self._always_causal()
        try:
            return super().call(query, value, key=key, attention_mask=attention_mask, training=training, **kwargs)
        finally:
            self._causal_call = False

    def compute_output_spec(self, query, value, key=None, **kwargs):
        kwargs.pop("return_attention_scores", None)
        kwargs.pop("use_causal_mask", None)
        return super().compute_output_spec(query, value, key=key, **kwargs)
