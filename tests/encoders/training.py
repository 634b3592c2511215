"""One training step on an encoder, the same way for every encoder test (TF or JAX backend)."""

import keras
import numpy as np


def train_one_step(encoder, inputs):
    """Fit one SGD step on a loss over both outputs; the loss is finite and every weight moves."""
    symbolic = {name: keras.Input(value.shape[1:], dtype="int32", name=name) for name, value in inputs.items()}
    outputs = encoder(symbolic)
    loss = keras.ops.mean(keras.ops.square(keras.ops.cast(outputs["sequence_output"], "float32") - 1.0), axis=(1, 2))
    loss = loss + keras.ops.mean(keras.ops.square(keras.ops.cast(outputs["pooled_output"], "float32") - 0.5), axis=1)
    model = keras.Model(symbolic, loss)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=lambda y_true, y_pred: y_pred)
    before = [np.array(w) for w in encoder.trainable_weights]
    batch = len(next(iter(inputs.values())))
    history = model.fit(inputs, np.zeros((batch,), "float32"), batch_size=batch, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unchanged = [w.path for b, w in zip(before, encoder.trainable_weights) if np.array_equal(b, np.array(w))]
    # Only rows of the embedding tables that the batch never looks up may stay as they were.
    assert all("embedding" in path for path in unchanged), unchanged
