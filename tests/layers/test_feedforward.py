import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.feedforward import GatedFeedforward, PositionwiseFeedforward
from tests.layers.blocks.block_reference import feedforward, layer_norm
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)
B, T, D = 2, 5, 8


def _x():
    return rng.normal(size=(B, T, D)).astype("float32")


def _silu(v):
    return v / (1.0 + np.exp(-v))


def test_positionwise_contract(tmp_path):
    check_layer(
        PositionwiseFeedforward,
        dict(inner_dim=12, inner_activation="relu", use_gate=True, inner_dropout=0.1, output_dim=6),
        args=[_x()],
        tmp_path=tmp_path,
        expected_shapes=[(B, T, 6)],
        expected_trainable=6,  # inner, gate, output: kernel and bias each
        expected_non_trainable=0,
    )


def test_gated_contract(tmp_path):
    check_layer(
        GatedFeedforward,
        dict(inner_dim=12, inner_activation="gelu", dropout=0.1, num_blocks=2, dropout_position="after_residual"),
        args=[_x()],
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        expected_trainable=16,  # 2 blocks x (inner, gate, output kernels and biases, norm)
        expected_non_trainable=0,
    )


@pytest.mark.parametrize(
    "activation,use_gate",
    [("gelu", True), ("relu", True), ("relu", False)],  # GEGLU, ReGLU, plain
)
@pytest.mark.parametrize("apply_output_layer_norm", [True, False])
def test_gated_matches_numpy_reference(activation, use_gate, apply_output_layer_norm):
    x = _x()
    layer = GatedFeedforward(
        12, activation, use_gate=use_gate, num_blocks=2, apply_output_layer_norm=apply_output_layer_norm
    )
    out = np.asarray(layer(x))
    want = np.asarray(x, np.float64)
    for i, block in enumerate(layer.blocks):
        want = want + feedforward(want, block, activation)
        if apply_output_layer_norm:
            want = layer_norm(want, layer.layer_norms[i])
    assert len(layer.blocks) == 2 and (block.gate_dense is not None) == use_gate
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_swiglu_from_explicit_formula():
    x = _x()
    layer = PositionwiseFeedforward(12, "silu", use_gate=True)
    out = np.asarray(layer(x))
    w, b = np.asarray(layer.inner_dense.kernel), np.asarray(layer.inner_dense.bias)
    g, c = np.asarray(layer.gate_dense.kernel), np.asarray(layer.gate_dense.bias)
    v, d = np.asarray(layer.output_dense.kernel), np.asarray(layer.output_dense.bias)
    want = (_silu(x @ w + b) * (x @ g + c)) @ v + d
    np.testing.assert_allclose(out, want, atol=1e-5)


@pytest.mark.parametrize("dropout_position", ["before_residual", "after_residual"])
def test_dropout_position(dropout_position):
    x = _x()
    layer = GatedFeedforward(12, "relu", dropout=0.5, dropout_position=dropout_position, apply_output_layer_norm=False)
    inference = np.asarray(layer(x, training=False))
    trained = np.asarray(layer(x, training=True))
    # Keras dropout scales kept entries by 1 / (1 - rate) = 2.
    if dropout_position == "before_residual":
        dropped, kept = x, x + 2 * (inference - x)  # a dropped update leaves the input
    else:
        dropped, kept = np.zeros_like(x), 2 * inference  # whole output entries are dropped
    is_dropped = np.isclose(trained, dropped, atol=1e-5)
    is_kept = np.isclose(trained, kept, atol=1e-5)
    assert np.all(is_dropped | is_kept)
    assert 0.2 < is_dropped.mean() < 0.8


def test_bad_dropout_position_is_a_clear_error():
    with pytest.raises(NlpkitError, match="dropout_position"):
        GatedFeedforward(12, "relu", dropout_position="middle")
