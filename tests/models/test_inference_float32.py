"""The inference wrapper computes in float32 whatever precision a model was trained in."""

import keras
import numpy as np

from nlpkit.encoders.bert import BertEncoder
from nlpkit.models.inference import in_float32
from nlpkit.models.tasks import MultiLabelClassifier


def _model():
    encoder = BertEncoder(vocab_size=64, hidden_size=32, num_layers=1, num_attention_heads=2, inner_dim=64,
                          max_sequence_length=16)
    return MultiLabelClassifier(encoder, num_labels=3, thresholds=[0.2, 0.5, 0.7])


def _inputs():
    ids = np.random.default_rng(0).integers(1, 64, (4, 16)).astype("int32")
    return {"input_word_ids": ids, "input_mask": np.ones_like(ids), "input_type_ids": np.zeros_like(ids)}


def test_a_mixed_bfloat16_model_becomes_a_float32_twin_with_the_same_weights():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        trained = _model()
        trained(_inputs())
    finally:
        keras.config.set_dtype_policy("float32")
    reference = _model()  # built in float32 independently, given the same weights
    reference(_inputs())
    reference.set_weights(trained.get_weights())
    twin = in_float32(trained)
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in twin._flatten_layers())
    assert twin.thresholds == [0.2, 0.5, 0.7]
    got, want = twin.predict_outputs(_inputs()), reference.predict_outputs(_inputs())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got["probabilities"]),
                               keras.ops.convert_to_numpy(want["probabilities"]), atol=1e-6)
    bf16 = keras.ops.convert_to_numpy(trained.predict_outputs(_inputs())["logits"])
    assert np.abs(bf16 - keras.ops.convert_to_numpy(got["logits"])).max() > 1e-4  # bf16 really differed


def test_a_float32_model_is_returned_as_is():
    model = _model()
    model(_inputs())
    assert in_float32(model) is model
