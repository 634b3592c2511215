"""Fine-tuning a text classifier: encoder (model directory, pretraining run or preset) + head.

`finetune(FinetuneConfig(...))` reads labelled data, packs it with the model's own tokenizer,
trains with AdamW + warm-up under `keras.Model.fit` (any backend), keeps the best epoch by
validation accuracy (early stopping), and writes a model directory whose config.json records the
head, the label names and the sequence length, so evaluate / predict / export need only that folder.
"""

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from nlpkit.errors import NlpkitError
from nlpkit.training import classification_data as data


@dataclass
class FinetuneConfig:
    train: str
    output: str
    model: str = None
    preset: str = None
    vocab: str = None
    validation: str = None
    validation_split: float = 0.1
    head: str = "classification"
    pooling: str = None  # None: the head's default (TextClassifier)
    epochs: int = 3
    batch_size: int = 32
    seq_length: int = 128
    learning_rate: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2
    class_weights: bool = False
    text_column: str = "text"
    pair_column: str = None
    label_column: str = "label"
    empty_rows: str = "skip"
    lower_case: bool = True
    seed: int = 0
    overwrite: bool = False


def start_encoder(model=None, preset=None, vocab=None, lower_case=True):
    """(encoder, encoder config, vocab path, lower_case) from a model directory or a preset.

    A model directory may hold an encoder (build / convert / pretrain) or a classifier, whose
    encoder is then taken (fine-tuning again from a fine-tuned model).
    """
    from nlpkit.encoders.presets import build_encoder, encoder_config, load_config

    if (preset is None) == (model is None):
        raise NlpkitError("pass exactly one of --model and --preset")
    if preset is not None:
        if vocab is None:
            from nlpkit.data.bundled import bert_vocab_path

            vocab = bert_vocab_path()
        encoder = build_encoder(load_config(preset))
        return encoder, encoder_config(encoder), str(vocab), lower_case
    from nlpkit.encoders.model_dir import load_model, tokenizer_assets

    loaded = load_model(model)
    encoder = getattr(loaded, "encoder", loaded)
    assets = tokenizer_assets(model) or {}
    vocab = vocab or assets.get("path")
    if vocab is None:
        raise NlpkitError(f"--model {model} has no tokenizer assets", hint="pass --vocab")
    return encoder, encoder_config(encoder), str(vocab), assets.get("lower_case", lower_case)


def _check_choices(config):
    from nlpkit.layers.heads import POOLINGS
    from nlpkit.models.classifier import HEADS

    for option, value, choices in (("--head", config.head, HEADS), ("--pooling", config.pooling, POOLINGS)):
        if value is not None and value not in choices:
            raise NlpkitError(f"{option} {value!r} is not one of {', '.join(choices)}")


def _datasets(config, packer):
    train = data.read_examples(config.train, text_column=config.text_column, pair_column=config.pair_column,
                               label_column=config.label_column, empty_rows=config.empty_rows)
    if config.validation:
        validation = data.read_examples(config.validation, text_column=config.text_column,
                                        pair_column=config.pair_column, label_column=config.label_column,
                                        empty_rows=config.empty_rows)
    else:
        train, validation = data.split_validation(train, config.validation_split, config.seed)
    names = data.label_names(train.labels)
    packed = {}
    for split, examples in (("train", train), ("validation", validation)):
        packed[split] = (packer.pack(examples.texts, examples.pairs), data.label_ids(examples, names))
    return packed, names, train.skipped_empty + validation.skipped_empty


def _class_weights(labels, num_classes):
    counts = np.bincount(labels, minlength=num_classes).astype("float64")
    return {i: float(len(labels) / (num_classes * c)) if c else 0.0 for i, c in enumerate(counts)}


def _callbacks(config, on_epoch):
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=config.patience,
                                      restore_best_weights=True),
        _EpochReporter(on_epoch),
    ]
    if config.head == "sngp":
        from nlpkit.layers.gaussian_process import ResetCovarianceCallback

        # The GP's precision matrix must describe one pass over the data, not a running mix of
        # all epochs' features: reset it at the start of every epoch.
        callbacks.insert(0, ResetCovarianceCallback())
    return callbacks


class _EpochReporter(keras.callbacks.Callback):
    def __init__(self, on_epoch):
        super().__init__()
        self.on_epoch = on_epoch
        self.history = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "seconds": time.perf_counter() - self._started,
               **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(row)
        if self.on_epoch:
            self.on_epoch(row)


def finetune(config, *, on_start=None, on_epoch=None, on_batch=None):
    """Train and save a classifier; returns a summary dict (history, best epoch, paths, counts).

    Hooks for progress display: `on_start(total_steps)`, `on_epoch(row)`, `on_batch(logs)`.
    """
    from nlpkit.encoders.model_dir import save_model_dir
    from nlpkit.io import check_writable
    from nlpkit.models.classifier import TextClassifier
    from nlpkit.training.optimization import create_optimizer

    output = Path(config.output)
    if output.exists() and not config.overwrite:
        raise NlpkitError(f"--output {output} already exists", hint="pass --overwrite or choose another folder")
    check_writable(output)  # fail before training, not after
    _check_choices(config)
    keras.utils.set_random_seed(config.seed)
    encoder, encoder_config, vocab, lower_case = start_encoder(config.model, config.preset, config.vocab,
                                                               config.lower_case)
    packer = data.TextPacker(vocab, config.seq_length, lower_case=lower_case)
    packed, names, skipped = _datasets(config, packer)
    (train_x, train_y), (val_x, val_y) = packed["train"], packed["validation"]

    model = TextClassifier(encoder, num_classes=len(names), head=config.head, pooling=config.pooling)
    steps = config.epochs * int(np.ceil(len(train_y) / config.batch_size))
    model({name: ids[:1] for name, ids in train_x.items()})  # build, so the optimizer sees every variable
    optimizer = create_optimizer(model.trainable_variables, learning_rate=config.learning_rate, total_steps=steps,
                                 warmup_steps=int(config.warmup_fraction * steps), weight_decay=config.weight_decay)
    # Built before fit: slots created inside fit's first trace make TensorFlow trace the step twice.
    optimizer.build(model.trainable_variables)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    callbacks = _callbacks(config, on_epoch)
    reporter = callbacks[-1]
    if on_batch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: on_batch(logs)))
    if on_start is not None:
        on_start(steps)
    with warnings.catch_warnings():
        # The encoder's pooler is unused (the heads pool the CLS token themselves): Keras warns that
        # it gets no gradient.
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
        model.fit(train_x, train_y, validation_data=(val_x, val_y), epochs=config.epochs,
                  batch_size=config.batch_size, shuffle=True, verbose=0, callbacks=callbacks,
                  class_weight=_class_weights(train_y, len(names)) if config.class_weights else None)
    history = reporter.history
    head = {"task": "classification", "type": config.head, "labels": names, "seq_length": config.seq_length,
            "text_column": config.text_column, "pair_column": config.pair_column,
            "label_column": config.label_column}
    save_model_dir(model, encoder_config, vocab, output, head=head, lower_case=lower_case,
                   overwrite=config.overwrite)
    best = max(history, key=lambda row: row.get("val_accuracy", 0.0)) if history else {}
    return {"output": str(output), "labels": names, "train_examples": len(train_y),
            "validation_examples": len(val_y), "skipped_empty": skipped, "history": history, "best": best,
            "config": asdict(config)}
