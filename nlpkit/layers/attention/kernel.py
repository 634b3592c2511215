"""Kernel attention: softmax(q·k) replaced by a feature-map dot product phi(q)·phi(k), so the
attention costs O(n) time and memory ("Transformers are RNNs", "Rethinking Attention with
Performers", "Random Feature Attention"). Model Garden's `KernelAttention`, with its causal
windowed mode and streaming cache; the feature maps and the windowed algorithm live in
kernel_features.py and kernel_windowed.py."""

import math

import keras
from keras import ops

from nlpkit.errors import NlpkitError, check_choice
import nlpkit.layers.attention.keras_mha as keras_mha
from nlpkit.layers.attention.efficient.feature_maps import DETERMINISTIC_FEATURE_MAPS, orthogonal_random_features
from nlpkit.layers.attention.efficient.linear import causal_linear_attention, linear_attention
from nlpkit.layers.attention.efficient.projected import ProjectedCoreAttention
from nlpkit.layers.attention.kernel_features import (
    FEATURE_TRANSFORMS,
    NON_CAUSAL_TRANSFORMS,
    RANDOM_FEATURE_TRANSFORMS,
    kernel_features,
    masked_kernel_attention,
    split_attention_mask,
)
from nlpkit.layers.attention.kernel_options import check_random_features, check_windowed_options
from nlpkit.layers.attention.kernel_windowed import (
    causal_windowed_attention,
    initial_cache,
    window_weights,
    windowed_stream_step,
)
from nlpkit.layers.attention.registry import register_attention
from nlpkit.layers.masks import causal_mask, combine_masks, masked_softmax

__all__ = ["FEATURE_TRANSFORMS", "KernelAttention"]

# Chunk lengths when causal_chunk_length is None: Model Garden's 1 for the windowed attention
# (where the chunk is part of the attention pattern); 128 for the prefix sums of
# use_causal_mask=True, where it only trades memory for speed (results do not depend on it).
_WINDOWED_CHUNK, _PREFIX_CHUNK = 1, 128


@keras.saving.register_keras_serializable(package="nlpkit")
class KernelAttention(ProjectedCoreAttention):
    """Multi-head attention with a kernel feature map instead of the softmax: linear in length.

    Projections and arguments are MultiHeadAttention's; the arguments and defaults are Model
    Garden's. Queries and keys are scaled by sqrt(scale) each, mapped by `feature_transform`, and
    combined as phi(q)·sum_s w_ts phi(k_s) v_s / phi(q)·sum_s w_ts phi(k_s), where w is 1 for
    every key (default), the causal mask (`use_causal_mask=True`, by chunked prefix sums) or the
    causal window (`use_causal_windowed`). Accumulation is float32 under mixed precision. Random
    features are drawn once from `seed` when the layer is built (saved with it), so inference is
    deterministic; with `redraw`, every training call draws fresh ones.

    Args:
      num_heads, key_dim, value_dim, dropout, use_bias, output_shape, kernel_initializer, ...:
        as for MultiHeadAttention (`dropout` applies only to softmax paths; `attention_axes`
        must be None).
      feature_transform: 'elu' (elu+1), 'relu', 'square', 'identity', 'exp' (FAVOR+, positive
        orthogonal random features), 'expmod' (exp(w·x - sqrt(H)/2), Model Garden's) or
        'expplus' (FAVOR++). 'expplus' is non-causal only: its coefficients are statistics of
        the whole sequence (as in Model Garden).
      num_random_features: m, number of random features of 'exp'/'expmod'/'expplus'. 0 = no
        random projection: 'exp' then maps each head coordinate, phi(x)_h = exp(x_h - |x|²/2),
        and 'expmod' phi(x)_h = exp(x_h - sqrt(H)/2), as Model Garden does; 'expplus' needs
        m > 0; the deterministic maps ignore it.
      seed: seed of the random features.
      redraw: draw new random features at every training call (needs random features).
      is_short_seq: use exact softmax attention instead (short inputs).
      begin_kernel: the first `begin_kernel` queries use exact softmax attention over the keys
        the attention pattern allows (weighted by the window decay), with their own output
        projection `attention_output_softmax` (as Model Garden); the rest use the kernel.
      scale: logit scale (default 1/sqrt(key_dim)).
      scale_by_length: multiply the scale by log(S)/log(512) (entropy-stable across lengths).
      use_causal_windowed: Model Garden's causal windowed attention (needs T = S): chunks of
        `causal_chunk_length` tokens; a query sees every key of its own chunk (both ways) and of
        the `causal_window_length - 1` chunks before it, a chunk d back weighted by
        `causal_window_decay ** d`. Exclusive with `is_short_seq`; not with 'expplus'.
      causal_chunk_length: tokens per chunk. None: 1 (Model Garden's default) with
        `use_causal_windowed`; 128 for the prefix sums of `use_causal_mask=True` (any value
        gives the same results there).
      causal_window_length: chunks in the window (the own chunk included).
      causal_window_decay: None (no decay) or a factor in [0, 1].
      causal_padding: None (the length must be a multiple of the chunk length), 'left' (chunks
        counted from the end of the sequence) or 'right' (from its start). Model Garden's
        'left' returns the outputs of the padding and drops the last tokens; here the outputs
        are those of the real tokens.
      eps: added to the normaliser of the deterministic maps (positive random features need none).

    Call: `layer(query [B,T,D], value [B,S,D], key=None, attention_mask=None, cache=None,
    training=None, use_causal_mask=False)` -> `[B,T,D]`, or `(output, cache)` with a cache.
      attention_mask (1 = may attend): a `[B, S]` or `[B, 1, S]` key padding mask takes the
        O(n) path. A `[B, T, S]` mask is honoured exactly: when its values are known (eager) and
        it is query padding x key padding it is factorised into that O(n) path; any other mask
        (or a traced one) is applied to the dense kernel scores, costing `[B, N, T, S]` memory
        like the mask itself. Pass padding as `[B, S]` to stay O(n) in compiled calls.
      use_causal_mask: query t sees keys s <= t (needs T = S). With `use_causal_windowed` it
        needs `causal_chunk_length=1` (a longer chunk attends within the chunk both ways).
      cache: streaming inference with `use_causal_windowed` (Model Garden's): `{"kv": [B, N,
        value_dim, F], "k_sum": [B, N, F]}` (F = m, or key_dim without random features; zeros
        from `initial_cache(batch_size)` before the first call). The T new tokens form the
        newest chunk (both ways among themselves) and attend to every earlier chunk, decayed by
        `causal_window_decay` per call; the updated cache (float32) is returned, since Keras
        calls copy their arguments. Fed one chunk per call this equals the batch call when
        `causal_window_length` covers every chunk (Model Garden's cache never drops a chunk).
        Needs `causal_window_decay` (1.0 = no decay), training off, no `begin_kernel`, no
        'expplus', no `scale_by_length`, and at most key padding of the new tokens as mask.
        Under mixed precision Keras casts the cache passed in to the compute dtype.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        feature_transform="exp",
        num_random_features=256,
        seed=0,
        redraw=False,
        is_short_seq=False,
        begin_kernel=0,
        scale=None,
        scale_by_length=False,
        use_causal_windowed=False,
        causal_chunk_length=None,
        causal_window_length=3,
        causal_window_decay=None,
        causal_padding=None,
        eps=1e-6,
        **kwargs,
    ):
        check_choice("KernelAttention", "feature_transform", feature_transform, FEATURE_TRANSFORMS)
        check_random_features(feature_transform, num_random_features, redraw)
        check_windowed_options(
            feature_transform, is_short_seq, use_causal_windowed, causal_chunk_length, causal_window_length,
            causal_window_decay, causal_padding,
        )
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.feature_transform = feature_transform
        self.num_random_features = num_random_features
        self.seed = seed
        self.redraw = redraw
        self.is_short_seq = is_short_seq
        self.begin_kernel = begin_kernel
        self.scale = scale
        self.scale_by_length = scale_by_length
        self.use_causal_windowed = use_causal_windowed
        self.causal_chunk_length = causal_chunk_length
        self.causal_window_length = causal_window_length
        self.causal_window_decay = causal_window_decay
        self.causal_padding = causal_padding
        self.eps = eps
        self._feature_seeds = keras.random.SeedGenerator(seed)
        self._call_state = {}  # per call: the cache in and out, the softmax head's context

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        if self.begin_kernel > 0:
            self._output_dense_softmax = keras_mha.make_output_dense(self, query_shape, "attention_output_softmax")
            self._output_dense_softmax.build((*query_shape[:-1], self.num_heads, self.value_dim))
        if self._uses_projection():
            self.projection_matrix = self.add_weight(
                name="projection_matrix",
                shape=(self.num_random_features, self.key_dim),
                initializer="zeros",
                dtype="float32",
                trainable=False,
            )
            self.projection_matrix.assign(self._draw_features())

    @property
    def output_dense_softmax(self):
        """The output projection of the begin_kernel softmax queries (None without begin_kernel)."""
        return getattr(self, "_output_dense_softmax", None)

    def initial_cache(self, batch_size):
        """The empty streaming cache (zeros) for `batch_size` sequences."""
        features = self.num_random_features if self._uses_projection() else self.key_dim
        return initial_cache(batch_size, self.num_heads, self.value_dim, features)

    def call(self, query, value, key=None, attention_mask=None, cache=None, training=None, use_causal_mask=False, **kwargs):
        if cache is not None:
            self._check_cache_call(training)
        self._call_state = {"cache": cache}
        try:
            output = super().call(
                query, value, key=key, attention_mask=attention_mask, training=training, use_causal_mask=use_causal_mask, **kwargs
            )
            output = self._with_softmax_head(output, query)
            return output if cache is None else (output, self._call_state["cache"])
        finally:
            self._call_state = {}

    def compute_output_spec(self, query, value, key=None, cache=None, **kwargs):
        output = super().compute_output_spec(query, value, key=key, **kwargs)
        if cache is None:
            return output
        return output, {name: keras.KerasTensor(tensor.shape, dtype="float32") for name, tensor in cache.items()}

    def _with_softmax_head(self, output, query):
        """The first begin_kernel outputs through the softmax part's own output projection."""
        head = self._call_state.get("head")
        if head is None:
            return output
        gate = keras_mha.gate_projection(self)
        if gate is not None:
            head = ops.multiply(head, gate(query[:, : head.shape[1]]))
        return ops.concatenate([self._output_dense_softmax(head), output[:, head.shape[1] :]], axis=1)

    def _uses_projection(self):
        return self.feature_transform in RANDOM_FEATURE_TRANSFORMS and self.num_random_features > 0

    def _draw_features(self):
        return orthogonal_random_features(self.num_random_features, self.key_dim, self._feature_seeds)

    def _logit_scale(self, key_length):
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(self.key_dim)
        if self.scale_by_length:
            scale = scale * math.log(key_length) / math.log(512.0)
        return scale

    def _compute_attention(self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs):
        cache = self._call_state.get("cache")
        query_padding, key_padding, dense = split_attention_mask(attention_mask)
        self._check_call(query.shape[1], key.shape[1], cache, dense)
        q, k, v = (ops.cast(x, "float32") for x in (query, key, value))
        root_scale = math.sqrt(self._logit_scale(key.shape[1]))
        q, k = q * root_scale, k * root_scale

        if self.is_short_seq:
            weights = self._position_weights(q.shape[1], k.shape[1])
            output = self._softmax_attention(q, k, v, weights, key_padding, dense, training)
        else:
            output = self._kernel_attention(q, k, v, key_padding, dense, cache, training)
        if self.begin_kernel > 0:  # with is_short_seq too: the head has its own projection (Model Garden)
            head = min(self.begin_kernel, q.shape[1])
            weights = self._position_weights(head, k.shape[1])
            head_dense = None if dense is None else dense[:, :head]
            context = self._softmax_attention(q[:, :head], k, v, weights, key_padding, head_dense, training)
            self._call_state["head"] = ops.cast(_zero_padded(context, query_padding, head), query.dtype)
        return ops.cast(_zero_padded(output, query_padding), query.dtype), None

    def _check_call(self, length_t, length_s, cache, dense):
        patterned = self._causal_call or self.use_causal_windowed
        if patterned and length_t != length_s:
            raise NlpkitError(
                f"causal KernelAttention needs T = S, got T={length_t}, S={length_s}", hint="use it for self-attention"
            )
        if self._causal_call and self.feature_transform in NON_CAUSAL_TRANSFORMS and not self.is_short_seq:
            # FAVOR++'s coefficients average |q + k|² over every position: token t's features
            # would depend on later tokens. Coefficients from each prefix would give query and
            # key features of different coefficients, no longer an estimate of exp(q·k).
            raise NlpkitError(
                "KernelAttention(feature_transform='expplus') is not causal: use_causal_mask=True is not supported",
                hint="use feature_transform='exp' (FAVOR+) or 'elu' for causal attention",
            )
        chunk = length_t if cache is not None else self._chunk(windowed=True)
        if self._causal_call and self.use_causal_windowed and chunk > 1:
            raise NlpkitError(
                f"KernelAttention(use_causal_windowed=True) attends both ways within a chunk of {chunk} tokens, "
                "so use_causal_mask=True cannot hold",
                hint="set causal_chunk_length=1 (and feed one token per cached call), or call without use_causal_mask",
            )
        if cache is not None and dense is not None:
            raise NlpkitError(
                "KernelAttention with a cache takes only a key padding mask [B, S] of the new tokens",
                hint="pass attention_mask as [B, S], or None",
            )

    def _check_cache_call(self, training):
        problems = [
            (training, "a cache is for inference", "call with training=False"),
            (not self.use_causal_windowed, "the cache needs use_causal_windowed=True", "construct with use_causal_windowed=True"),
            (self.begin_kernel, "the cache does not support begin_kernel", "set begin_kernel=0"),
            (self.causal_window_decay is None, "the cache needs causal_window_decay", "set it in [0, 1] (1.0 = no decay)"),
            (self.feature_transform in NON_CAUSAL_TRANSFORMS, f"'{self.feature_transform}' is not causal",
             "use feature_transform='exp' or 'elu'"),
            (self.scale_by_length, "scale_by_length needs the whole sequence", "set scale_by_length=False"),
        ]
        for failed, problem, hint in problems:
            if failed:
                raise NlpkitError(f"KernelAttention(cache=...): {problem}", hint=hint)

    def _chunk(self, windowed):
        if self.causal_chunk_length is not None:
            return self.causal_chunk_length
        return _WINDOWED_CHUNK if windowed else _PREFIX_CHUNK

    def _position_weights(self, num_queries, length):
        """`[T', S]` float32 weights of the attention pattern for the first T' queries; None = all keys."""
        if self.use_causal_windowed:
            return window_weights(num_queries, length, self._chunk(windowed=True), self.causal_window_length,
                                  self.causal_window_decay, self.causal_padding)
        if self._causal_call:
            return ops.cast(causal_mask(num_queries, length), "float32")
        return None

    def _softmax_attention(self, q, k, v, weights, key_padding, dense, training):
        """Exact softmax attention of queries q (the first T' positions) over all keys; the
        positional weights w enter as softmax(q·k + log w)."""
        scores = ops.einsum("btnh,bsnh->bnts", q, k)
        mask = combine_masks(
            None if weights is None else (weights > 0)[None, None],
            None if key_padding is None else key_padding[:, None, None, :],
            None if dense is None else dense[:, None],
        )
        if weights is not None:
            scores = scores + ops.log(ops.where(weights > 0, weights, 1.0))
        probs = masked_softmax(scores, mask, axis=-1)
        if self.dropout > 0.0:
            probs = ops.cast(keras_mha.probability_dropout(self)(probs, training=training), "float32")
        return ops.einsum("bnts,bsnm->btnm", probs, v)

    def _kernel_attention(self, q, k, v, key_padding, dense, cache, training):
        q_features, k_features = self._features(q, k, training)
        if key_padding is not None:
            k_features = k_features * ops.cast(key_padding, "float32")[:, :, None, None]
        # Random features are strictly positive at an arbitrary overall scale: no eps for them.
        eps = self.eps if self.feature_transform in DETERMINISTIC_FEATURE_MAPS else 0.0
        if cache is not None:
            output, self._call_state["cache"] = windowed_stream_step(
                q_features, k_features, v, cache, self.causal_window_decay, eps
            )
            return output
        if dense is not None:
            weights = ops.cast(dense, "float32")
            pattern = self._position_weights(q.shape[1], k.shape[1])
            return masked_kernel_attention(q_features, k_features, v, weights if pattern is None else weights * pattern, eps)
        if self.use_causal_windowed:
            return causal_windowed_attention(q_features, k_features, v, self._chunk(windowed=True), self.causal_window_length,
                                             self.causal_window_decay, self.causal_padding, eps)
        if self._causal_call:
            return causal_linear_attention(q_features, k_features, v, eps, self._chunk(windowed=False))
        return linear_attention(q_features, k_features, v, eps)

    def _features(self, q, k, training):
        projection = None
        if self._uses_projection():
            projection = self._draw_features() if (self.redraw and training) else self.projection_matrix
            projection = ops.cast(projection, "float32")
        return kernel_features(self.feature_transform, q, k, projection)

    def get_config(self):
        config = super().get_config()
        config.update(
            feature_transform=self.feature_transform,
            num_random_features=self.num_random_features,
            seed=self.seed,
            redraw=self.redraw,
            is_short_seq=self.is_short_seq,
            begin_kernel=self.begin_kernel,
            scale=self.scale,
            scale_by_length=self.scale_by_length,
            use_causal_windowed=self.use_causal_windowed,
            causal_chunk_length=self.causal_chunk_length,
            causal_window_length=self.causal_window_length,
            causal_window_decay=self.causal_window_decay,
            causal_padding=self.causal_padding,
            eps=self.eps,
        )
        return config


def _zero_padded(output, query_padding, num_queries=None):
    """Outputs of padded queries set to 0 (query_padding `[B, T]`, of which the first num_queries)."""
    if query_padding is None:
        return output
    return output * ops.cast(query_padding[:, :num_queries], "float32")[:, :, None, None]


register_attention("kernel")(KernelAttention)
