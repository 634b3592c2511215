"""Screen SNGP head settings cheaply: the head alone trained on frozen, cached MiniLM features.

The encoder (all-MiniLM-L6-v2, converted once) runs once per set; its CLS and mean-pooled
`sequence_output` of the train / validation / test / OOD rows of `benchmarks.sngp_calibration`
(same split and seed) are cached as .npz. Each setting then trains only the head (as
`nlpkit.training.finetune` does: AdamW with warm-up and linear decay, the precision matrix reset
every epoch) and reports accuracy, macro-F1, ECE and OOD AUROC by 1 - max probability and by
GP variance. A "classification" row trains `ClassificationHead` on the same features.

    python -m benchmarks.sngp_head_screen --sets reviews,tweets --work /tmp/sngp_screen \
        --settings 'default;gp_kernel_scale=8;normalize_input=True'
"""

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.sngp_calibration import (
    _load,
    _ood_texts,
    _split,
    add_run_arguments,
    auroc,
    expected_calibration_error,
    macro_f1,
)


def _features(set_name, args, work):
    """{part: (cls [N, D], mean [N, D], labels [N])} of the set, cached in `work`."""
    cache = work / f"{set_name}_features.npz"
    if cache.is_file():
        saved = np.load(cache)
        return {part: (saved[f"{part}_cls"], saved[f"{part}_mean"], saved[f"{part}_y"])
                for part in ("train", "validation", "test", "ood")}
    import keras

    from nlpkit.data import bundled
    from nlpkit.data.labelled import TextPacker
    from nlpkit.models import convert
    from nlpkit.training.runtime import start_encoder

    minilm = work / "minilm"
    if not (minilm / "config.json").is_file():
        convert.convert(bundled.minilm_dir(), minilm)
    encoder, _, vocab, lower_case = start_encoder(model=str(minilm))
    packer = TextPacker(vocab, args.seq_length, lower_case=lower_case)
    pairs = _load(set_name)
    names = sorted({label for _, label in pairs})
    train, val, test = _split(pairs, args.train, args.validation, args.test, args.seed)
    ood = [(text, names[0]) for text in _ood_texts(set_name, args.ood)]
    arrays = {}
    for part, rows in (("train", train), ("validation", val), ("test", test), ("ood", ood)):
        packed = packer.pack([text for text, _ in rows])
        cls, mean = [], []
        for start in range(0, len(rows), 64):
            batch = {k: keras.ops.convert_to_tensor(v[start : start + 64]) for k, v in packed.items()}
            sequence = keras.ops.convert_to_numpy(encoder(batch, training=False)["sequence_output"])
            mask = packed["input_mask"][start : start + 64][..., None].astype("float32")
            cls.append(sequence[:, 0])
            mean.append((sequence * mask).sum(1) / np.maximum(mask.sum(1), 1.0))
        arrays.update({f"{part}_cls": np.concatenate(cls), f"{part}_mean": np.concatenate(mean),
                       f"{part}_y": np.array([names.index(label) for _, label in rows])})
    np.savez(cache, **arrays)
    return _features(set_name, args, work)


def _parse(setting):
    """'name=value,name=value' -> dict (values as Python literals); 'default' -> {}."""
    import ast

    options = {}
    for item in filter(None, setting.split(",")):
        if item == "default":
            continue
        key, value = item.split("=", 1)
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def train_head(features, options, args, num_classes):
    """Train one head on the cached features; returns the metrics row."""
    import keras

    from nlpkit.layers.gaussian_process import GaussianProcessClassificationHead, ResetCovarianceCallback
    from nlpkit.layers.heads import ClassificationHead
    from nlpkit.training.optimization import create_optimizer

    options = dict(options)
    head_name = options.pop("head", "sngp")
    pooling = options.pop("pooling", "mean")
    lr = options.pop("lr", args.learning_rate)
    epochs = options.pop("epochs", args.epochs)
    dropout = options.pop("dropout_rate", 0.0 if head_name == "sngp" else 0.1)
    inner_dim = options.pop("inner_dim", 384)
    weight_decay = options.pop("weight_decay", 0.01)
    column = 0 if pooling == "cls" else 1
    x = {part: value[column][:, None, :] for part, value in features.items()}
    y = {part: value[2] for part, value in features.items()}
    keras.utils.set_random_seed(args.seed)
    if head_name == "sngp":
        options.setdefault("gp_cov_momentum", -1.0)
        head = GaussianProcessClassificationHead(inner_dim=inner_dim, num_classes=num_classes, pooling="cls",
                                                 dropout_rate=dropout, **options)
    else:
        head = ClassificationHead(inner_dim=inner_dim, num_classes=num_classes, dropout_rate=dropout,
                                  pooling="cls", **options)
    inputs = keras.Input((1, x["train"].shape[-1]))
    model = keras.Model(inputs, head(inputs))
    steps = epochs * int(np.ceil(len(y["train"]) / args.batch_size))
    optimizer = create_optimizer(model.trainable_variables, learning_rate=lr, total_steps=steps,
                                 warmup_steps=int(0.1 * steps), weight_decay=weight_decay)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [ResetCovarianceCallback()] if head_name == "sngp" else []
    model.fit(x["train"], y["train"], batch_size=args.batch_size, epochs=epochs, shuffle=True, verbose=0,
              callbacks=callbacks)
    test, ood = _scores(head, x["test"]), _scores(head, x["ood"])
    probabilities = test["probabilities"]
    predicted = probabilities.argmax(1)
    row = {"accuracy": float(np.mean(predicted == y["test"])),
           "macro_f1": macro_f1(predicted, y["test"], num_classes),
           "ece": expected_calibration_error(probabilities, y["test"]),
           "mean_max_prob": float(probabilities.max(1).mean()),
           "ood_auroc_max_probability": auroc(1 - probabilities.max(1), 1 - ood["probabilities"].max(1))}
    if head_name == "sngp":
        row["ood_auroc_variance"] = auroc(test["variance"], ood["variance"])
        row["variance_in"] = float(np.median(test["variance"]))
        row["variance_ood"] = float(np.median(ood["variance"]))
    return row


def _scores(head, x, batch=200):
    import keras

    from nlpkit.layers.gaussian_process import DEFAULT_MEAN_FIELD_FACTOR, GaussianProcessClassificationHead

    probabilities, variances = [], []
    for start in range(0, len(x), batch):
        chunk = keras.ops.convert_to_tensor(x[start : start + batch])
        if isinstance(head, GaussianProcessClassificationHead):
            logits, covariance = head(chunk, training=False, return_covariance=True)
            variance = np.diag(keras.ops.convert_to_numpy(covariance))
            logits = keras.ops.convert_to_numpy(logits) / np.sqrt(1 + DEFAULT_MEAN_FIELD_FACTOR * variance)[:, None]
            variances.append(variance)
        else:
            logits = keras.ops.convert_to_numpy(head(chunk, training=False))
        logits = logits - logits.max(1, keepdims=True)
        probabilities.append(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    return {"probabilities": np.concatenate(probabilities),
            "variance": np.concatenate(variances) if variances else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="reviews,tweets")
    parser.add_argument("--settings", default="default;head=classification",
                        help="';'-separated settings, each 'key=value,...' (head options, or pooling, lr, epochs, "
                             "dropout_rate, inner_dim, weight_decay, head=classification)")
    add_run_arguments(parser)
    parser.add_argument("--work", default="/tmp/sngp_screen")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for set_name in args.sets.split(","):
        features = _features(set_name, args, work)
        num_classes = int(max(features["train"][2].max(), features["test"][2].max()) + 1)
        for setting in args.settings.split(";"):
            row = {"set": set_name, "setting": setting, **train_head(features, _parse(setting), args, num_classes)}
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
