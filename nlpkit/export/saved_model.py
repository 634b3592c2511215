"""Export a model directory as a TensorFlow SavedModel that takes raw text.

The signatures trace the one inference wrapper (`nlpkit.models.inference.InferenceModel`): its
`pack` (tokenizer + packer) and the model's own `predict_outputs`, so the SavedModel computes what
`nlpkit evaluate` and `predict` compute, post-hoc calibration included.

Signatures (see README "Serving"):
  serving_default(text)               classifier: logits, probabilities, label, label_id (+ variance for SNGP)
                                      multi-label: logits, probabilities [B, L]; labels int32 [B, L]
                                                  (1 = at or above the label's fitted threshold; names in
                                                  assets.extra/nlpkit.json "labels", in this order)
                                      regression: value [B] float32, in the label's units
                                      token-classification (per word piece, T = seq_length):
                                                  logits, probabilities [B, T, C]; label int32 [B, T]
                                                  (tag ids; names: nlpkit.json "labels"); input_word_ids,
                                                  input_mask int32 [B, T]; word_start int32 [B, T]: 1 at
                                                  the first piece of each word (not [CLS]/[SEP]/padding,
                                                  not a "##" continuation), whose tag is that word's tag.
                                                  The n-th 1 of a row is the n-th word of the text as
                                                  BERT's basic tokenizer splits it (letter/digit runs and
                                                  single punctuation marks); a text longer than
                                                  seq_length pieces is cut (nlpkit predict windows it).
                                      encoder:    pooled_output, sequence_output
  serving_pair(text, text_pair)       the same for two-segment inputs (classifiers trained on pairs)
  serve_examples(examples)            serialised tf.train.Example with a bytes feature "text" (and
                                      "text_pair" for pair models) -> as serving_default
  encode(text)                        pooled_output, sequence_output of the encoder
With `preprocessing=False`, serving_default takes input_word_ids, input_mask, input_type_ids
(int32 [B, T]) instead, and no text signatures are written.

The tokenizer's vocabulary is compiled into the graph (so the export needs no outside file) and
also kept as an asset (`assets/`), beside `assets.extra/nlpkit.json` (labels, head, seq_length).
"""

import json
import shutil
from pathlib import Path

from nlpkit._tf import import_tensorflow
from nlpkit.errors import NlpkitError
from nlpkit.models.inference import Predictor

tf = import_tensorflow()
import keras  # noqa: E402 - after TensorFlow, whose import noise import_tensorflow filters

METADATA_FILE = "assets.extra/nlpkit.json"
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")


def _require_tensorflow_backend():
    if keras.backend.backend() != "tensorflow":
        raise NlpkitError(
            f"SavedModel export needs the TensorFlow backend, Keras runs on {keras.backend.backend()}",
            hint="run with KERAS_BACKEND=tensorflow (the weights of any backend load there)",
        )


class _Endpoints:
    """The functions behind the signatures: the inference wrapper's own `pack` and `outputs`, traced."""

    def __init__(self, inference):
        self.inference = inference
        labels = inference.labels if inference.task == "classification" else None
        self.label_names = tf.constant(labels) if labels else None
        self.continuation = None
        if inference.task == "token-classification":
            self.continuation = getattr(inference.packer.tokenizer, "_is_continuation", None)
            if self.continuation is None:
                raise NlpkitError("export of a token-classification model needs a WordPiece tokenizer",
                                  hint="use nlpkit predict --model for SentencePiece taggers")

    def pack(self, text, text_pair=None):
        return self.inference.pack(text, text_pair)

    def outputs(self, inputs):
        result = dict(self.inference.outputs(inputs))
        if self.label_names is not None:  # string labels beside the ids, looked up in the graph
            result["label_id"] = result.pop("label")
            result["label"] = tf.gather(self.label_names, result["label_id"])
        if self.continuation is not None:
            result.update(self.word_starts(inputs))
        return result

    def word_starts(self, inputs):
        """What maps piece outputs back to words (see the module docstring)."""
        ids, mask = tf.cast(inputs["input_word_ids"], tf.int32), tf.cast(inputs["input_mask"], tf.int32)
        tokenizer = self.inference.packer.tokenizer
        special = tf.logical_or(tf.equal(ids, tokenizer.cls_id), tf.equal(ids, tokenizer.sep_id))
        start = tf.logical_not(tf.logical_or(tf.gather(self.continuation, ids), special))
        return {"input_word_ids": ids, "input_mask": mask, "word_start": tf.cast(start, tf.int32) * mask}

    def encode_ids(self, inputs):
        return self.inference.encode(inputs)

    def parse_examples(self, examples, with_pair):
        features = {"text": tf.io.FixedLenFeature([], tf.string)}
        if with_pair:
            features["text_pair"] = tf.io.FixedLenFeature([], tf.string)
        return tf.io.parse_example(examples, features)


def _add_text_endpoints(archive, endpoints, with_pair):
    text_spec = tf.TensorSpec([None], tf.string)

    def serving_default(text):
        return endpoints.outputs(endpoints.pack(text))

    def serving_pair(text, text_pair):
        return endpoints.outputs(endpoints.pack(text, text_pair))

    def serve_examples(examples):
        parsed = endpoints.parse_examples(examples, with_pair)
        return endpoints.outputs(endpoints.pack(parsed["text"], parsed.get("text_pair")))

    def encode(text):
        return endpoints.encode_ids(endpoints.pack(text))

    archive.add_endpoint("serving_default", serving_default, [text_spec])
    archive.add_endpoint("serving_pair", serving_pair, [text_spec, text_spec])
    archive.add_endpoint("serve_examples", serve_examples, [tf.TensorSpec([None], tf.string)])
    archive.add_endpoint("encode", encode, [text_spec])


def _add_id_endpoint(archive, endpoints, seq_length):
    spec = tf.TensorSpec([None, seq_length], tf.int32)

    def serving_default(input_word_ids, input_mask, input_type_ids):
        return endpoints.outputs(dict(input_word_ids=input_word_ids, input_mask=input_mask,
                                      input_type_ids=input_type_ids))

    archive.add_endpoint("serving_default", serving_default, [spec, spec, spec])


def export_saved_model(model_dir, output, *, preprocessing=True, force=False, seq_length=None):
    """Write the SavedModel for `model_dir` to `output` (atomically); returns its metadata dict."""
    from nlpkit.io import atomic_dir, check_not_input, check_replaceable
    from nlpkit.models.inference import InferenceModel
    from nlpkit.models.model_dir import read_config
    from nlpkit.text.packing import check_seq_length

    _require_tensorflow_backend()
    document = read_config(model_dir)
    head = document.get("head") or {}
    if seq_length is not None:  # 0 is a mistake, not "the default"
        check_seq_length(seq_length, 2 if head.get("pair_column") else 1)
    check_not_input(output, {"--model": model_dir})
    check_replaceable(output, force, is_ours=_is_saved_model, kind="a SavedModel")
    inference = InferenceModel(model_dir, seq_length, require_task=False)
    seq_length, assets = inference.seq_length, inference.assets
    if preprocessing and assets is None:
        raise NlpkitError(f"{model_dir} has no tokenizer assets", hint="export with --no-preprocessing")
    archive = keras.export.ExportArchive()
    archive.track(inference.model)
    if preprocessing:
        for resource in _trackables(inference.packer.tokenizer):
            archive.track(resource)
    endpoints = _Endpoints(inference)
    if preprocessing:
        _add_text_endpoints(archive, endpoints, with_pair=bool(head.get("pair_column")))
    else:
        _add_id_endpoint(archive, endpoints, seq_length)
    metadata = {"source": str(model_dir), "kind": document.get("kind"), "head": head or None,
                "labels": head.get("labels"), "seq_length": seq_length, "preprocessing": preprocessing,
                "calibration": getattr(inference.model, "calibration", None) if inference.task else None,
                "signatures": _signature_names(preprocessing)}
    with atomic_dir(output, overwrite=True) as tmp:  # check_replaceable decided above
        shutil.rmtree(tmp)
        archive.write_out(str(tmp), verbose=False)
        (tmp / "assets.extra").mkdir(exist_ok=True)
        if preprocessing:  # the graph holds its own copy; this one is for people and other tools
            (tmp / "assets").mkdir(exist_ok=True)
            shutil.copyfile(assets["path"], tmp / "assets" / Path(assets["path"]).name)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return metadata


def _is_saved_model(path):
    return (Path(path) / "saved_model.pb").is_file()


def _trackables(tokenizer):
    """TensorFlow resources a tokenizer holds outside Keras' tracking: SentencePiece's model resource,
    whose saved initializer carries the .model bytes (the export works with the model directory gone)."""
    inner = getattr(tokenizer, "tf_tokenizer", None)  # see SentencePieceTokenizer.__init__
    return [inner] if isinstance(inner, tf.Module) else []


def _signature_names(preprocessing):
    return ["serving_default", "serving_pair", "serve_examples", "encode"] if preprocessing else ["serving_default"]


class ServedClassifier(Predictor):
    """An exported classifier, loaded with TensorFlow alone: the `Predictor` of `nlpkit.models.inference`
    over its `serving_default` / `serving_pair` signatures."""

    def __init__(self, path):
        path = Path(path)
        if not (path / "saved_model.pb").is_file():
            raise NlpkitError(f"{path} is not a SavedModel (no saved_model.pb)", hint="pass the nlpkit export --output")
        metadata_path = path / METADATA_FILE
        self.metadata = json.loads(metadata_path.read_text(encoding="utf-8")) if metadata_path.is_file() else {}
        self.labels = self.metadata.get("labels")
        self.task = (self.metadata.get("head") or {}).get("task", "classification")
        if self.task not in ("classification", "multi-label", "regression") or not (
                self.labels or self.task == "regression") or not self.metadata.get("preprocessing", True):
            raise NlpkitError(f"{path} is not a raw-text classifier, multi-label or regression export",
                              hint="export a fine-tuned model without --no-preprocessing (taggers: predict --model)")
        self.signatures = tf.saved_model.load(str(path)).signatures

    def batch_outputs(self, texts, pairs=None):
        if pairs is None:
            out = self.signatures["serving_default"](text=tf.constant(texts))
        else:
            out = self.signatures["serving_pair"](text=tf.constant(texts), text_pair=tf.constant(pairs))
        if self.task == "classification":  # names: from the ids, as in-process
            out = {name: value for name, value in out.items() if name != "label"}
            out["label"] = out.pop("label_id")
        return out
