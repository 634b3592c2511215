"""Kernel attention: softmax(q·k) replaced by a feature-map dot product phi(q)·phi(k), so the
attention costs O(n) time and memory ("Transformers are RNNs", "Rethinking Attention with
Performers", "Random Feature Attention")."""

import math

import keras
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention import keras_mha
from nlpkit.layers.attention.efficient.feature_maps import (
    DETERMINISTIC_FEATURE_MAPS,
    exp_features_without_projection,
    expplus_features,
    favor_features,
    orthogonal_random_features,
)
from nlpkit.layers.attention.efficient.linear import causal_linear_attention, linear_attention
from nlpkit.layers.attention.efficient.masks import factorize_padding
from nlpkit.layers.attention.efficient.projected import ProjectedCoreAttention
from nlpkit.layers.attention.registry import register_attention
from nlpkit.layers.masks import causal_mask, masked_softmax

_RANDOM_FEATURE_TRANSFORMS = ("exp", "expplus")
FEATURE_TRANSFORMS = (*DETERMINISTIC_FEATURE_MAPS, *_RANDOM_FEATURE_TRANSFORMS)


@keras.saving.register_keras_serializable(package="nlpkit")
class KernelAttention(ProjectedCoreAttention):
    """Multi-head attention with a kernel feature map instead of the softmax: linear in length.

    Projections and arguments are MultiHeadAttention's. Queries and keys are scaled by
    sqrt(scale) each, mapped by `feature_transform`, and combined as
    phi(q)·sum_s phi(k_s) v_s / phi(q)·sum_s phi(k_s) (prefix sums by chunks in causal mode).
    Accumulation is float32 under mixed precision. Random features are drawn once from `seed`
    when the layer is built (saved with it), so inference is deterministic; with `redraw`, every
    training call draws fresh ones.

    Args:
      num_heads, key_dim, value_dim, dropout, use_bias, output_shape, kernel_initializer, ...:
        as for MultiHeadAttention (`dropout` applies only to softmax paths; `attention_axes`
        must be None).
      feature_transform: 'elu' (elu+1), 'relu', 'square', 'identity', 'exp' (FAVOR+, positive
        orthogonal random features) or 'expplus' (FAVOR++). 'expplus' is non-causal only: its
        coefficients are statistics of the whole sequence (as in Model Garden).
      num_random_features: m, number of random features of 'exp'/'expplus'. 0 = no random
        projection: 'exp' then maps each head coordinate, phi(x)_h = exp(x_h - |x|²/2), as
        Model Garden does; 'expplus' needs m > 0; the deterministic maps ignore it.
      seed: seed of the random features.
      redraw: draw new random features at every training call (needs random features).
      is_short_seq: use exact softmax attention instead (short inputs).
      begin_kernel: the first `begin_kernel` queries use exact softmax attention, the rest the kernel.
      scale: logit scale (default 1/sqrt(key_dim)).
      scale_by_length: multiply the scale by log(S)/log(512) (entropy-stable across lengths).
      causal_chunk_length: chunk length of the causal prefix sums.
      eps: added to the normaliser of the deterministic maps (random features need none).

    Call: `layer(query [B,T,D], value [B,S,D], key=None, attention_mask=None, training=None,
    use_causal_mask=False)` -> `[B,T,D]`. `attention_mask` is a `[B,S]` key padding mask or a
    `[B,T,S]` padding-style mask (query x key padding; arbitrary masks are refused where their
    values are known). `use_causal_mask=True`: query t sees keys s <= t (needs T = S).
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
        causal_chunk_length=128,
        eps=1e-6,
        **kwargs,
    ):
        if feature_transform not in FEATURE_TRANSFORMS:
            raise NlpkitError(
                f"unknown feature_transform '{feature_transform}'", hint=f"choose one of: {', '.join(FEATURE_TRANSFORMS)}"
            )
        _check_random_features(feature_transform, num_random_features, redraw)
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.feature_transform = feature_transform
        self.num_random_features = num_random_features
        self.seed = seed
        self.redraw = redraw
        self.is_short_seq = is_short_seq
        self.begin_kernel = begin_kernel
        self.scale = scale
        self.scale_by_length = scale_by_length
        self.causal_chunk_length = causal_chunk_length
        self.eps = eps
        self._feature_seeds = keras.random.SeedGenerator(seed)

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        if self._uses_projection():
            self.projection_matrix = self.add_weight(
                name="projection_matrix",
                shape=(self.num_random_features, self.key_dim),
                initializer="zeros",
                dtype="float32",
                trainable=False,
            )
            self.projection_matrix.assign(self._draw_features())

    def _uses_projection(self):
        return self.feature_transform in _RANDOM_FEATURE_TRANSFORMS and self.num_random_features > 0

    def _draw_features(self):
        return orthogonal_random_features(self.num_random_features, self.key_dim, self._feature_seeds)

    def _logit_scale(self, key_length):
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(self.key_dim)
        if self.scale_by_length:
            scale = scale * math.log(key_length) / math.log(512.0)
        return scale

    def _compute_attention(self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs):
        length_t, length_s = query.shape[1], key.shape[1]
        if self._causal_call and length_t != length_s:
            raise NlpkitError(f"causal KernelAttention needs T = S, got T={length_t}, S={length_s}", hint="use it for self-attention")
        if self._causal_call and self.feature_transform == "expplus" and not self.is_short_seq:
            # FAVOR++'s coefficients average |q + k|² over every position: token t's features
            # would depend on later tokens. Coefficients from each prefix would give query and
            # key features of different coefficients, no longer an estimate of exp(q·k).
            raise NlpkitError(
                "KernelAttention(feature_transform='expplus') is not causal: use_causal_mask=True is not supported",
                hint="use feature_transform='exp' (FAVOR+) or 'elu' for causal attention",
            )
        query_padding = key_padding = None
        if attention_mask is not None:
            query_padding, key_padding = factorize_padding(attention_mask)
        q, k, v = (ops.cast(x, "float32") for x in (query, key, value))
        root_scale = math.sqrt(self._logit_scale(length_s))
        q, k = q * root_scale, k * root_scale

        if self.is_short_seq:
            output = self._softmax_attention(q, k, v, query_padding, key_padding, training)
        else:
            output = self._kernel_attention(q, k, v, key_padding, training)
            if self.begin_kernel > 0:
                head = self._softmax_attention(q[:, : self.begin_kernel], k, v, None, key_padding, training)
                output = ops.concatenate([head, output[:, self.begin_kernel :]], axis=1)
        if query_padding is not None:
            output = output * ops.cast(query_padding, "float32")[:, :, None, None]
        return ops.cast(output, query.dtype), None

    def _softmax_attention(self, q, k, v, query_padding, key_padding, training):
        """Exact softmax attention of queries q (the first T' positions) over all keys."""
        scores = ops.einsum("btnh,bsnh->bnts", q, k)
        mask = None
        if self._causal_call:
            mask = causal_mask(q.shape[1], k.shape[1])[None, None]
        if key_padding is not None:
            keys = key_padding[:, None, None, :]
            mask = keys if mask is None else ops.logical_and(mask, keys)
        probs = masked_softmax(scores, mask, axis=-1)
        if self.dropout > 0.0:
            probs = ops.cast(keras_mha.probability_dropout(self)(probs, training=training), "float32")
        return ops.einsum("bnts,bsnm->btnm", probs, v)

    def _kernel_attention(self, q, k, v, key_padding, training):
        q_features, k_features = self._features(q, k, training)
        if key_padding is not None:
            k_features = k_features * ops.cast(key_padding, "float32")[:, :, None, None]
        # Random features are strictly positive at an arbitrary overall scale: no eps for them.
        eps = self.eps if self.feature_transform in DETERMINISTIC_FEATURE_MAPS else 0.0
        if self._causal_call:
            return causal_linear_attention(q_features, k_features, v, eps, self.causal_chunk_length)
        return linear_attention(q_features, k_features, v, eps)

    def _features(self, q, k, training):
        if self.feature_transform in DETERMINISTIC_FEATURE_MAPS:
            phi = DETERMINISTIC_FEATURE_MAPS[self.feature_transform]
            return phi(q), phi(k)
        if not self._uses_projection():
            return exp_features_without_projection(q, k)  # 'expplus' with m = 0 is refused
        projection = self._draw_features() if (self.redraw and training) else self.projection_matrix
        projection = ops.cast(projection, "float32")
        if self.feature_transform == "exp":
            return favor_features(q, k, projection)
        return expplus_features(q, k, projection)

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
            causal_chunk_length=self.causal_chunk_length,
            eps=self.eps,
        )
        return config


def _check_random_features(feature_transform, num_random_features, redraw):
    if not isinstance(num_random_features, int) or num_random_features < 0:
        raise NlpkitError(
            f"KernelAttention: num_random_features={num_random_features!r} is not a feature count",
            hint="use a positive integer, or 0 for no random projection",
        )
    if num_random_features > 0 or feature_transform not in _RANDOM_FEATURE_TRANSFORMS:
        return
    if feature_transform == "expplus":
        # Model Garden silently returns the projected q and k unchanged here (the identity map).
        raise NlpkitError(
            "KernelAttention(feature_transform='expplus') needs random features; got num_random_features=0",
            hint="set num_random_features > 0, or use feature_transform='identity' for the plain dot product",
        )
    if redraw:
        raise NlpkitError(
            "KernelAttention: redraw=True has nothing to redraw with num_random_features=0",
            hint="set num_random_features > 0 or redraw=False",
        )


register_attention("kernel")(KernelAttention)
