"""Hugging Face dataset names (`NAME[/CONFIG][:SPLIT]`) read from a real offline `datasets` cache.

The cache is written by a `datasets` builder (the same Arrow files + dataset_info.json layout a hub download
leaves) from bundled real rows, in a temporary HF_DATASETS_CACHE; `datasets.load_dataset` itself reading it
offline is the independent check that the layout is the genuine one.
"""

import json

import pytest

from nlpkit.data.bundled import REVIEW_LABELS, reviews, sentiment_tweets
from nlpkit.data.labelled import read_examples
from nlpkit.data.sources import read_texts
from nlpkit.errors import NlpkitError
from tests.cli import run_cli
from tests.hub_cache import use_cache, write_cached_dataset

REVIEWS = reviews(binary=True)[:60]
TWEETS = sentiment_tweets()[:30]
SPLITS = {"sst2": {"train": REVIEWS[:40], "validation": REVIEWS[40:]},  # no test split
          "tweets": {"train": TWEETS[:20], "test": TWEETS[20:]}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """`glue` with configs sst2 (ClassLabel labels rotten/fresh) and tweets (string labels)."""
    folder = tmp_path_factory.mktemp("hf_datasets")
    labels = {"sst2": lambda datasets: datasets.ClassLabel(names=list(REVIEW_LABELS[:2])),
              "tweets": lambda datasets: datasets.Value("string")}
    write_cached_dataset(folder, "glue", SPLITS, labels, text_column="sentence")
    # A namespaced dataset with a single config: OWNER/NAME resolves to OWNER___NAME in the cache.
    write_cached_dataset(folder, "glue", {"sst2": SPLITS["sst2"]}, labels, text_column="sentence",
                         repo_id="nyu-mll/glue", hash="1" * 16)
    return folder


@pytest.fixture(autouse=True)
def offline_cache(cache, monkeypatch):
    return use_cache(monkeypatch, cache)


def _pairs(examples):
    return list(zip(examples.texts, examples.labels))


def _named(rows):
    return [(text, REVIEW_LABELS[label]) for text, label in rows]


def test_name_config_split_reads_exactly_those_rows_with_classlabel_names():
    import datasets

    got = read_examples("glue/sst2:validation", text_column="sentence")
    assert _pairs(got) == _named(SPLITS["sst2"]["validation"])  # "rotten"/"fresh", not 0/1
    assert got.rows == list(range(1, 21))
    reference = datasets.load_dataset("glue", "sst2", split="validation")  # datasets' own offline reading
    names = reference.features["label"].names
    assert _pairs(got) == [(row["sentence"], names[row["label"]]) for row in reference]
    tweets = read_examples("glue/tweets:train", text_column="sentence")
    assert _pairs(tweets) == SPLITS["tweets"]["train"]  # string labels kept as they are
    assert _pairs(read_examples("nyu-mll/glue/sst2:train", text_column="sentence")) == _named(REVIEWS[:40])
    assert _pairs(read_examples("nyu-mll/glue:train", text_column="sentence")) == _named(REVIEWS[:40])
    assert read_texts("glue/tweets:test", text_column="sentence", option="--input") == [t for t, _ in TWEETS[20:]]


@pytest.mark.parametrize("option, split", [("--train", "train"), ("--validation", "validation")])
def test_default_split_is_the_options_own(option, split):
    got = read_examples("glue/sst2", text_column="sentence", option=option)
    assert _pairs(got) == _named(SPLITS["sst2"][split])


def test_missing_split_lists_the_cached_ones_and_no_option_needs_a_split():
    with pytest.raises(NlpkitError, match=r"^--test glue/sst2: .*no split 'test' \(splits: train, validation\)"):
        read_examples("glue/sst2", text_column="sentence", option="--test")
    with pytest.raises(NlpkitError, match=r"^--data glue/sst2: .*no split 'test'"):
        read_examples("glue/sst2", text_column="sentence", option="--data")
    with pytest.raises(NlpkitError, match=r"no split 'dev' \(splits: train, validation\)"):
        read_examples("glue/sst2:dev", text_column="sentence", option="--validation")
    with pytest.raises(NlpkitError, match=r"^input glue/sst2: name the split .*\(splits: train, validation\)"):
        read_examples("glue/sst2", text_column="sentence")  # never a silent train split


def test_configs_must_be_cached_and_chosen():
    with pytest.raises(NlpkitError, match=r"several configs of 'glue': sst2, tweets"):
        read_examples("glue:train", text_column="sentence", option="--train")
    with pytest.raises(NlpkitError, match=r"config 'cola' of 'glue' is not in the datasets cache \(cached: sst2, tweets\)"):
        read_examples("glue/cola", text_column="sentence", option="--train")


def test_uncached_name_is_one_line_naming_the_option(tmp_path):
    with pytest.raises(NlpkitError) as error:
        read_examples("imdb:test", option="--validation")
    message = str(error.value)
    assert message.startswith("--validation imdb:test: cannot load dataset 'imdb'") and "cache" in message
    assert "\n" not in message


def test_local_file_named_like_a_hub_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "glue" / "sst2").mkdir(parents=True)
    (tmp_path / "glue" / "sst2" / "rows.csv").write_text("sentence,label\nlocal row,x\nother row,y\n",
                                                         encoding="utf-8")
    got = read_examples("glue/sst2", text_column="sentence", option="--validation")
    assert _pairs(got) == [("local row", "x"), ("other row", "y")]
    (tmp_path / "imdb:test").write_text("a local line\n", encoding="utf-8")
    assert read_examples("imdb:test", label_column=None, option="--data").texts == ["a local line"]
    for windows_path in ("C:\\data\\train", "C:/data/train", "d:train.csv", "d:train"):
        with pytest.raises(NlpkitError, match=r"^--train .* does not exist"):
            read_examples(windows_path, option="--train")


# CLI: needs the lead's edit of nlpkit/training/finetune.py (`read_examples(config.train, option="--train")`,
# `read_examples(config.validation, option="--validation")`); before it, finetune passes no option and this
# test fails with "name the split" (the safe refusal: a hub name never reads train by default).
def test_cli_finetune_reads_hub_splits_by_option_and_names_the_option_on_error(tmp_path, capsys):
    from tests.classifier_fixtures import TINY_ENCODER

    (tmp_path / "encoder.json").write_text(json.dumps(TINY_ENCODER), encoding="utf-8")
    common = ["finetune", "--preset", tmp_path / "encoder.json", "--text-column", "sentence", "--epochs", 1,
              "--seq-length", 16, "--batch-size", 16]
    code, out, err = run_cli(capsys, *common, "--train", "glue/sst2", "--validation", "imdb",
                             "--output", tmp_path / "bad")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "--validation imdb: cannot load dataset 'imdb'" in err
    assert not (tmp_path / "bad").exists()

    code, out, err = run_cli(capsys, *common, "--train", "glue/sst2", "--validation", "glue/sst2",
                             "--output", tmp_path / "model")
    assert code == 0, err
    assert "labels: fresh, rotten; train 40, validation 20" in " ".join(out.split())
