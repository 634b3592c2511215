"""Plain-NumPy references for transformer blocks, fed with a block's own weights."""

import math

import numpy as np

from tests.layers import reference

_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))),
    "linear": lambda x: x,
}


def layer_norm(x, norm_layer):
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm_layer.epsilon) * np.asarray(norm_layer.gamma) + np.asarray(norm_layer.beta)


def feedforward(x, ffn, activation):
    """`out(act(x W) [* x G])` with the weights of a `PositionwiseFeedforward`."""
    inner = reference.dense(x, np.asarray(ffn.inner_dense.kernel), np.asarray(ffn.inner_dense.bias))
    hidden = _ACTIVATIONS[activation](inner)
    if ffn.gate_dense is not None:
        hidden = hidden * reference.dense(x, np.asarray(ffn.gate_dense.kernel), np.asarray(ffn.gate_dense.bias))
    return reference.dense(hidden, np.asarray(ffn.output_dense.kernel), np.asarray(ffn.output_dense.bias))


def _activation_name(block):
    return block.get_config()["inner_activation"]


def encoder_block(x, block, mask=None, key_value=None, query_residual=True, rezero=None):
    """Reference `TransformerEncoderBlock` (or ReZero, with `rezero=(alpha_attention, alpha_ffn, use_norm)`).

    Returns (output, attention probabilities `[B, N, T, S]`).
    """
    x = np.asarray(x, np.float64)
    attention_in = layer_norm(x, block.attention_layer_norm) if block.norm_first else x
    memory = attention_in if key_value is None else key_value
    attention_out, probs = reference.multi_head_attention(
        attention_in, memory, *reference.mha_weights(block.attention), mask=mask
    )
    if rezero is not None:
        return _rezero_rest(x, attention_out, block, rezero), probs
    if query_residual:
        attention_out = x + attention_out
    if not block.norm_first:
        attention_out = layer_norm(attention_out, block.attention_layer_norm)
    ffn_in = layer_norm(attention_out, block.output_layer_norm) if block.norm_first else attention_out
    out = attention_out + feedforward(ffn_in, block.feedforward, _activation_name(block))
    if not block.norm_first:
        out = layer_norm(out, block.output_layer_norm)
    return out, probs


def _rezero_rest(x, attention_out, block, rezero):
    alpha_attention, alpha_ffn, use_norm = rezero
    hidden = x + alpha_attention * attention_out
    if use_norm:
        hidden = layer_norm(hidden, block.attention_layer_norm)
    out = hidden + alpha_ffn * feedforward(hidden, block.feedforward, _activation_name(block))
    return layer_norm(out, block.output_layer_norm) if use_norm else out
