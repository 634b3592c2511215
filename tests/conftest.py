"""Test-wide settings: quiet TensorFlow, offline Hugging Face, float32 policy restored per test, and
the `tf_only` tests left out under any other Keras backend."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


def pytest_collection_modifyitems(config, items):
    """Under a backend other than TensorFlow, deselect the `tf_only` tests: they check TensorFlow-specific
    behaviour or backend-independent Python (argument parsing, configs), which the TensorFlow runs of the
    same tests already cover; the JAX run repeats only what can differ between backends."""
    if keras.backend.backend() == "tensorflow":
        return
    left_out = [item for item in items if item.get_closest_marker("tf_only")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("tf_only")]
