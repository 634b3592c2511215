"""SNGP vs classification head on real sets: accuracy, macro-F1, ECE and OOD AUROC of the raw model.

Fine-tunes all-MiniLM-L6-v2 (converted once with the `nlpkit convert` code path) with
`nlpkit.training.finetune` on each set, once per head, then scores the held-out test rows and an
out-of-domain set with `TextClassifier.predict_outputs` (SNGP: mean-field probabilities), with the
post-hoc calibration `finetune` fitted on the validation split (`ece`) and without it (`ece_raw`).
Prints a table and one JSON line; `--diagnose` adds the logit scale (top logit minus the mean of
the others), the SNGP posterior variance and mean-field divisor.

    python -m benchmarks.sngp_calibration --sets bbc,tweets,health,reviews --train 1500 --epochs 3
"""

import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np

SETS = ("bbc", "tweets", "health", "reviews")
HEADS = ("classification", "sngp")


def _load(name):
    from nlpkit.data import bundled

    if name == "bbc":
        return bundled.bbc_news()
    if name == "tweets":
        return bundled.sentiment_tweets()
    if name == "health":
        return bundled.health_tweets()
    return [(text, str(label)) for text, label in bundled.reviews(binary=True)]


def _ood_texts(name, limit):
    """News sentences against tweets/reviews; tweets against BBC news (news sentences are in-domain there)."""
    from nlpkit.data import bundled

    if name == "bbc":
        return [text for text, _ in bundled.sentiment_tweets()][:limit]
    sentences = []
    for article in bundled.news_texts(limit=limit):
        sentences.extend(s for s in re.split(r"(?<=[.!?])\s+", article) if len(s.split()) >= 5)
    return sentences[:limit]


def _split(pairs, n_train, n_val, n_test, seed):
    rows = list(pairs)
    random.Random(seed).shuffle(rows)
    return rows[:n_train], rows[n_train : n_train + n_val], rows[n_train + n_val : n_train + n_val + n_test]


def _write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as handle:
        for text, label in rows:
            handle.write(json.dumps({"text": text, "label": str(label)}) + "\n")


def expected_calibration_error(probabilities, labels, bins=15):
    """Equal-width bins on the top probability: sum over bins of |accuracy - confidence| x share."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def macro_f1(predicted, labels, num_classes):
    scores = []
    for k in range(num_classes):
        tp = np.sum((predicted == k) & (labels == k))
        fp = np.sum((predicted == k) & (labels != k))
        fn = np.sum((predicted != k) & (labels == k))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def auroc(in_scores, out_scores):
    """P(an OOD example scores higher than an in-domain one), ties counted half (Mann-Whitney)."""
    scores = np.concatenate([in_scores, out_scores])
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="mergesort")
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def _predict(model, packer, texts, batch_size=64):
    """The model's (calibrated) outputs, plus `raw_probabilities` of the uncalibrated ones."""
    import keras

    from nlpkit.models.classifier import UNCALIBRATED

    outputs = {}
    packed = packer.pack(texts)
    for start in range(0, len(texts), batch_size):
        batch = {name: keras.ops.convert_to_tensor(ids[start : start + batch_size]) for name, ids in packed.items()}
        head_outputs = model.head_outputs(batch)
        values = {**model.outputs_from_head(head_outputs),
                  "raw_probabilities": model.outputs_from_head(head_outputs, UNCALIBRATED)["probabilities"]}
        for name, value in values.items():
            outputs.setdefault(name, []).append(keras.ops.convert_to_numpy(value))
    return {name: np.concatenate(values) for name, values in outputs.items()}


def _diagnose(model, packer, texts, mean_field_factor):
    """Logit spread and the mean-field divisor on `texts` (raw, not mean-field, logits for SNGP)."""
    import keras

    packed = {name: keras.ops.convert_to_tensor(ids[:256]) for name, ids in packer.pack(texts[:256]).items()}
    sequence = model.encoder(packed, training=False)["sequence_output"]
    head = model.head_layer
    if model.head == "sngp":
        logits, covariance = head(sequence, input_mask=packed["input_mask"], training=False, return_covariance=True)
        variance = np.diag(keras.ops.convert_to_numpy(covariance))
    else:
        logits, variance = head(sequence, input_mask=packed["input_mask"], training=False), np.zeros(1)
    logits = keras.ops.convert_to_numpy(logits)
    top = logits.max(axis=1)
    rest = (logits.sum(axis=1) - top) / (logits.shape[1] - 1)
    return {"logit_gap": float(np.mean(top - rest)), "logit_std": float(logits.std()),
            "variance": float(np.mean(variance)),
            "mean_field_divisor": float(np.mean(np.sqrt(1 + mean_field_factor * variance)))}


def run_one(set_name, head, args, work, minilm):
    from nlpkit.data.labelled import TextPacker
    from nlpkit.models.model_dir import load_model
    from nlpkit.training.finetune import FinetuneConfig, finetune

    pairs = _load(set_name)
    train, val, test = _split(pairs, args.train, args.validation, args.test, args.seed)
    names = sorted({label for _, label in pairs})
    folder = work / set_name
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in (("train", train), ("validation", val)):
        _write_jsonl(folder / f"{part}.jsonl", rows)
    output = folder / (head if args.pooling is None else f"{head}_{args.pooling}")
    started = time.perf_counter()
    finetune(FinetuneConfig(train=str(folder / "train.jsonl"), validation=str(folder / "validation.jsonl"),
                            output=str(output), model=str(minilm), head=head, epochs=args.epochs,
                            batch_size=args.batch_size, seq_length=args.seq_length,
                            learning_rate=args.learning_rate, seed=args.seed, pooling=args.pooling, overwrite=True))
    seconds = time.perf_counter() - started
    model = load_model(output)
    trained = json.loads((output / "config.json").read_text())["head"]["labels"]
    packer = TextPacker(str(output / "vocab.txt"), args.seq_length)
    texts = [text for text, _ in test]
    labels = np.array([trained.index(label) for _, label in test])
    inside = _predict(model, packer, texts)
    outside = _predict(model, packer, _ood_texts(set_name, args.ood))
    probabilities = inside["probabilities"]
    row = {
        "set": set_name, "classes": len(names), "head": head,
        "accuracy": float(np.mean(probabilities.argmax(1) == labels)),
        "macro_f1": macro_f1(probabilities.argmax(1), labels, len(trained)),
        "ece_raw": expected_calibration_error(inside["raw_probabilities"], labels),
        "ece": expected_calibration_error(probabilities, labels),
        "mean_max_prob": float(probabilities.max(1).mean()),
        "ood_auroc": auroc(1 - probabilities.max(1), 1 - outside["probabilities"].max(1)),
        "train_s": round(seconds, 1),
    }
    if "variance" in inside:  # SNGP: `nlpkit evaluate --ood` reports both scores
        row["ood_auroc_variance"] = auroc(inside["variance"], outside["variance"])
    if args.diagnose:
        row.update(_diagnose(model, packer, texts, model.mean_field_factor))
    return row


def add_run_arguments(parser):
    """The split sizes and training budget (shared with `benchmarks.sngp_head_screen`)."""
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--validation", type=int, default=300)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--ood", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)


def _cell(value):
    return str(value) if isinstance(value, (str, int)) else f"{value:.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="bbc,tweets,reviews", help=f"comma-separated, from {', '.join(SETS)}")
    parser.add_argument("--heads", default=",".join(HEADS))
    add_run_arguments(parser)
    parser.add_argument("--pooling", choices=("cls", "mean"), default=None, help="default: the head's")
    parser.add_argument("--work", default=None, help="folder for the data files and model directories (default: a temp dir)")
    parser.add_argument("--diagnose", action="store_true")
    args = parser.parse_args(argv)

    from nlpkit.data import bundled
    from nlpkit.models import convert

    work = Path(args.work or tempfile.mkdtemp(prefix="sngp_calibration_"))
    minilm = work / "minilm"
    if not (minilm / "config.json").is_file():
        convert.convert(bundled.minilm_dir(), minilm)
    rows = []
    for set_name in args.sets.split(","):
        for head in args.heads.split(","):
            rows.append(run_one(set_name, head, args, work, minilm))
            print(json.dumps(rows[-1]), flush=True)
    columns = ["set", "classes", "head", "accuracy", "macro_f1", "ece_raw", "ece", "mean_max_prob", "ood_auroc",
               "train_s"]
    columns += ["ood_auroc_variance"] + [c for c in ("logit_gap", "variance", "mean_field_divisor") if args.diagnose]
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(_cell(row.get(c, float("nan"))) for c in columns))  # nan: the classification head
    print(json.dumps({"benchmark": "sngp_calibration", "args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
