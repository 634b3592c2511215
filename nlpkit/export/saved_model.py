"""Export a model directory as a TensorFlow SavedModel that takes raw text.

Signatures (see README "Serving"):
  serving_default(text)               classifier: logits, probabilities, label, label_id (+ variance for SNGP)
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


def _text_layers(assets, seq_length):
    """(tokenizer layer, packer layer, trackable resources) for a model directory's tokenizer."""
    from nlpkit.text.packing import BertPackInputs

    if assets["type"] == "sentencepiece":
        from nlpkit.text.sentencepiece import SentencepieceTokenizer

        tokenizer = SentencepieceTokenizer(str(assets["path"]))
    else:
        from nlpkit.text.wordpiece import BertTokenizer

        tokenizer = BertTokenizer(str(assets["path"]), lower_case=assets.get("lower_case", True))
    ids = tokenizer.tokenizer
    packer = BertPackInputs(seq_length, ids.cls_id, ids.sep_id, ids.pad_id)
    return tokenizer, packer


class _Endpoints:
    """The functions behind the signatures, closed over the model and text layers."""

    def __init__(self, model, tokenizer, packer, head):
        self.model, self.tokenizer, self.packer, self.head = model, tokenizer, packer, head
        self.encoder = getattr(model, "encoder", model)
        labels = head.get("labels") if head else None
        self.label_names = tf.constant(labels) if labels else None

    def pack(self, text, text_pair=None):
        segments = [self.tokenizer(text)]
        if text_pair is not None:
            segments.append(self.tokenizer(text_pair))
        return self.packer(segments)

    def outputs(self, inputs):
        if self.label_names is None:
            return self.encode_ids(inputs)
        result = self.model.predict_outputs(inputs)
        result["label_id"] = result.pop("label")
        result["label"] = tf.gather(self.label_names, result["label_id"])
        return result

    def encode_ids(self, inputs):
        outputs = self.encoder(inputs, training=False)
        return {"pooled_output": tf.cast(outputs["pooled_output"], tf.float32),
                "sequence_output": tf.cast(outputs["sequence_output"], tf.float32)}

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
    from nlpkit.models.model_dir import load_model, read_config, tokenizer_assets
    from nlpkit.io import atomic_dir, check_not_input, check_replaceable
    from nlpkit.text.packing import check_seq_length

    _require_tensorflow_backend()
    document = read_config(model_dir)
    head = document.get("head") or {}
    if seq_length is not None:  # 0 is a mistake, not "the default"
        check_seq_length(seq_length, 2 if head.get("pair_column") else 1)
    seq_length = seq_length or head.get("seq_length") or 128
    check_not_input(output, {"--model": model_dir})
    check_replaceable(output, force, is_ours=_is_saved_model, kind="a SavedModel")
    model = load_model(model_dir)
    assets = tokenizer_assets(model_dir)
    if preprocessing and assets is None:
        raise NlpkitError(f"{model_dir} has no tokenizer assets", hint="export with --no-preprocessing")
    archive = keras.export.ExportArchive()
    archive.track(model)
    tokenizer = packer = None
    if preprocessing:
        tokenizer, packer = _text_layers(assets, seq_length)
        for resource in _trackables(tokenizer):
            archive.track(resource)
    endpoints = _Endpoints(model, tokenizer, packer, head)
    if preprocessing:
        _add_text_endpoints(archive, endpoints, with_pair=bool(head.get("pair_column")))
    else:
        _add_id_endpoint(archive, endpoints, seq_length)
    metadata = {"source": str(model_dir), "kind": document.get("kind"), "head": head or None,
                "labels": head.get("labels"), "seq_length": seq_length, "preprocessing": preprocessing,
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
    """TensorFlow resources a tokenizer layer holds outside Keras' tracking: SentencePiece's model resource,
    whose saved initializer carries the .model bytes (the export works with the model directory gone)."""
    inner = getattr(tokenizer, "tf_tokenizer", None)  # see SentencepieceTokenizer.__init__
    return [inner] if isinstance(inner, tf.Module) else []


def _signature_names(preprocessing):
    return ["serving_default", "serving_pair", "serve_examples", "encode"] if preprocessing else ["serving_default"]


class ServedClassifier:
    """An exported classifier, loaded with TensorFlow alone: `predict(texts)` -> JSON-ready rows."""

    def __init__(self, path):
        path = Path(path)
        if not (path / "saved_model.pb").is_file():
            raise NlpkitError(f"{path} is not a SavedModel (no saved_model.pb)", hint="pass the nlpkit export --output")
        metadata_path = path / METADATA_FILE
        self.metadata = json.loads(metadata_path.read_text(encoding="utf-8")) if metadata_path.is_file() else {}
        self.labels = self.metadata.get("labels")
        if not self.labels or not self.metadata.get("preprocessing", True):
            raise NlpkitError(f"{path} is not a raw-text classifier export",
                              hint="export a fine-tuned model without --no-preprocessing")
        self.signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def predict(self, texts, batch_size=64):
        rows = []
        for start in range(0, len(texts), batch_size):
            out = self.signature(text=tf.constant(texts[start : start + batch_size]))
            probs = out["probabilities"].numpy()
            for i, label in enumerate(out["label"].numpy()):
                row = {"label": label.decode("utf-8"),
                       "probabilities": {name: round(float(p), 6) for name, p in zip(self.labels, probs[i])}}
                if "variance" in out:
                    row["uncertainty"] = round(float(out["variance"].numpy()[i]), 6)
                rows.append(row)
        return rows
