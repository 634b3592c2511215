"""Property checks shared by the attention and block tests."""

import numpy as np


def assert_causal(forward, x, first_changed, axis=1):
    """Perturbing `x` at positions >= `first_changed` along `axis` leaves the outputs of earlier
    positions unchanged and changes the later ones. `forward(x)` returns `[B, T, ...]`."""
    out = np.asarray(forward(x))
    changed = x.copy()
    changed[(slice(None),) * axis + (slice(first_changed, None),)] += 10.0
    out2 = np.asarray(forward(changed))
    np.testing.assert_allclose(out2[:, :first_changed], out[:, :first_changed], atol=1e-5)
    assert not np.allclose(out2[:, first_changed:], out[:, first_changed:])


def attention_inputs(rng, batch, query_length, key_length, width):
    """Random query `[B, T, D]`, value `[B, S, D]` and a bool mask `[B, T, S]` with one fully
    masked query row (row 1 of the first example)."""
    query = rng.normal(size=(batch, query_length, width)).astype("float32")
    value = rng.normal(size=(batch, key_length, width)).astype("float32")
    mask = rng.random((batch, query_length, key_length)) > 0.3
    mask[0, 1] = False
    return query, value, mask
