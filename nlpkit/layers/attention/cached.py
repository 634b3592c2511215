"""Multi-head attention with a key/value cache, for autoregressive decoding."""

import keras
from keras import ops

from nlpkit.errors import NlpkitError
import nlpkit.layers.attention.keras_mha as keras_mha
from nlpkit.layers.attention.multi_head import MultiHeadAttention
from nlpkit.layers.attention.registry import register_attention
from nlpkit.layers.masks import causal_mask, combine_masks


@keras.saving.register_keras_serializable(package="nlpkit")
class CachedAttention(MultiHeadAttention):
    """Multi-head self-attention that keeps the projected keys and values of earlier steps.

    Without a cache it is exactly `MultiHeadAttention` (same arguments, call and outputs).
    With a cache it decodes: the projected keys/values of the new query positions are written
    into the cache, the queries attend over the whole cache, and the updated cache is returned.
    Decoding is causal: the query at absolute position p attends to cache positions <= p only
    (so unwritten slots of a fixed-size cache are never seen); `attention_mask` narrows this further.

    Two cache layouts:
      * growing (`decode_loop_step=None`): the cache holds the S_prev positions decoded so far
        (S_prev may be 0); the new T positions are appended, S = S_prev + T, the queries sit at
        positions S_prev ... S - 1.
      * fixed size (`decode_loop_step=i`, a Python int or a scalar integer tensor): the cache has
        S = S_max slots and the new T positions are written into slots i ... i + T - 1 with a
        one-hot select, so every shape stays static (XLA/TPU decoding loops).

    Args: those of `MultiHeadAttention` (num_heads, key_dim, value_dim, dropout, use_bias,
    output_shape, attention_axes, kernel/bias initializer, regularizer, constraint). The cache path
    needs the default `attention_axes` (rank-3 inputs) and no `sliding_window`.

    Call: `layer(query, value, key=None, attention_mask=None, cache=None, decode_loop_step=None,
    return_attention_scores=False, training=None)`.
      query `[B, T, D]`, value/key `[B, T, D]` (the new positions), cache
      `{"key": [B, S_prev or S_max, N, H], "value": [B, S_prev or S_max, N, Hv]}`,
      attention_mask `[B, T, S]` over the updated cache (1 = may attend).
    Returns: without a cache, as `MultiHeadAttention`: output `[B, T, D]` (and scores
    `[B, N, T, S]`); with a cache, `(output, cache)` or `(output, scores, cache)`.
    """

    def call(
        self,
        query,
        value,
        key=None,
        attention_mask=None,
        cache=None,
        decode_loop_step=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        if cache is None:
            return super().call(
                query,
                value,
                key=key,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
                use_causal_mask=use_causal_mask,
            )
        self._check_cache_supported(query)
        key = value if key is None else key
        projected_query = self.query_dense(query)
        keys, values, offset = self._update_cache(
            cache, self.key_dense(key), self.value_dense(value), decode_loop_step
        )
        # The queries are the positions offset ... offset + T - 1 of the cache.
        decoding_mask = causal_mask(ops.shape(query)[1], ops.shape(keys)[1], offset=offset)
        mask = combine_masks(ops.expand_dims(decoding_mask, 0), attention_mask)
        output, scores = self._compute_attention(projected_query, keys, values, mask, training, return_attention_scores)
        gate = keras_mha.gate_projection(self)
        if gate is not None:
            output = ops.multiply(output, gate(query))
        output = self.output_dense(output)
        cache = {"key": keys, "value": values}
        return (output, scores, cache) if return_attention_scores else (output, cache)

    def _check_cache_supported(self, query):
        if len(query.shape) != 3 or keras_mha.sliding_window(self) is not None:
            raise NlpkitError(
                f"{self.name}: decoding with a cache needs rank-3 inputs [B, T, D] and no sliding_window",
                hint="call without `cache` for higher-rank attention, or drop sliding_window",
            )

    def _update_cache(self, cache, new_keys, new_values, decode_loop_step):
        """Returns (keys, values, offset): the updated cache and the position of the first query."""
        if decode_loop_step is None:
            offset = ops.shape(cache["key"])[1]
            keys = ops.concatenate([ops.cast(cache["key"], new_keys.dtype), new_keys], axis=1)
            values = ops.concatenate([ops.cast(cache["value"], new_values.dtype), new_values], axis=1)
            return keys, values, offset
        keys = _write_steps(ops.cast(cache["key"], new_keys.dtype), new_keys, decode_loop_step)
        values = _write_steps(ops.cast(cache["value"], new_values.dtype), new_values, decode_loop_step)
        return keys, values, decode_loop_step

    def compute_output_spec(
        self, query, value, key=None, cache=None, decode_loop_step=None, return_attention_scores=False, **kwargs
    ):
        if cache is None:
            return super().compute_output_spec(
                query, value, key=key, return_attention_scores=return_attention_scores, **kwargs
            )
        output = keras.KerasTensor(self.compute_output_shape(query.shape, value.shape), dtype=self.compute_dtype)
        steps = query.shape[1]
        cached = cache["key"].shape[1]
        length = cached if decode_loop_step is not None else (None if None in (cached, steps) else cached + steps)
        batch = query.shape[0]
        new_cache = {
            "key": keras.KerasTensor((batch, length, self.num_heads, self.key_dim), dtype=self.compute_dtype),
            "value": keras.KerasTensor((batch, length, self.num_heads, self.value_dim), dtype=self.compute_dtype),
        }
        if not return_attention_scores:
            return output, new_cache
        scores = keras.KerasTensor((batch, self.num_heads, steps, length), dtype=self.compute_dtype)
        return output, scores, new_cache


def _write_steps(cache, new, start):
    """Writes `new` `[B, T, N, H]` into slots start ... start + T - 1 of `cache` `[B, S_max, N, H]`.

    A one-hot placement matrix `[T, S_max]` moves each step to its slot and a where() keeps the
    other slots, so shapes never depend on `start` (no dynamic slicing inside XLA loops).
    """
    slots = ops.shape(cache)[1]
    targets = ops.arange(ops.shape(new)[1]) + ops.cast(start, "int32")
    placement = ops.one_hot(targets, slots, dtype=new.dtype)  # [T, S_max]
    written = ops.sum(placement, axis=0) > 0  # [S_max]
    scattered = ops.einsum("ts,btnh->bsnh", placement, new)
    return ops.where(ops.reshape(written, (1, -1, 1, 1)), scattered, cache)


register_attention("cached")(CachedAttention)
