"""nlpkit: transformer text models on Keras 3, from raw text to a served model."""

import os as _os

# TensorFlow logs a lot at import time; keep it quiet unless the user asked otherwise.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from nlpkit.errors import NlpkitError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["NlpkitError", "__version__", "load_model"]


def load_model(path):
    """Rebuild the Keras model stored in a model directory (see `nlpkit.encoders`)."""
    from nlpkit.encoders.model_dir import load_model as _load

    return _load(path)
