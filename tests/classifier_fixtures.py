"""Small real classification data and a tiny fine-tuned classifier, shared by the training and export tests.

The easy task: news articles (label "news") against Rotten Tomatoes snippets ("review"), both from
the bundled data packages. A one-layer BERT learns it in a couple of epochs.
"""

import csv
import json

TINY_ENCODER = {
    "kind": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_layers": 1,
    "num_attention_heads": 2,
    "inner_dim": 64,
    "max_sequence_length": 64,
    "output_dropout": 0.0,
    "attention_dropout": 0.0,
}


def write_easy_task(folder, per_class=120, test_per_class=40):
    """train.csv / test.csv with columns text,label; ood.txt with texts of neither kind."""
    from nlpkit.data.bundled import news_texts, reviews

    news = [" ".join(t.split()[:40]) for t in news_texts(limit=per_class + test_per_class)]
    snippets = [text for text, _ in reviews(binary=True)[: per_class + test_per_class]]
    folder.mkdir(parents=True, exist_ok=True)

    def write(path, rows):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)

    train = [(t, "news") for t in news[:per_class]] + [(t, "review") for t in snippets[:per_class]]
    test = [(t, "news") for t in news[per_class:]] + [(t, "review") for t in snippets[per_class:]]
    write(folder / "train.csv", train)
    write(folder / "test.csv", test)
    (folder / "ood.txt").write_text("".join(f"{'0123456789 ' * (i % 5 + 1)}{i}\n" for i in range(40)), encoding="utf-8")
    (folder / "encoder.json").write_text(json.dumps(TINY_ENCODER), encoding="utf-8")
    return folder


def finetune_args(folder, output, head="classification", epochs=3):
    return ["finetune", "--preset", folder / "encoder.json", "--train", folder / "train.csv",
            "--validation", folder / "test.csv", "--output", output, "--head", head, "--epochs", epochs,
            "--seq-length", 32, "--batch-size", 16, "--learning-rate", 3e-3, "--patience", 5]
