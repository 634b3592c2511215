"""nlpkit: transformer text models on Keras 3, from raw text to a served model."""

from nlpkit._tf import add_fusion_flags
from nlpkit.errors import NlpkitError
from nlpkit.logs import quiet_native_logs
from nlpkit.version import __version__

# Before anything can import TensorFlow: its native log levels (see nlpkit/logs.py).
quiet_native_logs()
add_fusion_flags()

__all__ = ["NlpkitError", "__version__", "load_model"]


def load_model(path):
    """Rebuild the Keras model stored in a model directory (see `nlpkit.models.model_dir`)."""
    from nlpkit.models.model_dir import load_model as _load

    return _load(path)
