import keras
import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.layers.embeddings import OnDeviceEmbedding, PositionEmbedding
from tests.layers.harness import check_layer

rng = np.random.default_rng(0)
VOCAB, WIDTH = 11, 6


def _ids(shape=(2, 5)):
    return rng.integers(0, VOCAB, size=shape).astype("int32")


@pytest.mark.parametrize("use_one_hot", [False, True])
def test_on_device_embedding_contract(tmp_path, use_one_hot):
    check_layer(
        OnDeviceEmbedding,
        dict(vocab_size=VOCAB, embedding_width=WIDTH, use_one_hot=use_one_hot, scale_factor=2.0),
        args=[_ids()],
        tmp_path=tmp_path,
        expected_shapes=[(2, 5, WIDTH)],
        expected_trainable=1,
        expected_non_trainable=0,
    )


@pytest.mark.parametrize("use_one_hot", [False, True])
@pytest.mark.parametrize("scale_factor", [None, 3.0])
def test_on_device_embedding_matches_table_rows(use_one_hot, scale_factor):
    ids = _ids((2, 3, 4))
    layer = OnDeviceEmbedding(VOCAB, WIDTH, use_one_hot=use_one_hot, scale_factor=scale_factor)
    out = np.asarray(layer(ids))
    table = np.asarray(layer.embeddings)
    want = table[ids] * (scale_factor or 1.0)
    assert out.shape == (2, 3, 4, WIDTH)
    np.testing.assert_allclose(out, want, atol=1e-6)


def test_one_hot_and_gather_paths_agree():
    ids = _ids()
    gather = OnDeviceEmbedding(VOCAB, WIDTH)
    one_hot = OnDeviceEmbedding(VOCAB, WIDTH, use_one_hot=True)
    gather(ids)
    one_hot(ids)
    one_hot.embeddings.assign(gather.embeddings)
    np.testing.assert_allclose(np.asarray(one_hot(ids)), np.asarray(gather(ids)), atol=1e-6)


def test_position_embedding_contract(tmp_path):
    x = rng.normal(size=(2, 5, WIDTH)).astype("float32")
    check_layer(
        PositionEmbedding,
        dict(max_length=8),
        args=[x],
        tmp_path=tmp_path,
        expected_shapes=[(2, 5, WIDTH)],
        expected_trainable=1,
        expected_non_trainable=0,
    )


def test_position_embedding_is_the_table_prefix_broadcast_over_batch():
    x = rng.normal(size=(3, 5, WIDTH)).astype("float32")
    layer = PositionEmbedding(max_length=8)
    out = np.asarray(layer(x))
    table = np.asarray(layer.position_embeddings)
    np.testing.assert_allclose(out, np.broadcast_to(table[None, :5], x.shape), atol=0)


def test_position_embedding_other_seq_axis():
    x = rng.normal(size=(2, 3, 4, WIDTH)).astype("float32")
    layer = PositionEmbedding(max_length=4, seq_axis=2)
    out = np.asarray(layer(x))
    table = np.asarray(layer.position_embeddings)
    np.testing.assert_allclose(out, np.broadcast_to(table[None, None, :4], x.shape), atol=0)


def test_position_embedding_dynamic_length_in_a_model():
    layer = PositionEmbedding(max_length=8)
    inputs = keras.Input(shape=(None, WIDTH))
    model = keras.Model(inputs, layer(inputs))
    for length in (3, 8):
        out = np.asarray(model(np.zeros((2, length, WIDTH), "float32")))
        np.testing.assert_allclose(out[1], np.asarray(layer.position_embeddings)[:length], atol=0)


def test_position_embedding_too_long_input_is_a_clear_error():
    layer = PositionEmbedding(max_length=4)
    with pytest.raises(NlpkitError, match="max_length=4"):
        layer(np.zeros((1, 5, WIDTH), "float32"))
