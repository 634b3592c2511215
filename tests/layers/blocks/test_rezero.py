import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.blocks.rezero import ReZeroTransformer
from tests.layers.blocks.block_reference import encoder_block
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)
B, T, D = 2, 5, 8


def _inputs():
    x = rng.normal(size=(B, T, D)).astype("float32")
    mask = (rng.random((B, T, T)) > 0.3).astype("float32")
    return x, mask


def test_contract(tmp_path):
    x, mask = _inputs()
    check_layer(
        ReZeroTransformer,
        dict(
            num_attention_heads=2,
            inner_dim=16,
            inner_activation="relu",
            use_layer_norm=True,
            share_rezero=False,
            output_dropout=0.1,
        ),
        args=[x],
        kwargs=dict(attention_mask=mask),
        tmp_path=tmp_path,
        expected_shapes=[(B, T, D)],
        expected_trainable=18,  # two alphas, attention 8, feed-forward 4, norms 4
        expected_non_trainable=0,
        # the alphas start at 0, so no gradient reaches the attention (8) and feed-forward (4) weights yet
        expected_without_gradient=12,
    )


def test_starts_as_identity_without_layer_norm():
    x, mask = _inputs()
    layer = ReZeroTransformer(2, 16, "relu")
    np.testing.assert_allclose(np.asarray(layer(x, attention_mask=mask)), x, atol=0)
    assert [w.path.split("/")[-1] for w in layer.weights].count("rezero_alpha") == 1


@pytest.mark.parametrize("use_layer_norm", [False, True])
@pytest.mark.parametrize("share_rezero", [False, True])
def test_matches_numpy_reference(use_layer_norm, share_rezero):
    x, mask = _inputs()
    layer = ReZeroTransformer(2, 16, "relu", use_layer_norm=use_layer_norm, share_rezero=share_rezero)
    layer(x, attention_mask=mask)
    layer.rezero_alpha.assign(0.7)
    alpha_ffn = 0.7
    if not share_rezero:
        layer.rezero_alpha_ffn.assign(-0.3)
        alpha_ffn = -0.3
    out = np.asarray(layer(x, attention_mask=mask))
    want, _ = encoder_block(x, layer, mask=mask, rezero=(0.7, alpha_ffn, use_layer_norm))
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_output_range_equals_first_rows_of_full_output():
    x, mask = _inputs()
    layer = ReZeroTransformer(2, 16, "relu", use_layer_norm=True)
    layer(x, attention_mask=mask)
    layer.rezero_alpha.assign(0.5)
    full = np.asarray(layer(x, attention_mask=mask))
    np.testing.assert_allclose(np.asarray(layer(x, attention_mask=mask, output_range=2)), full[:, :2], atol=1e-6)


def test_pre_norm_is_rejected():
    with pytest.raises(NlpkitError, match="norm_first"):
        ReZeroTransformer(2, 16, "relu", norm_first=True)
