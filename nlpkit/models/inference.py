"""The one inference wrapper: a model directory (or an exported SavedModel) turning raw texts into outputs.

`InferenceModel(DIR)` owns the directory's tokenizer + packer (`nlpkit.data.labelled.TextPacker`)
and its Keras model. `pack(texts, pairs)` are TensorFlow ops and `outputs(inputs)` is the model's
own `predict_outputs` (so the task decides what its outputs are: for a classifier the calibrated
`logits`, `probabilities`, `label` and, for SNGP, `variance`); `nlpkit evaluate` and `predict` run
them eagerly, batch by batch, and `nlpkit export` traces the very same two calls into the
SavedModel's signatures. `nlpkit.export.saved_model.ServedClassifier` is the same `Predictor`
over an exported SavedModel.

A task plugs in with a model class that has `predict_outputs(inputs) -> dict` and an entry in
`TASK_RECORDS` turning those outputs (NumPy) into JSON-ready rows for `nlpkit predict`.
"""

import numpy as np

from nlpkit.errors import NlpkitError

DEFAULT_BATCH_SIZE = 64


def classification_records(labels, outputs):
    """JSON-ready rows of classifier outputs: label name, probabilities by label (and SNGP uncertainty)."""
    rows = []
    for i, label in enumerate(outputs["label"]):
        row = {"label": labels[int(label)],
               "probabilities": {name: round(float(p), 6) for name, p in zip(labels, outputs["probabilities"][i])}}
        if "variance" in outputs:
            row["uncertainty"] = round(float(outputs["variance"][i]), 6)
        rows.append(row)
    return rows


def multilabel_records(labels, outputs):
    """Rows of multi-label outputs: the chosen labels (thresholded in the model) and every label's probability."""
    return [{"labels": [name for name, chosen in zip(labels, row) if chosen],
             "probabilities": {name: round(float(p), 6) for name, p in zip(labels, probabilities)}}
            for row, probabilities in zip(outputs["labels"], outputs["probabilities"])]


def regression_records(_labels, outputs):
    """Rows of regression outputs: the value in the label's units."""
    return [{"value": float(value)} for value in outputs["value"]]


def token_records(_labels, outputs):
    """Rows of `InferenceModel.predict` for a tagger: words, their tags, entity spans (character offsets)."""
    from nlpkit.data.token_tags import tagged_row

    return [tagged_row(text, words, offsets, tags, outputs["scheme"] != "none")
            for text, words, offsets, tags in zip(outputs["texts"], outputs["words"], outputs["offsets"],
                                                  outputs["tags"])]


# task (config.json head "task") -> records(labels, outputs): how `nlpkit predict` prints its outputs.
TASK_RECORDS = {"classification": classification_records, "multi-label": multilabel_records,
                "regression": regression_records, "token-classification": token_records}


def _float32_policies(serialized):
    """A serialized Keras object with every dtype policy (mixed_bfloat16, mixed_float16, ...) made float32."""
    if isinstance(serialized, list):
        return [_float32_policies(item) for item in serialized]
    if not isinstance(serialized, dict):
        return serialized
    if serialized.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(serialized.get("config"), dict):
        return {**serialized, "config": {**serialized["config"], "name": "float32"}}
    return {key: _float32_policies(value) for key, value in serialized.items()}


def in_float32(model):
    """`model`, computing in float32 whatever precision it was trained in.

    Inference is the same function in every place (evaluate, predict, export): a bf16 model's
    outputs would otherwise depend on where bf16 rounding happens (an exported graph and eager
    Keras differ at 1e-4). The variables of a mixed-precision model are float32 already, so the
    float32 twin takes them unchanged.
    """
    import keras

    from nlpkit.encoders.base import weights_to_be_loaded
    from nlpkit.models.model_dir import _ensure_built

    serialized = keras.saving.serialize_keras_object(model)
    float32 = _float32_policies(serialized)
    if float32 == serialized:
        return model
    with weights_to_be_loaded():
        twin = keras.saving.deserialize_keras_object(float32, safe_mode=True)
        _ensure_built(twin)
    twin.set_weights(model.get_weights())
    return twin


def run_in_batches(compute, count, batch_inputs, batch_size=DEFAULT_BATCH_SIZE, on_batch=None):
    """`compute(batch_inputs(start, stop))` over [0, count) in batches; the output dicts concatenated as NumPy.

    `on_batch(done)` is called after each batch (for a progress bar).
    """
    import keras

    parts = []
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        parts.append({name: keras.ops.convert_to_numpy(value) for name, value in compute(batch_inputs(start, stop)).items()})
        if on_batch:
            on_batch(stop)
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _slices(texts, pairs):
    return lambda start, stop: (texts[start:stop], None if pairs is None else pairs[start:stop])


class Predictor:
    """Raw texts -> task outputs, batched: `predict(texts, pairs=None)` -> dict of NumPy arrays,
    `records(outputs)` -> JSON-ready rows. Subclasses define `batch_outputs(texts, pairs)`."""

    task = None
    labels = None

    def batch_outputs(self, texts, pairs=None):
        raise NotImplementedError

    def predict(self, texts, pairs=None, batch_size=DEFAULT_BATCH_SIZE, on_batch=None):
        return run_in_batches(lambda batch: self.batch_outputs(*batch), len(texts), _slices(texts, pairs),
                              batch_size, on_batch)

    def records(self, outputs):
        if self.task not in TASK_RECORDS:
            raise NlpkitError(f"nlpkit predict cannot print outputs of task {self.task!r}")
        return TASK_RECORDS[self.task](self.labels, outputs)


class InferenceModel(Predictor):
    """A model directory, loaded for inference: tokenizer + packer + Keras model.

    Args:
      model_dir: a model directory (a fine-tuned task model, or an encoder: `task` None).
      seq_length: packing length (default: the fine-tuning `seq_length` of the head, else 128).
      require_task: refuse a directory without a task head (what evaluate / predict need).
    """

    def __init__(self, model_dir, seq_length=None, *, require_task=True):
        from nlpkit.data.labelled import TextPacker
        from nlpkit.models.model_dir import load_model, read_config, tokenizer_assets

        document = read_config(model_dir)
        self.head = document.get("head") or {}
        self.task = self.head.get("task")
        if require_task and self.task not in TASK_RECORDS:
            raise NlpkitError(f"{model_dir} holds no fine-tuned task model (kind: {document.get('kind')})",
                              hint="pass the --output folder of nlpkit finetune")
        if self.task not in (None, "classification") and not isinstance(self.head.get("encoding"), dict):
            raise NlpkitError(f"{model_dir}: the {self.task} head has no 'encoding' in config.json",
                              hint="the model directory is damaged")
        self.document = document
        self.labels = self.head.get("labels") or (self.head.get("encoding") or {}).get("names")
        self.seq_length = seq_length or self.head.get("seq_length") or 128
        self.model = in_float32(load_model(model_dir))
        self.assets = tokenizer_assets(model_dir)
        self.packer = None
        if self.assets is not None:
            self.packer = TextPacker(self.assets["path"], self.seq_length, lower_case=self.assets.get("lower_case", True))

    @property
    def encoder(self):
        return getattr(self.model, "encoder", self.model)

    def pack(self, texts, pairs=None):
        """Texts `[B]` (and pairs) -> the three int32 `[B, T]` inputs (TensorFlow tensors)."""
        if self.packer is None:
            raise NlpkitError("the model directory has no tokenizer assets", hint="pass token ids instead of text")
        return self.packer.pack_tensors(texts, pairs)

    def outputs(self, inputs):
        """The model's inference outputs for packed inputs: the task's, or the encoder's (`encode`)."""
        if self.task is None:
            return self.encode(inputs)
        return self.model.predict_outputs(inputs)

    def encode(self, inputs):
        """`pooled_output [B, D]`, `sequence_output [B, T, D]` of the encoder (float32)."""
        from keras import ops

        encoded = self.encoder(inputs, training=False)
        return {name: ops.cast(encoded[name], "float32") for name in ("pooled_output", "sequence_output")}

    def batch_outputs(self, texts, pairs=None):
        return self.outputs(self.pack(texts, pairs))

    def predict(self, texts, pairs=None, batch_size=DEFAULT_BATCH_SIZE, on_batch=None):
        if self.task == "token-classification":
            return self.tag_words(texts, batch_size)
        return super().predict(texts, pairs, batch_size, on_batch)

    def tag_words(self, texts, batch_size=DEFAULT_BATCH_SIZE):
        """A tagger on raw texts: words (`split_words`), their tags, and the word-level `probabilities`
        (at each word's first piece; each word tokenized alone, as in training)."""
        from nlpkit.data.token_tags import word_tag_names
        from nlpkit.text.alignment import align_words, split_words, word_predictions

        words, offsets = zip(*(split_words(text) for text in texts)) if texts else ((), ())
        aligned = align_words(self.packer.tokenizer, list(words), self.seq_length)
        pieces = run_in_batches(self.model.predict_outputs, len(aligned.row_sentence),
                                lambda start, stop: {k: v[start:stop] for k, v in aligned.inputs.items()}, batch_size)
        names = self.head["encoding"]["names"]
        return {"texts": list(texts), "words": list(words), "offsets": list(offsets),
                "tags": word_tag_names(aligned, pieces["label"], names),
                "probabilities": word_predictions(aligned, pieces["probabilities"], 0.0),
                "scheme": self.head["encoding"].get("scheme", "iob2")}

    def head_outputs(self, texts, pairs=None, batch_size=DEFAULT_BATCH_SIZE, on_batch=None):
        """The model's uncalibrated head outputs (NumPy), from which `model.outputs_from_head` makes both
        the calibrated outputs and the raw ones (classifiers only)."""
        compute = lambda batch: self.model.head_outputs(self.pack(*batch))  # noqa: E731
        return run_in_batches(compute, len(texts), _slices(texts, pairs), batch_size, on_batch)
