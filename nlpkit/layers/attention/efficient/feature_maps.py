"""Feature maps phi for kernelised (linear) attention: softmax(q·k) is replaced by phi(q)·phi(k).

Deterministic maps (elu+1, relu, square, identity) and the positive random-feature maps of
Performer: FAVOR+ (`exp`) and its lower-variance generalisation FAVOR++ (`expplus`), both drawn
from orthogonal Gaussian features. Shared by LinearAttention and KernelAttention.
"""

import math

import keras
from keras import ops

from nlpkit.errors import NlpkitError


def elu_feature_map(x):
    """elu(x) + 1: positive, the default of "Transformers are RNNs"."""
    return ops.elu(x) + 1.0


def relu_feature_map(x):
    return ops.relu(x)


def square_feature_map(x):
    return ops.square(x)


def identity_feature_map(x):
    return x


DETERMINISTIC_FEATURE_MAPS = {
    "elu": elu_feature_map,
    "relu": relu_feature_map,
    "square": square_feature_map,
    "identity": identity_feature_map,
}


def deterministic_feature_map(name):
    if name not in DETERMINISTIC_FEATURE_MAPS:
        raise NlpkitError(
            f"unknown feature map '{name}'", hint=f"choose one of: {', '.join(DETERMINISTIC_FEATURE_MAPS)}"
        )
    return DETERMINISTIC_FEATURE_MAPS[name]


def orthogonal_random_features(num_features, dim, seed_generator):
    """`[num_features, dim]` Gaussian rows, orthogonal within each block of `dim` rows.

    Each block is the Q of a Gaussian matrix's QR decomposition; rows are rescaled by the norms
    of independent Gaussian vectors so every row is marginally N(0, I) (unbiased estimator)
    while rows of a block stay orthogonal (lower variance, Performer's ORF).
    """
    blocks = -(-num_features // dim)
    gaussian = keras.random.normal((blocks, dim, dim), seed=seed_generator)
    q, r = ops.linalg.qr(gaussian)
    # QR routines fix the signs of diag(R), which biases the directions of Q's columns; undoing
    # that sign makes Q Haar-distributed (every row direction uniform).
    q = q * ops.sign(ops.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    rows = ops.reshape(ops.transpose(q, (0, 2, 1)), (blocks * dim, dim))[:num_features]
    norms = ops.norm(keras.random.normal((num_features, dim), seed=seed_generator), axis=-1)
    return rows * norms[:, None]


def _positive_feature_pair(q_exponent, k_exponent, offset):
    """(phi(q), phi(k)) = (exp(q_exponent + offset - s_q), exp(k_exponent - offset)) / sqrt(m).

    `offset` `[..., m]` is, per feature, an upper bound of the key exponent over every possible
    key, so key features never overflow and do not depend on any other token (causal-safe);
    it is added back to the query side, whose own max s_q (a per-query constant) cancels in
    the attention ratio.
    """
    q_exponent = q_exponent + offset
    q_exponent = q_exponent - ops.stop_gradient(ops.max(q_exponent, axis=-1, keepdims=True))
    root = math.sqrt(q_exponent.shape[-1])
    return ops.exp(q_exponent) / root, ops.exp(k_exponent - offset) / root


def favor_features(queries, keys, projection):
    """FAVOR+: E[phi(q)·phi(k)] = exp(q·k) with phi(x) = exp(w·x - |x|²/2) / sqrt(m).

    queries/keys `[B, L, N, H]` already scaled so that q·k is the softmax logit; projection
    `[m, H]`. The key exponent w·k - |k|²/2 is at most |w|²/2. Returns (phi(q), phi(k)).
    """

    def exponent(x):
        return ops.einsum("blnh,mh->blnm", x, projection) - 0.5 * ops.sum(ops.square(x), axis=-1, keepdims=True)

    offset = 0.5 * ops.sum(ops.square(projection), axis=-1)
    return _positive_feature_pair(exponent(queries), exponent(keys), offset)


def exp_features_without_projection(queries, keys):
    """FAVOR+'s exponential map on the H coordinates themselves, without random projection.

    phi(x)_h = exp(x_h - |x|²/2), what Model Garden's 'exp' computes with num_random_features=0
    (a deterministic kernel, not an estimate of exp(q·k)). The key exponent is at most 1/2
    (x_h - x_h²/2 <= 1/2). Returns (phi(queries), phi(keys)).
    """

    def exponent(x):
        return x - 0.5 * ops.sum(ops.square(x), axis=-1, keepdims=True)

    return _positive_feature_pair(exponent(queries), exponent(keys), 0.5)


def expplus_features(queries, keys, projection):
    """FAVOR++ (generalised exponential features): phi(x) = D exp(A|w|² + B w·x - |x|²/2) / sqrt(m).

    Unbiased for any A < 1/8 (B = sqrt(1 - 4A), D = (1 - 4A)^(H/4)); A is set per batch and
    head from the mean over the whole sequence of |q + k|² / H (rho) - every token shapes every
    feature, so this map cannot be causal - with the variance-minimising
    A = (1 - 2 rho - sqrt((2 rho + 1)² + 8 rho)) / 16. The key exponent is at most
    (A + B²/2)|w|² + log D. Returns (phi(queries), phi(keys)).
    """
    dim = queries.shape[-1]
    mean_q = ops.mean(queries, axis=1, keepdims=True)
    mean_k = ops.mean(keys, axis=1, keepdims=True)
    sq_q = ops.mean(ops.sum(ops.square(queries), axis=-1, keepdims=True), axis=1, keepdims=True)
    sq_k = ops.mean(ops.sum(ops.square(keys), axis=-1, keepdims=True), axis=1, keepdims=True)
    rho = ops.stop_gradient((sq_q + sq_k + 2.0 * ops.sum(mean_q * mean_k, axis=-1, keepdims=True)) / dim)
    a = (1.0 - 2.0 * rho - ops.sqrt(ops.square(2.0 * rho + 1.0) + 8.0 * rho)) / 16.0
    b = ops.sqrt(1.0 - 4.0 * a)
    log_d = 0.25 * dim * ops.log(1.0 - 4.0 * a)
    omega_sq = ops.sum(ops.square(projection), axis=-1)

    def exponent(x):
        projected = ops.einsum("blnh,mh->blnm", x, projection)
        return a * omega_sq + b * projected - 0.5 * ops.sum(ops.square(x), axis=-1, keepdims=True) + log_d

    offset = (a + 0.5 * ops.square(b)) * omega_sq + log_d
    return _positive_feature_pair(exponent(queries), exponent(keys), offset)
