"""nlpkit: transformer text models on Keras 3, from raw text to a served model."""

from nlpkit.errors import NlpkitError
from nlpkit.logs import quiet_native_logs

# Before anything can import TensorFlow: its native log levels (see nlpkit/logs.py).
quiet_native_logs()

__version__ = "0.1.0"

__all__ = ["NlpkitError", "__version__", "load_model"]


def load_model(path):
    """Rebuild the Keras model stored in a model directory (see `nlpkit.encoders`)."""
    from nlpkit.encoders.model_dir import load_model as _load

    return _load(path)
