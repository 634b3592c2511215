"""`nlpkit demo`: the main job end to end on bundled real data, each step a real nlpkit command.

vocab → tokenize → pretrain a tiny BERT → fine-tune a classification head and an SNGP head →
evaluate both (metrics table, reliability diagram, OOD AUROC) → export a SavedModel → predict with
it. Each step prints the command it runs, so the same job can be repeated by hand.
"""

import csv
import json
import random
import re
import shlex
import time
from pathlib import Path

import typer
from rich.rule import Rule
from rich.table import Table

from commands.common import console

SENTENCES = [
    "A warm, funny and quietly devastating film.",
    "Two hours of my life I will never get back.",
    "Shares of the carmaker fell after the company cut its forecast.",
]


def _tiny_config(vocab_path, path):
    """A 2-layer, 128-wide BERT sized to the vocabulary that step 1 learned."""
    with open(vocab_path, encoding="utf-8") as handle:
        vocab_size = sum(1 for line in handle if line.strip())
    config = {"kind": "bert", "vocab_size": vocab_size, "hidden_size": 128, "num_layers": 2,
              "num_attention_heads": 2, "inner_dim": 512, "max_sequence_length": 128}
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def _write_data(folder, news_articles, reviews_train, reviews_test, seed):
    """news.txt (an article a line), news_docs.txt (a sentence a line, blank line between articles),
    reviews_train.csv / reviews_test.csv (text,label with label fresh|rotten)."""
    from nlpkit.data.bundled import REVIEW_LABELS, news_texts, reviews

    folder.mkdir(parents=True, exist_ok=True)
    news = news_texts(limit=news_articles)
    (folder / "news.txt").write_text("".join(t + "\n" for t in news), encoding="utf-8")
    sentences = ["\n".join(s for s in re.split(r"(?<=[.!?])\s+", t) if s) for t in news]
    (folder / "news_docs.txt").write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    rows = [(text, REVIEW_LABELS[label]) for text, label in reviews(binary=True)]
    random.Random(seed).shuffle(rows)
    for name, part in (("reviews_train.csv", rows[:reviews_train]),
                       ("reviews_test.csv", rows[reviews_train : reviews_train + reviews_test])):
        with open(folder / name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(part)
    # Out-of-distribution texts for the SNGP head: news sentences, not film reviews.
    ood = [s for t in news[-200:] for s in re.split(r"(?<=[.!?])\s+", t) if len(s.split()) > 5][:reviews_test]
    (folder / "ood.txt").write_text("".join(s + "\n" for s in ood), encoding="utf-8")


def _is_demo_folder(path):
    return (path / "data" / "reviews_train.csv").is_file()


def _run_step(app, number, title, args):
    console.print(Rule(f"[bold]{number}. {title}"))
    console.print(f"[dim]$ nlpkit {' '.join(shlex.quote(str(a)) for a in args)}[/]")
    started = time.perf_counter()
    app([str(a) for a in args], standalone_mode=False)
    return time.perf_counter() - started


def demo(
    output: Path = typer.Option(Path("runs/demo"), "--output", "-o", help="Folder for every artefact."),
    pretrain_steps: int = typer.Option(300, "--pretrain-steps", help="Masked-LM updates of the tiny BERT."),
    news_articles: int = typer.Option(1500, help="News articles for the vocabulary and pretraining."),
    reviews_train: int = typer.Option(4000, help="Review snippets to fine-tune on."),
    reviews_test: int = typer.Option(1000, help="Review snippets to evaluate on."),
    epochs: int = typer.Option(2, "--epochs", help="Fine-tuning epochs per head."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="Start afresh when --output exists."),
):
    """Run the main job end to end on bundled real data (a few minutes on a laptop CPU)."""
    import shutil

    from commands.main import app
    from nlpkit.io import check_at_least, check_replaceable, new_temp_dir, remove_stale_temps, swap_in

    # Checked before step 1, not when the step that uses them comes (minutes later).
    check_at_least(1, **{"--pretrain-steps": pretrain_steps, "--epochs": epochs, "--news-articles": news_articles,
                         "--reviews-train": reviews_train, "--reviews-test": reviews_test})
    check_replaceable(output, force, is_ours=_is_demo_folder, kind="an nlpkit demo folder")
    remove_stale_temps(output)
    # An earlier demo is replaced only once the new one is complete: build beside it, swap at the end.
    final = output
    if final.exists():
        output = new_temp_dir(final)
    data = output / "data"
    started = time.perf_counter()
    console.print(Rule("[bold]0. data: bundled news articles and Rotten Tomatoes reviews"))
    _write_data(data, news_articles, reviews_train, reviews_test, seed)
    vocab = output / "vocab.txt"
    cls, sngp = output / "classifier", output / "sngp"
    finetune = ["--train", data / "reviews_train.csv", "--validation", data / "reviews_test.csv", "--epochs", epochs,
                "--seq-length", 64, "--batch-size", 32, "--learning-rate", 1e-3, "--seed", seed]
    steps = [
        ("vocabulary", ["vocab", data / "news.txt", "--output", vocab, "--size", 8000]),
        ("tokenize", ["tokenize", data / "news.txt", "--vocab", vocab, "--output", output / "tokenized",
                      "--seq-length", 128, "--preview", 2]),
        ("pretrain a tiny BERT", ["pretrain", "--data", data / "news_docs.txt", "--preset", None, "--vocab", vocab,
                                  "--output", output / "pretrain", "--max-steps", pretrain_steps, "--batch-size", 32,
                                  "--seq-length", 64, "--learning-rate", 1e-3, "--checkpoint-every", 100]),
        ("fine-tune a classification head", ["finetune", "--model", output / "pretrain", *finetune, "--output", cls]),
        ("fine-tune an SNGP head", ["finetune", "--model", output / "pretrain", *finetune, "--output", sngp,
                                    "--head", "sngp"]),
        ("evaluate the classification head", ["evaluate", "--model", cls, "--data", data / "reviews_test.csv",
                                              "--json", output / "eval_classifier.json", "--ood", data / "ood.txt"]),
        ("evaluate the SNGP head", ["evaluate", "--model", sngp, "--data", data / "reviews_test.csv",
                                    "--json", output / "eval_sngp.json", "--ood", data / "ood.txt"]),
        ("export a SavedModel", ["export", "--model", sngp, "--output", output / "served"]),
        ("predict with the SavedModel", ["predict", "--saved-model", output / "served", *SENTENCES,
                                         "--output", output / "predictions.jsonl"]),
    ]
    timings = []
    try:
        for number, (title, args) in enumerate(steps, start=1):
            if title.startswith("pretrain"):
                args[args.index(None)] = _tiny_config(vocab, output / "tiny_bert.json")
            timings.append((title, _run_step(app, number, title, args)))
    except BaseException:
        if output != final:  # the earlier demo stays as it was
            shutil.rmtree(output, ignore_errors=True)
        raise
    console.print((output / "predictions.jsonl").read_text(encoding="utf-8"), highlight=False)
    if output != final:
        swap_in(output, final)
    _summary(final, timings, time.perf_counter() - started)


def _summary(output, timings, total):
    artefacts = {
        "vocabulary": output / "vocab.txt",
        "tokenize": output / "tokenized",
        "pretrain a tiny BERT": output / "pretrain",
        "fine-tune a classification head": output / "classifier",
        "fine-tune an SNGP head": output / "sngp",
        "evaluate the classification head": output / "eval_classifier.json",
        "evaluate the SNGP head": output / "eval_sngp.json",
        "export a SavedModel": output / "served",
        "predict with the SavedModel": output / "predictions.jsonl",
    }
    table = Table(title=f"nlpkit demo: done in {total / 60:.1f} min")
    for column in ("step", "seconds", "artefact", "result"):
        table.add_column(column)
    for title, seconds in timings:
        table.add_row(title, f"{seconds:.0f}", str(artefacts[title]), _result(artefacts[title]))
    console.print(table)


def _result(path):
    if path.suffix == ".json" and path.is_file():
        metrics = json.loads(path.read_text(encoding="utf-8"))
        shown = ("accuracy", "macro_f1", "ece", "ood_auroc")
        return ", ".join(f"{k} {metrics[k]:.3f}" for k in shown if k in metrics) + f"; {metrics.get('reliability_diagram', '')}"
    return ""


def register(app):
    app.command()(demo)
