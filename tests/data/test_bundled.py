"""The bundled real data is found and read as documented (counts from the data README)."""

import csv

from nlpkit.data import bundled


def test_paths_of_installed_data():
    vocab = bundled.bert_vocab_path().read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 30522 == bundled.BERT_VOCAB_SIZE
    assert [vocab[i] for i in (0, 100, 101, 102, 103)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (bundled.minilm_dir() / "config.json").is_file()
    assert bundled.spm_model_path().stat().st_size > 100_000


def test_news_and_reviews():
    news = bundled.news_texts()
    assert len(news) == 3788 and all(text.strip() and "\n" not in text for text in news)
    assert bundled.news_texts(limit=5) == news[:5]
    binary = bundled.reviews()
    labels = [label for _, label in binary]
    assert (labels.count(1), labels.count(0)) == (7403, 5405)
    full = bundled.reviews(binary=False)
    assert [pair for pair in full if pair[1] != 2] == binary
    assert 1000 < sum(label == 2 for _, label in full) <= 1097  # "plot" rows (a few have no text)


def test_write_default_data(tmp_path):
    paths = bundled.write_default_data(tmp_path, news_limit=7, review_limit=9)
    assert paths["news"].read_text(encoding="utf-8").splitlines() == bundled.news_texts(limit=7)
    with open(paths["reviews"], encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(row["text"], int(row["label"])) for row in table] == bundled.reviews()[:9]


def test_multi_class_and_regression_sets_match_the_data_readme():
    from collections import Counter

    bbc = Counter(label for _, label in bundled.bbc_news())
    assert bbc == {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    tweets = Counter(label for _, label in bundled.sentiment_tweets())
    assert tweets == {"negative": 16186, "neutral": 15018, "positive": 6954}
    health = Counter(label for _, label in bundled.health_tweets())
    assert len(health) == 16 and sum(health.values()) == 63326 and health["goodhealth"] == 7864
    ratings = bundled.movie_snippet_ratings()
    assert len(ratings) == 10605 and all(-4 <= rating <= 4 for _, rating in ratings)
    assert all(text and "\n" not in text and "\r" not in text for text, _ in ratings)
