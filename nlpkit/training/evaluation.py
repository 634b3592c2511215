"""Using a fine-tuned classifier directory: batched predictions, metrics, calibration, OOD AUROC."""

from pathlib import Path

import numpy as np

from nlpkit.data import labelled as data
from nlpkit.errors import NlpkitError
from nlpkit.training import metrics


class Classifier:
    """A classifier model directory, loaded: `predict(texts, pairs=None)` -> dict of NumPy arrays."""

    def __init__(self, model_dir, seq_length=None):
        from nlpkit.models.model_dir import load_model, read_config, tokenizer_assets

        document = read_config(model_dir)
        self.head = document.get("head") or {}
        if self.head.get("task") != "classification":
            raise NlpkitError(f"{model_dir} holds no classifier (kind: {document.get('kind')})",
                              hint="pass the --output folder of nlpkit finetune")
        self.labels = self.head["labels"]
        self.model = load_model(model_dir)
        assets = tokenizer_assets(model_dir)
        self.packer = data.TextPacker(assets["path"], seq_length or self.head["seq_length"],
                                      lower_case=assets.get("lower_case", True))

    @property
    def is_sngp(self):
        return self.head.get("type") == "sngp"

    def predict(self, texts, pairs=None, batch_size=64, on_batch=None):
        import keras

        outputs = []
        for start in range(0, len(texts), batch_size):
            stop = start + batch_size
            inputs = self.packer.pack(texts[start:stop], None if pairs is None else pairs[start:stop])
            batch = self.model.predict_outputs(inputs)
            outputs.append({name: keras.ops.convert_to_numpy(value) for name, value in batch.items()})
            if on_batch:
                on_batch(min(stop, len(texts)))
        return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}

    def uncertainty(self, outputs):
        """Predictive uncertainty per example: the GP variance for SNGP, else 1 - max probability."""
        if "variance" in outputs:
            return outputs["variance"]
        return _max_probability_gap(outputs)

    def records(self, outputs):
        """JSON-ready dicts per example: label name, probabilities by label (and uncertainty)."""
        rows = []
        for i, label in enumerate(outputs["label"]):
            row = {"label": self.labels[int(label)],
                   "probabilities": {name: round(float(p), 6) for name, p in zip(self.labels, outputs["probabilities"][i])}}
            if self.is_sngp:
                row["uncertainty"] = round(float(outputs["variance"][i]), 6)
            rows.append(row)
        return rows


def _max_probability_gap(outputs):
    """1 - max probability: the OOD score every head has (SNGP's probabilities are mean-field ones,
    so its variance enters this score too), for comparing heads on equal terms."""
    return 1.0 - outputs["probabilities"].max(axis=-1)


def evaluate(model_dir, data_path, *, json_path=None, diagram_path=None, ood_path=None, batch_size=64,
             on_batch=None):
    """Metrics of a classifier directory on labelled data (and OOD AUROC); writes JSON / PNG if asked."""
    classifier = Classifier(model_dir)
    head = classifier.head
    examples = data.read_examples(data_path, text_column=head.get("text_column") or "text",
                                  pair_column=head.get("pair_column"), label_column=head.get("label_column") or "label")
    labels = data.label_ids(examples, classifier.labels)
    outputs = classifier.predict(examples.texts, examples.pairs, batch_size, on_batch)
    probs = outputs["probabilities"]
    result = {
        "examples": len(labels),
        "accuracy": metrics.accuracy(probs, labels),
        "macro_f1": metrics.macro_f1(probs, labels),
        "nll": metrics.negative_log_likelihood(probs, labels),
        "ece": metrics.expected_calibration_error(probs, labels),
        "confusion_matrix": metrics.confusion_matrix(probs, labels, len(classifier.labels)).tolist(),
        "labels": classifier.labels,
    }
    if ood_path:
        ood = data.read_examples(ood_path, text_column=head.get("text_column") or "text", label_column=None)
        ood_outputs = classifier.predict(ood.texts, None, batch_size)
        is_ood = np.concatenate([np.zeros(len(labels), bool), np.ones(len(ood), bool)])
        for key, score in (("ood_auroc", classifier.uncertainty), ("ood_auroc_max_probability", _max_probability_gap)):
            result[key] = metrics.auroc(np.concatenate([score(outputs), score(ood_outputs)]), is_ood)
        result["ood_examples"] = len(ood)
    if diagram_path:
        metrics.reliability_diagram(probs, labels, diagram_path, title=f"Reliability ({head.get('type')} head)")
        result["reliability_diagram"] = str(diagram_path)
    if json_path:
        from nlpkit.io import atomic_file, json_text

        with atomic_file(json_path) as tmp:
            Path(tmp).write_text(json_text(result, indent=2) + "\n", encoding="utf-8")
    return result
