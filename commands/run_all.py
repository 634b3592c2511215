"""`nlpkit demo`: the main job end to end on bundled real data, each step a real nlpkit command.

Both halves of nlpkit: from scratch (vocab → tokenize → pretrain a tiny BERT on news), then from
real pretrained weights (convert all-MiniLM-L6-v2 → fine-tune it with the SNGP head on movie
reviews → evaluate: metrics, reliability diagram, OOD AUROC → export a SavedModel → predict with
it, in-domain reviews and an out-of-domain news sentence, whose uncertainty must stand out).
Each step prints the command it runs, so the same job can be repeated by hand.
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

# The closing predictions: reviews (in domain) and a news sentence (out of domain, OOD).
IN_DOMAIN = [
    "A warm, funny and quietly devastating film.",
    "Two hours of my life I will never get back.",
    "The performances are superb, but the script lets them down.",
]
OUT_OF_DOMAIN = ["Shares of the carmaker fell after the company cut its forecast."]
SENTENCES = IN_DOMAIN + OUT_OF_DOMAIN


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


def demo_steps(output, data, *, epochs, seed, pretrain_steps):
    """The demo's commands as (title, nlpkit arguments); the pretraining config (None) is filled in
    once the vocabulary exists. Validation rows come from the training file (`--validation-split`),
    never from reviews_test.csv, which only the evaluation reads."""
    from nlpkit.data.bundled import minilm_dir

    vocab, minilm, sngp = output / "vocab.txt", output / "minilm", output / "sngp"
    return [
        ("vocabulary", ["vocab", data / "news.txt", "--output", vocab, "--size", 8000]),
        ("tokenize", ["tokenize", data / "news.txt", "--vocab", vocab, "--output", output / "tokenized",
                      "--seq-length", 128, "--preview", 2]),
        ("pretrain a tiny BERT", ["pretrain", "--data", data / "news_docs.txt", "--preset", None, "--vocab", vocab,
                                  "--output", output / "pretrain", "--max-steps", pretrain_steps, "--batch-size", 32,
                                  "--seq-length", 64, "--learning-rate", 1e-3, "--checkpoint-every", 100,
                                  "--json", output / "pretrain.json"]),
        ("convert all-MiniLM-L6-v2", ["convert", minilm_dir(), "--output", minilm]),
        ("fine-tune MiniLM with an SNGP head", [
            "finetune", "--model", minilm, "--head", "sngp", "--train", data / "reviews_train.csv",
            "--validation-split", 0.1, "--epochs", epochs, "--seq-length", 64, "--batch-size", 32,
            "--learning-rate", 1e-4, "--seed", seed, "--output", sngp]),
        ("evaluate the SNGP model", ["evaluate", "--model", sngp, "--data", data / "reviews_test.csv",
                                     "--json", output / "eval_sngp.json", "--ood", data / "ood.txt"]),
        ("export a SavedModel", ["export", "--model", sngp, "--output", output / "served"]),
        ("predict with the SavedModel", ["predict", "--saved-model", output / "served", *SENTENCES,
                                         "--output", output / "predictions.jsonl"]),
    ]


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
    steps = demo_steps(output, data, epochs=epochs, seed=seed, pretrain_steps=pretrain_steps)
    vocab = output / "vocab.txt"
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
    _print_uncertainty(output / "predictions.jsonl")
    if output != final:
        swap_in(output, final)
    _summary(final, timings, time.perf_counter() - started)


def _print_uncertainty(predictions_path):
    """The closing predictions side by side: the out-of-domain sentence should be the most uncertain."""
    rows = [json.loads(line) for line in predictions_path.read_text(encoding="utf-8").splitlines()]
    table = Table(title="predictions of the exported SNGP model")
    for column in ("text", "domain", "label", "probability", "uncertainty"):
        table.add_column(column)
    for row in rows:
        domain = "out (news)" if row["text"] in OUT_OF_DOMAIN else "in (review)"
        table.add_row(row["text"], domain, str(row["label"]), f"{max(row['probabilities'].values()):.3f}",
                      f"{row['uncertainty']:.4f}")
    console.print(table)
    in_domain = max(row["uncertainty"] for row in rows if row["text"] not in OUT_OF_DOMAIN)
    out_domain = min(row["uncertainty"] for row in rows if row["text"] in OUT_OF_DOMAIN)
    verdict = "higher than" if out_domain > in_domain else "NOT higher than"
    console.print(f"out-of-domain uncertainty {out_domain:.4f} is {verdict} every in-domain one (max {in_domain:.4f})")


def _summary(output, timings, total):
    artefacts = {
        "vocabulary": output / "vocab.txt",
        "tokenize": output / "tokenized",
        "pretrain a tiny BERT": output / "pretrain.json",
        "convert all-MiniLM-L6-v2": output / "minilm",
        "fine-tune MiniLM with an SNGP head": output / "sngp",
        "evaluate the SNGP model": output / "eval_sngp.json",
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
    """The headline figures of a step's JSON artefact (the pretraining run's, the evaluation's)."""
    if path.suffix == ".json" and path.is_file():
        metrics = json.loads(path.read_text(encoding="utf-8"))
        shown = ("mlm_accuracy", "last_loss", "accuracy", "macro_f1", "ece", "ood_auroc")
        figures = ", ".join(f"{k} {metrics[k]:.3f}" for k in shown if isinstance(metrics.get(k), float))
        diagram = metrics.get("reliability_diagram")
        return figures + (f"; {diagram}" if diagram else "")
    return ""


def register(app):
    app.command()(demo)
