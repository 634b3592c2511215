"""Softmax attention over every key: the exact reference of the inner-attention family."""

import keras
from keras import ops

from nlpkit.layers.attention.efficient.base import InnerAttention, key_padding, softmax_temperature
from nlpkit.layers.attention.efficient.names import register_inner_attention
from nlpkit.layers.masks import masked_softmax


class SoftmaxAttentionMixin:
    """Temperature and attention dropout of the softmax-based inner attentions."""

    def _init_softmax(self, softmax_temp, attention_dropout):
        self.softmax_temp = softmax_temp
        self.attention_dropout = attention_dropout
        self.dropout_layer = keras.layers.Dropout(attention_dropout, dtype=self.dtype_policy)

    def probabilities(self, scores, mask, training):
        """float32 masked softmax over the last axis of `scores`, then attention dropout."""
        probs = masked_softmax(scores, mask, axis=-1)
        if self.attention_dropout > 0.0:
            probs = ops.cast(self.dropout_layer(probs, training=training), "float32")
        return probs

    def temperature(self, head_size):
        return softmax_temperature(self.softmax_temp, head_size)

    def _softmax_config(self):
        return {"softmax_temp": self.softmax_temp, "attention_dropout": self.attention_dropout}


@register_inner_attention("full")
@keras.saving.register_keras_serializable(package="nlpkit")
class FullAttention(SoftmaxAttentionMixin, InnerAttention):
    """Scaled dot-product softmax attention; O(T·S) memory. Honours every mask.

    Args:
      softmax_temp: scale of the scores before the softmax (default 1/sqrt(H)).
      attention_dropout: dropout rate on the attention probabilities.

    Call: `layer(queries [B,T,N,H], keys [B,S,N,H], values [B,S,N,M], attn_mask=None,
    query_lengths=None, key_lengths=None)` -> `[B,T,N,M]`; a query with no allowed key gets 0.
    """

    def __init__(self, softmax_temp=None, attention_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self._init_softmax(softmax_temp, attention_dropout)

    def attend(self, queries, keys, values, attn_mask, query_lengths, key_lengths, training):
        scores = ops.einsum("btnh,bsnh->bnts", queries, keys) * self.temperature(queries.shape[-1])
        mask = None if attn_mask.all_ones else ops.expand_dims(attn_mask.attention_mask, 1)
        padding = key_padding(key_lengths)
        if padding is not None:
            keys_mask = ops.cast(padding, "bool")[:, None, None, :]
            mask = keys_mask if mask is None else ops.logical_and(mask, keys_mask)
        probs = self.probabilities(scores, mask, training)
        return ops.einsum("bnts,bsnm->btnm", probs, values)

    def get_config(self):
        return {**super().get_config(), **self._softmax_config()}
