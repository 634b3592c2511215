"""Which encoder layer keeps the domain? OOD AUROC of distance scores on each layer's pooled features.

Forward passes only. For the frozen converted MiniLM and for fine-tuned classifier directories
(`benchmarks.sngp_calibration --work W` leaves them in W/<set>/<head>), pools every layer's output
(layer 0 = the embedding output, then each transformer layer; mean over the real tokens and the
CLS token) and scores test rows and out-of-domain rows by
  - `maha_class`: Mahalanobis distance to the nearest class mean under the shared within-class
    covariance of the training features (Lee et al. 2018),
  - `maha_pooled`: Mahalanobis distance to one Gaussian of all training features,
  - `knn10`: distance to the 10th nearest training feature after L2 normalisation (Sun et al. 2022);
then prints the AUROC (OOD scores higher) per model, pooling, layer and score, and one JSON line.
"all" is the concatenation of every layer's L2-normalised features; "low" of layers 0-2.

    python -m benchmarks.sngp_layer_ood --work /tmp/sngp_bench --sets reviews,tweets --heads sngp
"""

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.sngp_calibration import _load, _ood_texts, _split, add_run_arguments, auroc


def pooled_layers(encoder, packed, batch_size=64):
    """{"mean"|"cls": [layer 0 (embeddings), layer 1, ...]} as float64 NumPy `[N, D]` each."""
    import keras

    import tensorflow as tf  # a benchmark: one traced forward pass instead of eager op-by-op calls

    @tf.function
    def forward(batch):
        # the embedding output is not an encoder output; a benchmark may reach for it
        embedded = encoder._embed(batch["input_word_ids"], batch["input_type_ids"], False)
        return [embedded] + list(encoder(batch, training=False)["encoder_outputs"])

    pooled = {"mean": [], "cls": []}
    for start in range(0, len(packed["input_mask"]), batch_size):
        batch = {name: tf.constant(ids[start : start + batch_size]) for name, ids in packed.items()}
        mask = batch["input_mask"].numpy().astype(np.float64)[..., None]
        means, cls = [], []
        for layer in forward(batch):
            values = keras.ops.convert_to_numpy(keras.ops.cast(layer, "float32")).astype(np.float64)
            means.append((values * mask).sum(1) / np.maximum(mask.sum(1), 1.0))
            cls.append(values[:, 0])
        pooled["mean"].append(means)
        pooled["cls"].append(cls)
    return {kind: [np.concatenate([chunk[i] for chunk in chunks]) for i in range(len(chunks[0]))]
            for kind, chunks in pooled.items()}


def _inverse_covariance(centred, shrinkage=1e-3):
    """Inverse of the sample covariance shrunk towards its mean eigenvalue (more dims than rows stay invertible)."""
    covariance = centred.T @ centred / len(centred)
    ridge = shrinkage * np.trace(covariance) / len(covariance) + 1e-9  # + : layer 0's CLS is one constant vector
    return np.linalg.inv(covariance + ridge * np.eye(len(covariance)))


def mahalanobis_scores(train, labels, queries):
    """(nearest class-mean distance under the shared covariance, distance to the one pooled Gaussian)."""
    classes = np.unique(labels)
    means = np.stack([train[labels == k].mean(0) for k in classes])
    within = _inverse_covariance(train - means[np.searchsorted(classes, labels)])
    per_class = np.stack([np.einsum("nd,de,ne->n", queries - m, within, queries - m) for m in means])
    centre = train.mean(0)
    pooled = _inverse_covariance(train - centre)
    return per_class.min(0), np.einsum("nd,de,ne->n", queries - centre, pooled, queries - centre)


def knn_scores(train, queries, k=10):
    """Distance to the k-th nearest training row, both L2-normalised."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    distances = np.sqrt(np.maximum(2.0 - 2.0 * queries @ train.T, 0.0))
    return np.sort(distances, axis=1)[:, k - 1]


def _combined(layers, indices):
    return np.concatenate([layers[i] / np.linalg.norm(layers[i], axis=1, keepdims=True) for i in indices], axis=1)


def score_model(encoder, packer, train, test, ood):
    """Rows {pooling, layer, maha_class, maha_pooled, knn10} of OOD AUROCs (test vs ood)."""
    labels = np.array([label for _, label in train])
    features = {part: pooled_layers(encoder, packer.pack([text for text, _ in rows]))
                for part, rows in (("train", train), ("test", test), ("ood", [(t, None) for t in ood]))}
    rows = []
    for pooling in ("mean", "cls"):
        layers = {part: features[part][pooling] for part in features}
        count = len(layers["train"])
        choices = [(str(i), [i]) for i in range(count)] + [("low", [0, 1, 2]), ("all", list(range(count)))]
        for name, indices in choices:
            train_x, test_x, ood_x = (_combined(layers[p], indices) if len(indices) > 1 else layers[p][indices[0]]
                                      for p in ("train", "test", "ood"))
            test_class, test_pooled = mahalanobis_scores(train_x, labels, test_x)
            ood_class, ood_pooled = mahalanobis_scores(train_x, labels, ood_x)
            rows.append({"pooling": pooling, "layer": name,
                         "maha_class": auroc(test_class, ood_class), "maha_pooled": auroc(test_pooled, ood_pooled),
                         "knn10": auroc(knn_scores(train_x, test_x), knn_scores(train_x, ood_x))})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the sngp_calibration work folder (minilm/ and <set>/<head>/)")
    parser.add_argument("--sets", default="reviews,tweets")
    parser.add_argument("--heads", default="sngp", help="fine-tuned directories to score besides the frozen encoder")
    add_run_arguments(parser)
    parser.add_argument("--fit", type=int, default=None, help="training rows the Gaussians / neighbours use (default all)")
    parser.add_argument("--score", type=int, default=None, help="test rows scored (default all); OOD rows: --ood")
    args = parser.parse_args(argv)

    from nlpkit.data.labelled import TextPacker
    from nlpkit.models.model_dir import load_model

    work = Path(args.work)
    frozen = load_model(work / "minilm")
    packer = TextPacker(str(work / "minilm" / "vocab.txt"), args.seq_length)
    results = []
    for set_name in args.sets.split(","):
        # the fine-tuning split (so test rows stay unseen), then the first --fit / --score rows of it
        train, _, test = _split(_load(set_name), args.train, args.validation, args.test, args.seed)
        train, test = train[: args.fit], test[: args.score]
        ood = _ood_texts(set_name, args.ood)
        models = [("frozen", frozen)] + [(head, load_model(work / set_name / head).encoder)
                                         for head in args.heads.split(",") if (work / set_name / head).is_dir()]
        for model_name, encoder in models:
            for row in score_model(encoder, packer, train, test, ood):
                results.append({"set": set_name, "model": model_name, **row})
                print(json.dumps(results[-1]), flush=True)
    columns = ["set", "model", "pooling", "layer", "maha_class", "maha_pooled", "knn10"]
    print(" | ".join(columns))
    for row in results:
        print(" | ".join(row[c] if isinstance(row[c], str) else f"{row[c]:.3f}" for c in columns))
    print(json.dumps({"benchmark": "sngp_layer_ood", "args": vars(args), "rows": results}))


if __name__ == "__main__":
    main()
