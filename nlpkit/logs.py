"""The one place that decides what nlpkit's dependencies may print.

nlpkit speaks to the user through its own console lines (`commands.common`); TensorFlow, absl,
Keras and `datasets` logging and Python warnings are noise there unless `--verbose`/`--debug` asks
for them. Three layers, each set where it takes effect:

- native (C++) logs: environment variables read when TensorFlow's libraries load, set by
  `quiet_native_logs()`, which `nlpkit/__init__.py` calls so every entry point sets them before
  anything can import TensorFlow. `TF_ENABLE_ONEDNN_OPTS` is left alone: users keep the oneDNN
  kernels, only the line announcing them goes.
- the native lines written before absl logging is initialised (the oneDNN and CUDA banners):
  no level hides those, so `nlpkit._tf.import_tensorflow` captures file descriptor 2 during the
  import and drops them.
- Python-side: `dependency_logs_hidden()`, around a whole CLI run, drops dependencies' warnings and
  logging records (absl, tf.get_logger(), autograph, retracing, `datasets` "Failed to read"), and
  restores both afterwards, so a library user or a test process is not changed by it.
"""

import contextlib
import logging
import os
import warnings

# TF_CPP_MIN_LOG_LEVEL=3: only FATAL native lines (failures still reach the user as Python
# exceptions). A value the user set is kept, so `TF_CPP_MIN_LOG_LEVEL=0 nlpkit ...` shows them all.
QUIET_NATIVE_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}
VERBOSE_NATIVE_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "0"}


def quiet_native_logs():
    """Before TensorFlow loads: native log levels for a quiet terminal (the user's own values win)."""
    for name, value in QUIET_NATIVE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def hide_dependency_logs():
    """Drop Python warnings and dependencies' logging records below CRITICAL.

    nlpkit itself never uses `warnings` or `logging` for what the user must see (it prints lines),
    so everything that arrives through them comes from a dependency.
    """
    warnings.simplefilter("ignore")
    logging.disable(logging.ERROR)


def show_dependency_logs():
    """--verbose / --debug: every native and Python log line and warning (TensorFlow not loaded yet)."""
    os.environ.update(VERBOSE_NATIVE_ENVIRONMENT)
    warnings.resetwarnings()
    warnings.simplefilter("default")
    logging.disable(logging.NOTSET)


@contextlib.contextmanager
def dependency_logs_hidden():
    """Within: `hide_dependency_logs()`; afterwards warning filters, logging and the native log
    environment as they were (a --verbose run inside a test process must not leak into the next)."""
    saved_disable = logging.root.manager.disable
    saved_environment = {name: os.environ.get(name) for name in VERBOSE_NATIVE_ENVIRONMENT}
    with warnings.catch_warnings():
        hide_dependency_logs()
        try:
            yield
        finally:
            logging.disable(saved_disable)
            for name, value in saved_environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
