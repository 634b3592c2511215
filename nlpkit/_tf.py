"""Import TensorFlow (and tensorflow-text) without the native log lines it prints at import.

TensorFlow 2.21 writes absl/glog lines straight to file descriptor 2 while its shared libraries
load ("WARNING: All log messages before absl::InitializeLog() ...", "port.cc ... oneDNN custom
operations are on" (once per TensorFlow library that loads, so twice), "cudart_stub ... Could not
find cuda drivers", "cpu_feature_guard ..."). TF_CPP_MIN_LOG_LEVEL, GLOG_minloglevel and
ABSL_MIN_LOG_LEVEL do not silence them, because absl logging is not initialised yet. So the import
runs with fd 2 pointed at a temporary file; afterwards the known noise is dropped and anything
else is written back to stderr, so real warnings are not lost. Every TensorFlow-using module of
nlpkit imports TensorFlow through `import_tensorflow()`.
"""

import os
import sys
import tempfile

from nlpkit.logs import quiet_native_logs

# Substrings of the native lines that TensorFlow prints on every CPU-only import.
_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",  # the kernels stay on (TF_ENABLE_ONEDNN_OPTS is the user's)
    "cudart_stub.cc",
    "cpu_feature_guard.cc",
    "To enable the following instructions",
    "Unable to register cu",
    "computation placer already registered",
    "TF-TRT Warning",
)


def _quiet_wanted():
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") in ("2", "3")


# XLA auto-clustering, where the training runtime turns it on (`precision.elementwise_fusion`), may
# take CPU ops and only the elementwise ones: the matrix products stay on oneDNN's kernels. TensorFlow
# reads these flags once, before its first function runs, so `nlpkit/__init__.py` sets them before
# anything can import it (a user's own TF_XLA_FLAGS for these two are kept).
_FUSION_FLAGS = ("--tf_xla_cpu_global_jit", "--tf_xla_ops_to_cluster=FUSIBLE")


def add_fusion_flags():
    """Add `_FUSION_FLAGS` to TF_XLA_FLAGS (they cluster nothing until auto-clustering is turned on)."""
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "tf_xla_ops_to_cluster" not in flags and "tf_xla_cpu_global_jit" not in flags:
        os.environ["TF_XLA_FLAGS"] = " ".join([flags, *_FUSION_FLAGS]).strip()


def import_tensorflow():
    """Return the `tensorflow` module (tensorflow_text loaded too), with the import noise filtered."""
    if "tensorflow" in sys.modules and "tensorflow_text" in sys.modules:
        return sys.modules["tensorflow"]
    quiet_native_logs()
    if not _quiet_wanted():
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the text ops

        return tf
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            import tensorflow_text  # noqa: F401 - registers the text ops
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            captured.seek(0)
            _replay(captured.read().decode("utf-8", "replace"))
    return tf


def _replay(text):
    """Write back to stderr the captured lines that are not known import noise."""
    kept = [line for line in text.splitlines() if line.strip() and not any(n in line for n in _NOISE)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
