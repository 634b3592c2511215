"""Full softmax attention for short inputs, another (efficient) attention for long ones."""

import keras

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.efficient.base import InnerAttention
from nlpkit.layers.attention.efficient.full import FullAttention
from nlpkit.layers.attention.efficient.names import make_inner_attention, register_inner_attention


@register_inner_attention("conditional-full", inner="other_attention", inner_kind="inner_attention")
@keras.saving.register_keras_serializable(package="nlpkit")
class ConditionalFullAttention(InnerAttention):
    """FullAttention while S <= length_limit, `other_attention` above it.

    The choice is made on the static key length (known when the layer is built or traced).

    Args:
      other_attention: the inner attention for long inputs: a layer, or a name ('linear', ...).
      length_limit: longest key sequence still given full attention.
      softmax_temp, attention_dropout: of the full attention.

    Call: as every inner attention, `[B,T,N,H], [B,S,N,H], [B,S,N,M]` -> `[B,T,N,M]`.
    """

    def __init__(self, other_attention="linear", length_limit=512, softmax_temp=None, attention_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(other_attention, dict):
            other_attention = keras.saving.deserialize_keras_object(other_attention)
        elif isinstance(other_attention, str):
            other_attention = make_inner_attention(other_attention, dtype=self.dtype_policy)
        self.other_attention = other_attention
        self.length_limit = length_limit
        self.softmax_temp = softmax_temp
        self.attention_dropout = attention_dropout
        self.full_attention = FullAttention(softmax_temp, attention_dropout, dtype=self.dtype_policy)

    @property
    def supports_attention_masks(self):
        return self.other_attention.supports_attention_masks

    @property
    def is_causal(self):
        return self.other_attention.is_causal

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        length_s = keys.shape[1]
        if length_s is None:
            raise NlpkitError("ConditionalFullAttention needs a static key length", hint="give the inputs a fixed length")
        attention = self.other_attention if length_s > self.length_limit else self.full_attention
        return attention(
            queries, keys, values, attn_mask=attn_mask, query_lengths=query_lengths, key_lengths=key_lengths, training=training
        )

    def get_config(self):
        return {
            **super().get_config(),
            "other_attention": keras.saving.serialize_keras_object(self.other_attention),
            "length_limit": self.length_limit,
            "softmax_temp": self.softmax_temp,
            "attention_dropout": self.attention_dropout,
        }
