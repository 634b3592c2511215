"""Multi-label and regression targets: cell formats, bad labels named with file and row, real data."""

import json

import numpy as np
import pytest

from nlpkit.data.targets import (
    MultiLabelEncoding,
    TargetScaler,
    health_headline_sources,
    read_multilabel_examples,
    read_regression_examples,
)
from nlpkit.errors import NlpkitError
from tests.task_fixtures import write_labelled_csv as _csv




def test_separator_json_list_and_list_cells_give_the_same_label_sets(tmp_path):
    want = [["sport", "politics"], ["tech"], ["tech", "sport"]]
    texts = ["a match and a vote", "a phone", "a fast bike"]
    by_separator = _csv(tmp_path / "sep.csv", [(t, "|".join(l)) for t, l in zip(texts, want)])
    by_json_cell = _csv(tmp_path / "cell.csv", [(t, json.dumps(l)) for t, l in zip(texts, want)])
    lines = tmp_path / "rows.jsonl"
    lines.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(texts, want)), encoding="utf-8")
    assert read_multilabel_examples(by_separator, label_separator="|").labels == want
    assert read_multilabel_examples(by_json_cell).labels == want
    examples = read_multilabel_examples(lines)
    assert examples.labels == want and examples.texts == texts
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": texts, "tags": want}), table)
    assert read_multilabel_examples(table, label_column="tags").labels == want


def test_multi_hot_targets_and_decoding(tmp_path):
    train = read_multilabel_examples(_csv(tmp_path / "t.csv", [("x", "b|a"), ("y", "c"), ("", "a"), ("z", "a")]),
                                     label_separator="|")
    assert train.skipped_empty == 1 and train.rows == [1, 2, 4]
    encoding = MultiLabelEncoding.from_training(train)
    assert encoding.names == ["a", "b", "c"]
    np.testing.assert_array_equal(encoding.encode(train), [[1, 1, 0], [0, 0, 1], [1, 0, 0]])
    encoding.thresholds = [0.5, 0.9, 0.2]
    assert encoding.decode([[0.5, 0.8, 0.25]]) == [["a", "c"]]
    assert MultiLabelEncoding.from_config(json.loads(json.dumps(encoding.get_config()))) == encoding


def test_unknown_label_at_evaluate_time_names_file_and_row(tmp_path):
    encoding = MultiLabelEncoding(["a", "b"])
    test_path = _csv(tmp_path / "test.csv", [("x", "a"), ("y", "b|zebra")])
    with pytest.raises(NlpkitError, match=r"test\.csv: row 2 has label 'zebra', unknown to the model"):
        encoding.encode(read_multilabel_examples(test_path, label_separator="|"))


def test_row_without_labels_is_an_error(tmp_path):
    with pytest.raises(NlpkitError, match=r"e\.csv: row 1 has no label"):
        read_multilabel_examples(_csv(tmp_path / "e.csv", [("x", "|")]), label_separator="|")


def test_non_numeric_regression_label_names_file_row_and_value(tmp_path):
    path = _csv(tmp_path / "r.csv", [("good", "2.5"), ("bad", "very bad"), ("worse", "-3")])
    with pytest.raises(NlpkitError, match=r"r\.csv: row 2 has label 'very bad', not a number"):
        read_regression_examples(path)
    with pytest.raises(NlpkitError, match=r"row 1 has label 'inf'"):
        read_regression_examples(_csv(tmp_path / "n.csv", [("x", "inf")]))


def test_scaler_on_real_ratings_round_trips_to_the_label_units(tmp_path):
    from nlpkit.data.bundled import movie_snippet_ratings

    rows = movie_snippet_ratings()[:300]
    examples = read_regression_examples(_csv(tmp_path / "m.csv", rows))
    ratings = np.array([rating for _, rating in rows])
    np.testing.assert_allclose(examples.labels, ratings)
    scaler = TargetScaler.fit(examples.labels)
    assert (scaler.mean, scaler.std) == pytest.approx((ratings.mean(), ratings.std()))
    standardised = scaler.encode(examples.labels)
    np.testing.assert_allclose(standardised, (ratings - ratings.mean()) / ratings.std(), atol=1e-6)
    np.testing.assert_allclose(scaler.decode(standardised), ratings, atol=1e-5)
    with pytest.raises(NlpkitError, match="labels that vary"):
        TargetScaler.fit([2.0, 2.0])


def test_health_headlines_carry_every_account_that_tweeted_them():
    from nlpkit.data.bundled import health_tweets

    rows = health_headline_sources()
    multi = [(text, accounts) for text, accounts in rows if len(accounts) > 1]
    assert multi and all(len(set(accounts)) == len(accounts) for _, accounts in rows)
    tweets = health_tweets()
    text, accounts = multi[0]
    stem = text.split("http")[0].strip().lower()[-30:]
    assert {account for tweet, account in tweets if stem in tweet.lower()} >= set(accounts)
