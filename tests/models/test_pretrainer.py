"""The pretraining model: tied head, config round trip, and a loss that ignores padded targets."""

import keras
import numpy as np

from nlpkit.encoders.bert import BertEncoder
from nlpkit.models.pretrainer import MaskedLMPretrainer, masked_lm_loss

rng = np.random.default_rng(0)


def _features(batch=2, length=6, predictions=3, vocab=50):
    ids = rng.integers(5, vocab, (batch, length)).astype("int32")
    return {
        "input_word_ids": ids,
        "input_mask": np.ones_like(ids),
        "input_type_ids": np.zeros_like(ids),
        "masked_lm_positions": np.array([[1, 2, 0], [3, 4, 5]], "int32"),
    }


def _model():
    encoder = BertEncoder(vocab_size=50, hidden_size=8, num_layers=1, num_attention_heads=2, inner_dim=16)
    return MaskedLMPretrainer(encoder)


def test_head_is_tied_and_survives_a_config_round_trip():
    model = _model()
    features = _features()
    logits = np.asarray(model(features))
    assert logits.shape == (2, 3, 50) and logits.dtype == np.float32
    assert model.head.embedding_layer is model.encoder.word_embeddings
    rebuilt = MaskedLMPretrainer.from_config(model.get_config())
    rebuilt(features)
    assert rebuilt.head.embedding_layer is rebuilt.encoder.word_embeddings
    for target, source in zip(rebuilt.weights, model.weights):
        target.assign(source)
    np.testing.assert_allclose(np.asarray(rebuilt(features)), logits, atol=1e-6)


def test_loss_averages_over_real_targets_only():
    logits = rng.normal(size=(2, 3, 7)).astype("float32")
    targets = rng.integers(0, 7, (2, 3))
    weights = np.array([[1, 1, 0], [1, 0, 0]], "float32")
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    per_target = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    want = (per_target * weights).sum() / weights.sum()
    got = float(masked_lm_loss()(targets, logits, sample_weight=weights))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_few_steps_lower_the_loss():
    model = _model()
    features = _features()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=masked_lm_loss())
    targets = np.take_along_axis(features["input_word_ids"], features["masked_lm_positions"], 1)
    weights = np.ones((2, 3), "float32")
    first = model.train_on_batch(features, targets, sample_weight=weights)
    for _ in range(5):
        last = model.train_on_batch(features, targets, sample_weight=weights)
    assert np.isfinite(first) and last < first
