"""Fine-tuning recipes of the tasks beyond single-label classification, and the task registry.

`get_task(name)` -> a `Task` with what finetune / evaluate need: read a labelled file, fit the target
encoding on training data, build the model (`nlpkit.models.tasks`) and its loss, turn examples into
model inputs and targets, calibrate on validation outputs, compute metrics, decode outputs into the
rows `nlpkit predict` writes (the same functions `nlpkit.models.inference.TASK_RECORDS` uses).
The single-label "classification" task stays with `nlpkit.models.classifier` / `nlpkit.training.
finetune`; it is listed here only so `check_task_head` knows its heads.
"""

from dataclasses import dataclass

import numpy as np

from nlpkit.data.labelled import split_validation
from nlpkit.errors import NlpkitError
from nlpkit.models import tasks as models
from nlpkit.models.inference import multilabel_records, regression_records
from nlpkit.training import task_metrics


@dataclass
class Prepared:
    """Model inputs (dict of int32 `[R, T]`), targets (None without labels) and, for tokens, the alignment."""

    inputs: dict
    targets: np.ndarray = None
    alignment: object = None


def _wrapped(model_class, wrap):
    return model_class if wrap is None else wrap(model_class)


class Task:
    """What a command needs of a task. Subclasses fill in every method; `heads` lists the accepted heads."""

    name = ""
    heads = ()

    def read(self, path, option=None, **options):
        """Examples (texts tasks) or TaggedSentences (tokens) of a labelled file; `option` ("--train", ...)
        names the input in errors and gives a hub dataset name its split (`nlpkit.data.hub`)."""
        raise NotImplementedError

    def fit_encoding(self, train, **options):
        """The target encoding learned from training examples (label names, scaler, tag names)."""
        raise NotImplementedError

    def load_encoding(self, config):
        raise NotImplementedError

    def prepare(self, examples, encoding, packer, with_targets=True):
        """`Prepared` inputs/targets; `packer` is a `nlpkit.data.labelled.TextPacker`."""
        raise NotImplementedError

    def build_model(self, encoder, encoding, wrap=None, **options):
        """The task's model; `wrap(model_class)` adapts the class first (`runtime.for_strategy`)."""
        raise NotImplementedError

    def loss(self):
        raise NotImplementedError

    def outputs(self, model, prepared, batch_size=64):
        """NumPy dict of `model.predict_outputs` over all rows."""
        from nlpkit.models.inference import run_in_batches

        inputs = prepared.inputs
        return run_in_batches(model.predict_outputs, len(inputs["input_word_ids"]),
                              lambda start, stop: {name: ids[start:stop] for name, ids in inputs.items()}, batch_size)

    def calibrate(self, outputs, prepared, encoding):
        """Encoding refitted on validation outputs (multi-label thresholds); others keep theirs."""
        return encoding

    def metrics(self, outputs, prepared, examples, encoding):
        raise NotImplementedError

    def decode(self, outputs, prepared, examples, encoding):
        """One JSON-able dict per example (what `predict` writes as a JSON line)."""
        raise NotImplementedError


class MultiLabelTask(Task):
    name, heads = "multi-label", ("classification",)

    def read(self, path, option=None, **options):
        from nlpkit.data.targets import read_multilabel_examples

        return read_multilabel_examples(path, option=option, **options)

    def fit_encoding(self, train, **_options):
        from nlpkit.data.targets import MultiLabelEncoding

        return MultiLabelEncoding.from_training(train)

    def load_encoding(self, config):
        from nlpkit.data.targets import MultiLabelEncoding

        return MultiLabelEncoding.from_config(config)

    def prepare(self, examples, encoding, packer, with_targets=True):
        targets = encoding.encode(examples) if with_targets else None
        return Prepared(packer.pack(examples.texts, examples.pairs), targets)

    def build_model(self, encoder, encoding, wrap=None, **options):
        return _wrapped(models.MultiLabelClassifier, wrap)(encoder, num_labels=len(encoding.names), thresholds=encoding.thresholds,
                                           **options)

    def loss(self):
        import keras

        return keras.losses.BinaryCrossentropy(from_logits=True)

    def calibrate(self, outputs, prepared, encoding):
        from nlpkit.data.targets import MultiLabelEncoding

        thresholds = task_metrics.fit_thresholds(outputs["probabilities"], prepared.targets)
        return MultiLabelEncoding(encoding.names, [float(t) for t in thresholds])

    def metrics(self, outputs, prepared, examples, encoding):
        return task_metrics.multilabel_report(outputs["probabilities"], prepared.targets, encoding.names,
                                              encoding.thresholds)

    def decode(self, outputs, prepared, examples, encoding):
        labels = (np.asarray(outputs["probabilities"]) >= np.asarray(encoding.thresholds)[None, :]).astype("int32")
        return multilabel_records(encoding.names, {**outputs, "labels": labels})


class RegressionTask(Task):
    """The model predicts in the label's units (`TextRegressor` holds the training scaler)."""

    name, heads = "regression", ("regression",)

    def read(self, path, option=None, **options):
        from nlpkit.data.targets import read_regression_examples

        options.pop("label_separator", None)
        return read_regression_examples(path, option=option, **options)

    def fit_encoding(self, train, **_options):
        from nlpkit.data.targets import TargetScaler

        return TargetScaler.fit(train.labels)

    def load_encoding(self, config):
        from nlpkit.data.targets import TargetScaler

        return TargetScaler.from_config(config)

    def prepare(self, examples, encoding, packer, with_targets=True):
        targets = encoding.encode(examples.labels) if with_targets else None
        return Prepared(packer.pack(examples.texts, examples.pairs), targets)

    def build_model(self, encoder, encoding, wrap=None, **options):
        return _wrapped(models.TextRegressor, wrap)(encoder, target_mean=encoding.mean, target_std=encoding.std, **options)

    def loss(self):
        import keras

        return keras.losses.MeanSquaredError()

    def metrics(self, outputs, prepared, examples, encoding):
        return task_metrics.regression_report(np.asarray(outputs["value"], "float64"),
                                              np.asarray(examples.labels, "float64"))

    def decode(self, outputs, prepared, examples, encoding):
        return regression_records(None, outputs)


class TokenClassificationTask(Task):
    name, heads = "token-classification", ("classification",)

    def read(self, path, option=None, *, scheme="iob2", tag_column=-1, **_columns):
        from nlpkit.data.token_tags import read_tagged

        return read_tagged(path, scheme=scheme, tag_column=tag_column)

    def fit_encoding(self, train, scheme="iob2", **_options):
        from nlpkit.data.token_tags import TagEncoding, tag_names

        return TagEncoding(tag_names(train), scheme)

    def load_encoding(self, config):
        from nlpkit.data.token_tags import TagEncoding

        return TagEncoding.from_config(config)

    def prepare(self, examples, encoding, packer, with_targets=True):
        from nlpkit.data.token_tags import tag_ids
        from nlpkit.text.alignment import align_words

        labels = tag_ids(examples, encoding.names) if with_targets else None
        aligned = align_words(packer.tokenizer, [s.tokens for s in examples], packer.seq_length, labels)
        return Prepared(aligned.inputs, aligned.labels, aligned)

    def from_texts(self, texts):
        """Untagged sentences of raw texts (words split as `split_words`), for `predict` on plain text."""
        from nlpkit.data.token_tags import TaggedSentence
        from nlpkit.text.alignment import split_words

        return [TaggedSentence(split_words(text)[0], [], text=text) for text in texts]

    def build_model(self, encoder, encoding, wrap=None, **options):
        options = {key: value for key, value in options.items() if key == "dropout_rate"}
        return _wrapped(models.TokenTagger, wrap)(encoder, num_tags=len(encoding.names), **options)

    def loss(self):
        return models.token_loss()

    def word_tags(self, outputs, prepared, encoding):
        """Predicted tag strings per sentence (words the tokenizer dropped get "O", or the first tag)."""
        from nlpkit.data.token_tags import word_tag_names

        return word_tag_names(prepared.alignment, outputs["label"], encoding.names)

    def metrics(self, outputs, prepared, examples, encoding):
        predicted, true = self.word_tags(outputs, prepared, encoding), [s.tags for s in examples]
        if encoding.scheme == "none":  # plain tags (POS): no entities
            return {"token_accuracy": task_metrics.token_accuracy(true, predicted)}
        return task_metrics.token_classification_report(true, predicted)

    def decode(self, outputs, prepared, examples, encoding):
        from nlpkit.data.token_tags import tagged_row
        from nlpkit.text.alignment import token_offsets

        rows = []
        for sentence, tags in zip(examples, self.word_tags(outputs, prepared, encoding)):
            text = sentence.text or " ".join(sentence.tokens)
            rows.append(tagged_row(text, sentence.tokens, token_offsets(text, sentence.tokens), tags,
                                   encoding.scheme != "none"))
        return rows


_TASKS = {task.name: task for task in (MultiLabelTask(), RegressionTask(), TokenClassificationTask())}
TASK_HEADS = {"classification": ("classification", "sngp"), **{name: task.heads for name, task in _TASKS.items()}}
TASKS = tuple(TASK_HEADS)


def task_datasets(config, packer):
    """`nlpkit.training.finetune`'s data for a task of this module: ({"train": (inputs, targets),
    "validation": ...}, encoding, skipped empty rows), read with the options of `FinetuneConfig`."""
    task = get_task(config.task)
    options = dict(text_column=config.text_column, pair_column=config.pair_column, label_column=config.label_column,
                   empty_rows=config.empty_rows, label_separator=config.label_separator)
    if config.task == "token-classification":
        options = {"scheme": config.tag_scheme}
    train = task.read(config.train, option="--train", **options)
    if config.validation:
        validation = task.read(config.validation, option="--validation", **options)
    else:
        train, validation = _split(train, config.validation_split, config.seed)
    encoding = task.fit_encoding(train, scheme=config.tag_scheme)
    packed = {}
    for split, examples in (("train", train), ("validation", validation)):
        prepared = task.prepare(examples, encoding, packer)
        packed[split] = (prepared.inputs, prepared.targets)
    skipped = sum(getattr(examples, "skipped_empty", 0) for examples in (train, validation))
    return packed, encoding, skipped


class _Sentences(list):
    """Tagged sentences with the `subset` of `Examples`, so `data.split_validation` splits them too."""

    def subset(self, indices):
        return _Sentences(self[i] for i in indices)


def _split(examples, fraction, seed):
    """`data.split_validation` of Examples or of a list of tagged sentences."""
    return split_validation(_Sentences(examples) if isinstance(examples, list) else examples, fraction, seed)


def get_task(name):
    """The `Task` of `--task NAME` (not "classification": that stays with TextClassifier)."""
    if name not in _TASKS:
        raise NlpkitError(f"--task {name!r} is not known", hint=f"use one of {', '.join(TASK_HEADS)}")
    return _TASKS[name]


def check_task_head(task, head=None):
    """The head to use for `task`: `head`, or the task's default when None; an impossible pair is an error."""
    if task not in TASK_HEADS:
        raise NlpkitError(f"--task {task!r} is not known", hint=f"use one of {', '.join(TASK_HEADS)}")
    heads = TASK_HEADS[task]
    if head is None:
        return heads[0]
    if head not in heads:
        raise NlpkitError(f"--task {task} does not take --head {head!r}",
                          hint=f"heads for {task}: {', '.join(heads)}")
    return head
