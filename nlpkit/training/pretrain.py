"""Masked-LM pretraining: text -> packed, dynamically masked batches -> encoder + tied MaskedLM head.

TensorFlow-only module for the data (tf.data) and the strategies; the model and the training step
are Keras 3 and also run under `KERAS_BACKEND=jax` (with the cpu/auto strategy).

`--data` is read by `nlpkit.data.corpus` (raw text, csv/json(l)/parquet tables, or `nlpkit
tokenize` shards; sentence pairs for the next-sentence ("nsp") or sentence-order ("sop") objective,
which adds a 2-way head on the pooled output: the loss is masked-LM + that cross-entropy).

A run directory RUN holds:
    RUN/pretrain_config.json         the resolved config (a second run must match it to resume)
    RUN/checkpoints/step-000100/     variables.npz (model + optimizer) and state.json, the last K kept
    RUN/logs/                        TensorBoard scalars: loss, mlm_accuracy, learning_rate, tokens_per_s
                                     (and sentence_accuracy with --objective nsp/sop)
    RUN/config.json, model.weights.h5, vocab.txt   the model directory, written at the end
Running the same command on an interrupted RUN resumes from its last checkpoint with the same step,
optimizer state, data position and random state, so it ends with the same weights.
"""

import dataclasses
import math

import numpy as np

from nlpkit._tf import import_tensorflow

tf = import_tensorflow()  # before Keras, which would import TensorFlow with its log noise

import keras  # noqa: E402

from nlpkit.data.corpus import OBJECTIVE_LABELS, check_corpus, data_kind, masked_batches  # noqa: E402
from nlpkit.data.records import read_manifest  # noqa: E402
from nlpkit.errors import NlpkitError  # noqa: E402
from nlpkit.io import check_at_least, disk_errors  # noqa: E402

from nlpkit.training import runtime  # noqa: E402
from nlpkit.training.runtime import check_learning_rate, check_seq_length_fits  # noqa: E402

RUN_CONFIG = "pretrain_config.json"
DEFAULT_SEQ_LENGTH = 128


@dataclasses.dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (saved as RUN/pretrain_config.json)."""

    data: str
    output: str
    preset: str | None = None
    model: str | None = None
    vocab: str | None = None
    lower_case: bool = True
    text_column: str | None = None
    max_steps: int = 1000
    batch_size: int = 32
    seq_length: int | None = None  # default: the shards' length, else DEFAULT_SEQ_LENGTH
    objective: str = "none"
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    whole_word: bool = False
    short_seq_prob: float = 0.1
    learning_rate: float = 1e-4
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    accumulation_steps: int = 1
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    strategy: str = "auto"
    tpu: str | None = None
    precision: str = "float32"
    jit: bool = False
    seed: int = 0

    def resolved(self):
        """A copy with the defaults that depend on other fields filled in."""
        warmup = self.warmup_steps if self.warmup_steps is not None else max(self.max_steps // 10, 0)
        seq_length = self.seq_length
        if seq_length is None and data_kind(self.data) == "shards":
            seq_length = read_manifest(self.data).get("seq_length")
        seq_length = seq_length or DEFAULT_SEQ_LENGTH
        return dataclasses.replace(self, warmup_steps=warmup, seq_length=seq_length)

    def identity(self):
        """The fields a resumed run must share with the interrupted one."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("output", "tpu", "strategy")}


def build_dataset(config, tokenizer, vocab, micro_batch, skip_batches, streams=False):
    """Infinite dataset of Keras (features, targets, sample weights) micro-batches, from `skip_batches` on.

    Targets and weights are `masked_lm_ids` and `masked_lm_weights`; with a sentence objective,
    dicts of those ("masked_lm") and of the sentence label with weight 1 ("sentence").
    """
    dataset = masked_batches(config, tokenizer, vocab, micro_batch, skip_batches, streams=streams)
    label = OBJECTIVE_LABELS[config.objective]
    return dataset.map(lambda features: _features_targets_weights(features, label)).prefetch(tf.data.AUTOTUNE)


def _features_targets_weights(features, label=None):
    """Keras' (x, y, sample_weight) from a masked batch (`label`: the sentence label feature, if any)."""
    from nlpkit.models.pretrainer import MLM_OUTPUT, SENTENCE_OUTPUT

    features = dict(features)
    targets, weights = features.pop("masked_lm_ids"), features.pop("masked_lm_weights")
    if label is None:
        return features, targets, weights
    sentence = features.pop(label)
    return (
        features,
        {MLM_OUTPUT: targets, SENTENCE_OUTPUT: sentence},
        {MLM_OUTPUT: weights, SENTENCE_OUTPUT: tf.ones_like(sentence, tf.float32)},
    )


# --------------------------------------------------------------------------------------------------
# Model


def _check_vocab(vocab, encoder, vocab_path):
    if len(vocab) != encoder.vocab_size:
        raise NlpkitError(
            f"--vocab {vocab_path} has {len(vocab)} tokens but the model's vocab_size is {encoder.vocab_size}",
            hint="use the vocab the model was built with",
        )


# --------------------------------------------------------------------------------------------------
# The run


def _step_describer(config):
    """`StepMonitor`'s record of one update: loss, accuracies, tokens/s."""
    tokens_per_step = config.batch_size * config.seq_length

    def describe(step, logs, seconds):
        # Keras prefixes the metrics with the output name when the model has a sentence head.
        accuracy = logs.get("sparse_categorical_accuracy", logs.get("masked_lm_sparse_categorical_accuracy"))
        record = {"step": step, "loss": float(logs["loss"]), "mlm_accuracy": math.nan if accuracy is None else float(accuracy),
                  "tokens_per_s": tokens_per_step / seconds}
        if "sentence_sparse_categorical_accuracy" in logs:
            record["sentence_accuracy"] = float(logs["sentence_sparse_categorical_accuracy"])
        return record

    return describe


def _build_model(config, strategy, micro_batch):
    """(model compiled with its optimizer, encoder, encoder config, vocab, vocab path, lower_case, memory)."""
    from nlpkit.text.vocab import load_wordpiece_vocab
    from nlpkit.models.pretrainer import (
        MLM_OUTPUT, SENTENCE_OUTPUT, MaskedLMPretrainer, masked_lm_loss, pretraining_losses,
    )
    from nlpkit.models.recurrent_memory import RecurrentMemoryPretrainer, carries_memory
    from nlpkit.data.segments import check_memory_run

    with runtime.precision_policy(config.precision):
        with runtime.scope(strategy):
            encoder, encoder_cfg, vocab_path, lower_case = runtime.start_encoder(
                config.model, config.preset, config.vocab, config.lower_case)
            vocab = load_wordpiece_vocab(vocab_path)
            _check_vocab(vocab, encoder, vocab_path)
            check_seq_length_fits(config.seq_length, encoder)
        # Created outside the scope on purpose: a Keras model created under a strategy runs a
        # "symbolic build" at fit time that reduces the whole input dict with strategy.reduce,
        # which fails with several replicas (Keras 3.15). Created outside, it trains under the
        # strategy active when fit runs (inside the scope below); its variables are made there too.
        sentence_classes = 0 if config.objective == "none" else 2
        memory = carries_memory(encoder)  # Transformer-XL: each step continues the previous one's segments
        if memory:
            check_memory_run(config, data_kind(config.data), runtime.replicas(strategy))
            model = RecurrentMemoryPretrainer(encoder, batch_size=micro_batch)
        else:
            model = runtime.for_strategy(MaskedLMPretrainer, strategy)(encoder, sentence_classes=sentence_classes)
        with runtime.scope(strategy):
            model(_dummy_features(config))
            optimizer = runtime.build_optimizer(
                model, learning_rate=config.learning_rate, total_steps=config.max_steps,
                warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, clip_norm=config.clip_norm,
                accumulation_steps=config.accumulation_steps, precision=config.precision,
            )
            accuracy = ["sparse_categorical_accuracy"]
            model.compile(
                optimizer=optimizer,
                loss=pretraining_losses() if sentence_classes else masked_lm_loss(),
                weighted_metrics={MLM_OUTPUT: accuracy, SENTENCE_OUTPUT: accuracy} if sentence_classes else accuracy,
                jit_compile=config.jit,
            )
    return model, encoder, encoder_cfg, vocab, vocab_path, lower_case, memory


def run_pretraining(config, *, overwrite=False, on_step=None):
    """Train (or resume) the run described by `config`; returns a summary dict.

    `on_step(step, loss, tokens_per_s)` is called after every update (the CLI's progress bar).
    """
    from nlpkit.text.wordpiece import WordPieceTokenizer

    config = config.resolved()
    _check_options(config)
    strategy = runtime.strategy_for_backend(config.strategy, config.tpu)
    described = runtime.describe_strategy(strategy, config.batch_size)
    micro_batch = config.batch_size // config.accumulation_steps
    keras.utils.set_random_seed(config.seed)
    model, encoder, encoder_cfg, vocab, vocab_path, lower_case, memory = _build_model(config, strategy, micro_batch)
    tokenizer = WordPieceTokenizer(vocab, lower_case=lower_case)
    check_corpus(config, tokenizer, vocab, micro_batch, vocab_path, streams=memory)
    # Only now, with the inputs known to be usable, is the run directory created or resumed.
    chief = runtime.is_chief(strategy)
    rules = dict(config_file=RUN_CONFIG, kind="a pretraining run", command="nlpkit pretrain")
    with runtime.open_run_dir(config, overwrite=overwrite, chief=chief, **rules) as (work, last):
        start_step = runtime.restore_checkpoint(last, model, model.optimizer)["step"] if last is not None else 0
        history = []
        if start_step < config.max_steps:
            skip = start_step * config.accumulation_steps
            dataset = build_dataset(config, tokenizer, vocab, micro_batch, skip, streams=memory)
            monitor = runtime.StepMonitor(
                run=work, optimizer=model.optimizer, describe=_step_describer(config), max_steps=config.max_steps,
                checkpoint_every=config.checkpoint_every, keep=config.keep_checkpoints, chief=chief,
                on_step=on_step and (lambda step, r: on_step(step, r["loss"], r["tokens_per_s"])),
            )
            with disk_errors(work):
                runtime.fit_steps(model, dataset, strategy=strategy, start_step=start_step,
                                  max_steps=config.max_steps, accumulation_steps=config.accumulation_steps,
                                  callbacks=[monitor])
            monitor.raise_if_failed("lower --learning-rate, or use --precision float32 / mixed_bfloat16")
            history = monitor.history
        if chief:
            runtime.publish_model_dir(encoder, encoder_cfg, vocab_path, lower_case, work)
    return {"run": config.output, "start_step": start_step, "steps": config.max_steps, "strategy": described,
            "history": history}


def _check_options(config):
    runtime.check_precision(config.precision)
    if config.objective not in OBJECTIVE_LABELS:
        raise NlpkitError(f"unknown --objective {config.objective!r}", hint=f"use one of {', '.join(OBJECTIVE_LABELS)}")
    names = ("max_steps", "batch_size", "seq_length", "checkpoint_every", "keep_checkpoints", "accumulation_steps")
    check_at_least(1, **{f"--{name.replace('_', '-')}": getattr(config, name) for name in names})
    # checked before the run directory exists (the masker would, later)
    check_at_least(1, **{"--max-predictions": config.max_predictions_per_seq})
    check_learning_rate(config.learning_rate)
    if config.warmup_steps > config.max_steps:
        raise NlpkitError(f"--warmup-steps {config.warmup_steps} exceeds --max-steps {config.max_steps}")
    if config.batch_size % config.accumulation_steps:
        raise NlpkitError(
            f"--batch-size {config.batch_size} is not a multiple of --accumulation-steps {config.accumulation_steps}"
        )


def _dummy_features(config):
    ids = np.zeros((1, config.seq_length), "int32")
    positions = np.zeros((1, config.max_predictions_per_seq), "int32")
    return dict(input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=ids, masked_lm_positions=positions)
