"""Evaluating a fine-tuned model directory: for classifiers metrics, calibration (raw and calibrated),
OOD AUROC; for the other tasks their report (`nlpkit.training.tasks`: multi-label micro/macro F1,
subset accuracy and per-label table; regression RMSE, MAE, Pearson, Spearman in label units; token
classification entity precision/recall/F1 overall and per type, and token accuracy).

The model directory is run through the one inference wrapper, `nlpkit.models.inference.InferenceModel`.
"""

from pathlib import Path

import numpy as np

from nlpkit.data import labelled as data
from nlpkit.errors import NlpkitError
from nlpkit.training import metrics


def uncertainty(outputs):
    """Predictive uncertainty per example: the GP variance for SNGP, else 1 - max probability."""
    if "variance" in outputs:
        return outputs["variance"]
    return _max_probability_gap(outputs)


def _max_probability_gap(outputs):
    """1 - max probability: the OOD score every head has (SNGP's probabilities are mean-field ones,
    so its variance enters this score too), for comparing heads on equal terms."""
    return 1.0 - outputs["probabilities"].max(axis=-1)


def _numpy(outputs):
    import keras

    return {name: keras.ops.convert_to_numpy(value) for name, value in outputs.items()}


def evaluate(model_dir, data_path, *, json_path=None, diagram_path=None, ood_path=None, batch_size=64,
             on_batch=None):
    """Metrics of a classifier directory on labelled data (and OOD AUROC); writes JSON / PNG if asked.

    `ece` / `nll` are those of the model's (calibrated) outputs, `ece_raw` / `nll_raw` those of the
    uncalibrated ones (temperature 1, or the default mean-field factor); `calibration` names what the
    directory applies.
    """
    from nlpkit.models.classifier import UNCALIBRATED
    from nlpkit.models.inference import InferenceModel

    classifier = InferenceModel(model_dir)
    if classifier.task != "classification":
        if ood_path or diagram_path:
            raise NlpkitError(f"--{'ood' if ood_path else 'diagram'} is for classifiers, not a {classifier.task} model")
        return _write_json(evaluate_task(classifier, data_path, batch_size), json_path)
    head, model = classifier.head, classifier.model
    examples = data.read_examples(data_path, text_column=head.get("text_column") or "text",
                                  pair_column=head.get("pair_column"), label_column=head.get("label_column") or "label",
                                  option="--data")
    labels = data.label_ids(examples, classifier.labels)
    head_outputs = classifier.head_outputs(examples.texts, examples.pairs, batch_size, on_batch)
    outputs = _numpy(model.outputs_from_head(head_outputs))
    probs, raw = outputs["probabilities"], _numpy(model.outputs_from_head(head_outputs, UNCALIBRATED))["probabilities"]
    result = {
        "examples": len(labels),
        "accuracy": metrics.accuracy(probs, labels),
        "macro_f1": metrics.macro_f1(probs, labels),
        "nll": metrics.negative_log_likelihood(probs, labels),
        "nll_raw": metrics.negative_log_likelihood(raw, labels),
        "ece": metrics.expected_calibration_error(probs, labels),
        "ece_raw": metrics.expected_calibration_error(raw, labels),
        "calibration": model.calibration,
        "confusion_matrix": metrics.confusion_matrix(probs, labels, len(classifier.labels)).tolist(),
        "labels": classifier.labels,
    }
    if ood_path:
        ood = data.read_examples(ood_path, text_column=head.get("text_column") or "text", label_column=None,
                                 option="--ood")
        ood_outputs = classifier.predict(ood.texts, None, batch_size)
        is_ood = np.concatenate([np.zeros(len(labels), bool), np.ones(len(ood), bool)])
        for key, score in (("ood_auroc", uncertainty), ("ood_auroc_max_probability", _max_probability_gap)):
            result[key] = metrics.auroc(np.concatenate([score(outputs), score(ood_outputs)]), is_ood)
        result["ood_examples"] = len(ood)
    if diagram_path:
        metrics.reliability_diagram(probs, labels, diagram_path, title=f"Reliability ({head.get('type')} head)")
        result["reliability_diagram"] = str(diagram_path)
    return _write_json(result, json_path)


def _write_json(result, json_path):
    if json_path:
        from nlpkit.io import atomic_file, json_text

        with atomic_file(json_path) as tmp:
            Path(tmp).write_text(json_text(result, indent=2) + "\n", encoding="utf-8")
    return result


def evaluate_task(inference, data_path, batch_size=64):
    """The task report of a multi-label / regression / token-classification directory on labelled data."""
    from nlpkit.training.tasks import get_task

    head = inference.head
    task = get_task(inference.task)
    if inference.task == "token-classification":
        options = {"scheme": head["encoding"].get("scheme", "iob2")}
    else:
        options = dict(text_column=head.get("text_column") or "text", pair_column=head.get("pair_column"),
                       label_column=head.get("label_column") or "label", label_separator=head.get("label_separator"))
    examples = task.read(data_path, option="--data", **options)
    encoding = task.load_encoding(head["encoding"])
    prepared = task.prepare(examples, encoding, inference.packer)
    outputs = task.outputs(inference.model, prepared, batch_size)
    return {"task": inference.task, "examples": len(examples), **task.metrics(outputs, prepared, examples, encoding)}
