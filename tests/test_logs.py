"""nlpkit.logs: dependencies' Python warnings and log records are dropped inside a CLI run only."""

import logging
import os
import warnings

from nlpkit import logs


def _emit():
    """A dependency's warning and error record; returns (warnings caught, records handled)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("datasets.packaged_modules.csv.csv")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("a dependency's UserWarning", UserWarning)
            logger.error("Failed to read file 'x.csv'")
    finally:
        logger.removeHandler(handler)
    return caught, records


def test_hidden_inside_the_context_and_restored_after(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with logs.dependency_logs_hidden():
        # catch_warnings(record=True) keeps the filters, so an "ignore" filter still drops the warning
        caught, records = _emit()
        assert (caught, records) == ([], [])
    caught, records = _emit()
    assert [str(w.message) for w in caught] == ["a dependency's UserWarning"]
    assert [r.getMessage() for r in records] == ["Failed to read file 'x.csv'"]


def test_verbose_shows_everything_and_leaves_no_trace(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with logs.dependency_logs_hidden():
        logs.show_dependency_logs()
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
        caught, records = _emit()
        assert (len(caught), len(records)) == (1, 1)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert logging.root.manager.disable == logging.NOTSET
