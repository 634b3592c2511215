"""Fine-tuning an encoder (model directory, pretraining run or preset) + a task head.

Tasks (`--task`): "classification" (TextClassifier, classification or SNGP head), and the recipes of
`nlpkit.training.tasks`: "multi-label", "regression", "token-classification". Every task trains in
the same loop below; the best evaluation is the highest validation accuracy for classification and
the lowest validation loss for the others.

`finetune(FinetuneConfig(...))` reads labelled data, packs it with the model's own tokenizer and
trains on the shared runtime (`nlpkit.training.runtime`): strategy, precision, jit, gradient
accumulation, AdamW with warm-up and decay, checkpoints with exact resume, TensorBoard. It
evaluates every `eval_every` updates (default: once per epoch), keeps the best evaluation by
validation accuracy (early stopping after `patience` evaluations without gain), and makes OUTPUT a
model directory whose config.json records the head, the label names and the sequence length, so
evaluate / predict / export need only that folder. With `calibrate` (the default) a temperature
(classification head) or mean-field factor (SNGP) is fitted on the validation split after training
and kept in the model (config.json), with its report under the head's "calibration".

OUTPUT is the run directory while it trains (finetune_config.json, checkpoints/, logs/,
best.weights.npz); running the same command on an interrupted OUTPUT resumes it.
"""

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nlpkit.training import runtime  # imports TensorFlow before Keras
from nlpkit.data import labelled as data
from nlpkit.errors import NlpkitError
from nlpkit.io import atomic_file, check_at_least, disk_errors
from nlpkit.training import checkpoints

import keras  # noqa: E402  (after the runtime's TensorFlow import)

RUN_CONFIG = "finetune_config.json"
BEST_WEIGHTS = "best.weights.npz"


@dataclass
class FinetuneConfig:
    train: str
    output: str
    model: str = None
    preset: str = None
    vocab: str = None
    validation: str = None
    validation_split: float = 0.1
    task: str = "classification"
    head: str = None  # None: the task's default head (`nlpkit.training.tasks.check_task_head`)
    label_separator: str = None  # multi-label cells "a|b" (default: JSON lists or one label)
    tag_scheme: str = "iob2"  # token-classification files: iob2 | iob1 | none
    pooling: str = None  # None: the head's default (TextClassifier)
    epochs: int = 3
    max_steps: int = None  # None: epochs x updates per epoch
    batch_size: int = 32
    seq_length: int = 128
    learning_rate: float = 5e-5
    warmup_steps: int = None  # None: warmup_fraction of the updates
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    accumulation_steps: int = 1
    eval_every: int = None  # None: once per epoch
    checkpoint_every: int = None  # None: at every evaluation
    keep_checkpoints: int = 2
    patience: int = 2
    class_weights: bool = False
    text_column: str = "text"
    pair_column: str = None
    label_column: str = "label"
    empty_rows: str = "skip"
    lower_case: bool = True
    strategy: str = "auto"
    tpu: str = None
    precision: str = "float32"
    jit: bool = False
    seed: int = 0
    overwrite: bool = False
    calibrate: bool = True  # fit a temperature / mean-field factor on the validation split after training
    bucketing: bool = True  # training batches of similar lengths, cut to a few lengths (`nlpkit.data.buckets`)

    def identity(self):
        """The fields a resumed run must share with the interrupted one (calibration follows training)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("output", "tpu", "strategy", "overwrite", "calibrate")}


@dataclass(frozen=True)
class _Plan:
    """The run's length in updates, from the config and the number of training examples."""

    steps_per_epoch: int
    max_steps: int
    warmup_steps: int
    eval_every: int
    checkpoint_every: int


def _plan(config, train_examples):
    steps_per_epoch = max(math.ceil(train_examples / config.batch_size), 1)
    max_steps = config.max_steps or config.epochs * steps_per_epoch
    warmup = config.warmup_steps if config.warmup_steps is not None else int(config.warmup_fraction * max_steps)
    if warmup > max_steps:
        raise NlpkitError(f"--warmup-steps {warmup} exceeds the run's {max_steps} updates")
    eval_every = config.eval_every or steps_per_epoch
    return _Plan(steps_per_epoch, max_steps, warmup, eval_every, config.checkpoint_every or eval_every)


def _check_options(config):
    from nlpkit.data.token_tags import SCHEMES
    from nlpkit.layers.heads import POOLINGS
    from nlpkit.training.tasks import check_task_head

    config.head = check_task_head(config.task, config.head)
    for option, value, choices in (("--pooling", config.pooling, POOLINGS), ("--tag-scheme", config.tag_scheme, SCHEMES)):
        if value is not None and value not in choices:
            raise NlpkitError(f"{option} {value!r} is not one of {', '.join(choices)}")
    for option, value, task in (("--class-weights", config.class_weights, "classification"),
                                ("--label-separator", config.label_separator, "multi-label")):
        if value and config.task != task:
            raise NlpkitError(f"{option} is for --task {task}, not {config.task}")
    if config.pooling is not None and config.task == "token-classification":
        raise NlpkitError("--pooling is for heads that pool the text, not --task token-classification")
    runtime.check_precision(config.precision)
    runtime.check_learning_rate(config.learning_rate)
    check_at_least(1, **{"--epochs": config.epochs, "--batch-size": config.batch_size, "--max-steps": config.max_steps,
                         "--accumulation-steps": config.accumulation_steps, "--eval-every": config.eval_every,
                         "--checkpoint-every": config.checkpoint_every, "--keep-checkpoints": config.keep_checkpoints})
    check_at_least(0, **{"--warmup-steps": config.warmup_steps, "--weight-decay": config.weight_decay})
    if not 0 <= config.warmup_fraction <= 1:
        raise NlpkitError(f"--warmup-fraction must be between 0 and 1, got {config.warmup_fraction}")
    if config.batch_size % config.accumulation_steps:
        raise NlpkitError(
            f"--batch-size {config.batch_size} is not a multiple of --accumulation-steps {config.accumulation_steps}"
        )


def _is_model_dir(path):
    from nlpkit.models.model_dir import CONFIG_FILE

    return (Path(path) / CONFIG_FILE).is_file()


def _check_output(config):
    """Fail before training on an output that is not ours, or is a finished model without --overwrite
    (an interrupted run is resumed, or refused by `open_run_dir` if it is another run)."""
    from nlpkit.io import check_not_input, check_replaceable, check_writable

    output = Path(config.output)
    check_not_input(output, {"--train": config.train, "--validation": config.validation, "--model": config.model,
                             "--vocab": config.vocab})
    if not (output / RUN_CONFIG).is_file() or _is_model_dir(output):
        check_replaceable(output, config.overwrite, flag="--overwrite", kind="a model directory",
                          is_ours=lambda path: _is_model_dir(path) or (path / RUN_CONFIG).is_file())
    check_writable(output)


def _datasets(config, packer):
    """({"train": (inputs, targets), "validation": ...}, encoding, skipped empty rows); the encoding is the
    label names for classification, the task's encoding (`nlpkit.training.tasks`) otherwise."""
    if config.task != "classification":
        from nlpkit.training.tasks import task_datasets

        return task_datasets(config, packer)
    columns = dict(text_column=config.text_column, pair_column=config.pair_column,
                   label_column=config.label_column, empty_rows=config.empty_rows)
    train = data.read_examples(config.train, option="--train", **columns)
    if config.validation:
        validation = data.read_examples(config.validation, option="--validation", **columns)
    else:
        train, validation = data.split_validation(train, config.validation_split, config.seed)
    names = data.label_names(train.labels)
    packed = {}
    for split, examples in (("train", train), ("validation", validation)):
        packed[split] = (packer.pack(examples.texts, examples.pairs), data.label_ids(examples, names))
    return packed, names, train.skipped_empty + validation.skipped_empty


def _class_weights(labels, num_classes):
    counts = np.bincount(labels, minlength=num_classes).astype("float64")
    return np.array([len(labels) / (num_classes * c) if c else 0.0 for c in counts], "float32")


def _train_dataset(config, x, y, micro_batch, skip_batches, weights, bucketing):
    """Infinite (features, labels[, weights]) micro-batches, from `skip_batches` on, in the stateless
    order of `buckets.epoch_batches`; with --bucketing, length-grouped and cut to a few lengths."""
    from nlpkit.data import buckets

    columns = (x, y) if weights is None else (x, y, weights[y])
    if not bucketing:
        return buckets.epoch_batches(columns, micro_batch, int(config.seed), skip_batches)
    compiled = config.jit or keras.backend.backend() == "jax"  # one program per shape
    cut = (True, config.task == "token-classification", False)  # inputs, per-token targets
    return buckets.epoch_batches(columns, micro_batch, int(config.seed), skip_batches,
                                 lengths=buckets.row_lengths(x["input_mask"]),
                                 boundaries=buckets.bucket_boundaries(config.seq_length, compiled), cut=cut)


def _bucketing(config, model):
    """--bucketing, except on a TPU (one static shape: every other shape is another XLA program) and
    for encoders whose attention is not the default softmax one: the efficient attentions' masks
    need the sequence length when the step is traced, and bucketed batches leave it open."""
    attention = getattr(getattr(model, "encoder", None), "attention_type", "multi_head")
    return config.bucketing and config.tpu is None and config.strategy != "tpu" and attention == "multi_head"


def _monitor(task):
    """(logged name, sign) of the validation score the keeper maximises: accuracy, or minus the loss."""
    return ("val_accuracy", 1.0) if task == "classification" else ("val_loss", -1.0)


class _BestKeeper(keras.callbacks.Callback):
    """At every evaluation: keep the weights of the best validation score (`_monitor`; RUN/best.weights.npz)
    and stop after `patience` evaluations without gain. Its state travels in the checkpoints."""

    def __init__(self, run, patience, chief, state, task="classification"):
        super().__init__()
        self.run, self.patience, self.chief = Path(run), patience, chief
        self.monitor, self.sign = _monitor(task)
        self.best = state.get("best", -math.inf)
        self.best_step = state.get("best_step")
        self.wait = state.get("wait", 0)
        self.evaluations = state.get("evaluations", [])

    def state(self):
        return {"best": self.best, "best_step": self.best_step, "wait": self.wait, "evaluations": self.evaluations}

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor not in (logs or {}) or not math.isfinite(float(logs["loss"])):
            return
        step = epoch + 1
        self.evaluations.append({"step": step, **{k: float(v) for k, v in logs.items()}})
        score = self.sign * float(logs[self.monitor])
        if score > self.best:
            self.best, self.best_step, self.wait = score, step, 0
            if self.chief:
                with atomic_file(self.run / BEST_WEIGHTS) as tmp, open(tmp, "wb") as handle:
                    np.savez(handle, **checkpoints.arrays_of(checkpoints.model_keys(self.model)))
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True

    def restore_best(self, model):
        if self.best_step is not None and (self.run / BEST_WEIGHTS).is_file():
            arrays = checkpoints.load_arrays(self.run / BEST_WEIGHTS)
            checkpoints.assign(arrays, checkpoints.model_keys(model), self.run / BEST_WEIGHTS)


def _covariance_reset(steps_per_epoch):
    """SNGP: the GP's precision matrix must describe one pass over the data, not a running mix of
    all epochs' features: reset it at the start of every data epoch (a Keras epoch is one update)."""
    from nlpkit.layers.gaussian_process import ResetCovarianceCallback

    class EpochCovarianceReset(ResetCovarianceCallback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch % steps_per_epoch == 0:
                super().on_epoch_begin(epoch, logs)

    return EpochCovarianceReset()


def _describe_step(config):
    def describe(step, logs, seconds):
        return {"step": step, **{k: float(v) for k, v in logs.items()}, "examples_per_s": config.batch_size / seconds}

    return describe


def _load_encoder(config, strategy):
    """`runtime.start_encoder` under --precision and the strategy."""
    with runtime.precision_policy(config.precision), runtime.scope(strategy):
        return runtime.start_encoder(config.model, config.preset, config.vocab, config.lower_case)


def _model_recipe(config, encoder, encoding, strategy):
    """(model builder, loss, metrics) of the task; the model class is patched for the strategy."""
    wrap = lambda model_class: runtime.for_strategy(model_class, strategy)  # noqa: E731
    if config.task == "classification":
        from nlpkit.models.classifier import TextClassifier

        def build():
            return wrap(TextClassifier)(encoder, num_classes=len(encoding), head=config.head, pooling=config.pooling)

        return build, keras.losses.SparseCategoricalCrossentropy(from_logits=True), [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    from nlpkit.training.tasks import get_task

    task = get_task(config.task)
    options = {} if config.pooling is None else {"pooling": config.pooling}
    return lambda: task.build_model(encoder, encoding, wrap=wrap, **options), task.loss(), []


def _build_classifier(config, strategy, encoder, train_x, encoding, plan):
    """The compiled task model (its optimizer built), under --precision and the strategy."""
    build, loss, model_metrics = _model_recipe(config, encoder, encoding, strategy)
    with runtime.precision_policy(config.precision):
        # Created outside the strategy's scope, built inside it: see `nlpkit.training.pretrain._build_model`.
        model = build()
    with runtime.precision_policy(config.precision), runtime.scope(strategy):
        model({name: ids[:1] for name, ids in train_x.items()})  # build, so the optimizer sees every variable
        optimizer = runtime.build_optimizer(
            model, learning_rate=config.learning_rate, total_steps=plan.max_steps, warmup_steps=plan.warmup_steps,
            weight_decay=config.weight_decay, clip_norm=config.clip_norm,
            accumulation_steps=config.accumulation_steps, precision=config.precision)
        model.compile(optimizer=optimizer, loss=loss, metrics=model_metrics, jit_compile=config.jit)
    return model


def finetune(config, *, on_start=None, on_step=None):
    """Train (or resume) and save a classifier; returns a summary dict (history, best, paths, counts).

    Hooks for progress display: `on_start(total_steps, start_step)`, `on_step(step, record)`.
    """
    _check_options(config)
    strategy = runtime.strategy_for_backend(config.strategy, config.tpu)
    chief, output = runtime.is_chief(strategy), Path(config.output)
    if chief:  # the other workers find RUN being written by the chief
        _check_output(config)
    described = runtime.describe_strategy(strategy, config.batch_size)
    keras.utils.set_random_seed(config.seed)
    encoder, encoder_config, vocab, lower_case = _load_encoder(config, strategy)
    packed, encoding, skipped = _datasets(config, data.TextPacker(vocab, config.seq_length, lower_case=lower_case))
    runtime.check_seq_length_fits(config.seq_length, encoder)  # after the data: its errors come first
    (train_x, train_y), (_, val_y) = packed["train"], packed["validation"]
    plan = _plan(config, len(train_y))
    model = _build_classifier(config, strategy, encoder, train_x, encoding, plan)
    existed = output.exists()
    rules = dict(config_file=RUN_CONFIG, kind="a model directory", command="nlpkit finetune", finished=_is_model_dir)
    with runtime.open_run_dir(config, overwrite=config.overwrite, chief=chief, **rules) as (work, last):
        state = runtime.restore_checkpoint(last, model, model.optimizer) if last is not None else {"step": 0}
        keeper = _BestKeeper(work, config.patience, chief, state, config.task)
        if on_start is not None:
            on_start(plan.max_steps, state["step"])
        if state["step"] < plan.max_steps and not state.get("stopped"):
            failure = _train(config, plan, model, strategy, packed, encoding, keeper, work, chief, state, on_step)
            if failure is not None:
                if chief and last is None and work == output and not existed:
                    shutil.rmtree(work, ignore_errors=True)  # nothing to resume: leave nothing behind
                raise failure
        calibration = None
        if chief:
            keeper.restore_best(model)
            if config.calibrate:
                calibration, encoding = _calibrate(config, model, packed["validation"], encoding)
            runtime.publish_model_dir(model, encoder_config, vocab, lower_case, work,
                                      head=_head_record(config, encoding, calibration))
    monitor, sign = _monitor(config.task)
    best = max(keeper.evaluations, key=lambda row: sign * row.get(monitor, -sign * math.inf)) if keeper.evaluations else {}
    return {"output": str(output), "labels": _label_names(encoding), "train_examples": len(train_y), "validation_examples": len(val_y),
            "skipped_empty": skipped, "history": keeper.evaluations, "best": best, "start_step": state["step"],
            "steps": plan.max_steps, "strategy": described, "calibration": calibration, "config": asdict(config)}


def _label_names(encoding):
    """Label (or tag) names of the task's encoding; None for regression."""
    return encoding if isinstance(encoding, list) else getattr(encoding, "names", None)


def _head_record(config, encoding, calibration):
    """config.json's "head": what evaluate / predict / export need besides the Keras model."""
    head = {"task": config.task, "type": config.head, "labels": _label_names(encoding),
            "seq_length": config.seq_length, "text_column": config.text_column, "pair_column": config.pair_column,
            "label_column": config.label_column, "calibration": calibration}
    if config.task != "classification":
        head.update(encoding=encoding.get_config(), label_separator=config.label_separator)
    return head


def _calibrate(config, model, validation, encoding):
    """(report, encoding) of the post-hoc calibration fitted on the validation split: a temperature or
    mean-field factor for classification (`nlpkit.training.calibration`), per-label thresholds for
    multi-label (kept in the model and the encoding); {"skipped": why} when there is nothing to fit."""
    from nlpkit.models.inference import run_in_batches
    from nlpkit.training.calibration import calibrate, calibrate_thresholds

    inputs, labels = validation
    if config.task not in ("classification", "multi-label"):
        return None, encoding
    if len(labels) == 0:
        return {"skipped": "no validation split"}, encoding
    if config.task == "multi-label":
        return calibrate_thresholds(model, inputs, labels, encoding, config.batch_size)
    head_outputs = run_in_batches(model.head_outputs, len(labels),
                                  lambda start, stop: {name: ids[start:stop] for name, ids in inputs.items()},
                                  config.batch_size)
    return calibrate(model, head_outputs, labels), encoding


def _train(config, plan, model, strategy, packed, names, keeper, work, chief, state, on_step):
    """Run the remaining updates; returns the NlpkitError of a NaN/Inf loss, or None."""
    (train_x, train_y), validation = packed["train"], packed["validation"]
    micro_batch = config.batch_size // config.accumulation_steps
    weights = _class_weights(train_y, len(names)) if config.class_weights else None
    dataset = _train_dataset(config, train_x, train_y, micro_batch, state["step"] * config.accumulation_steps, weights,
                             bucketing=_bucketing(config, model))
    monitor = runtime.StepMonitor(
        run=work, optimizer=model.optimizer, describe=_describe_step(config), max_steps=plan.max_steps,
        checkpoint_every=plan.checkpoint_every, keep=config.keep_checkpoints, chief=chief, on_step=on_step,
        state=lambda: {**keeper.state(), "stopped": bool(model.stop_training)},
    )
    # The keeper first: a checkpoint taken after an evaluation holds the keeper's new state.
    callbacks = [keeper, monitor]
    if config.head == "sngp":
        callbacks.insert(0, _covariance_reset(plan.steps_per_epoch))
    with disk_errors(work):
        runtime.fit_steps(model, dataset, strategy=strategy, start_step=state["step"], max_steps=plan.max_steps,
                          accumulation_steps=config.accumulation_steps, callbacks=callbacks,
                          validation_data=validation, validation_freq=plan.eval_every,
                          validation_batch_size=config.batch_size)
    try:
        monitor.raise_if_failed("lower --learning-rate, or use --precision float32 / mixed_bfloat16")
    except NlpkitError as failure:
        return failure
    return None

