"""Masked-LM pretraining: text -> packed, dynamically masked batches -> encoder + tied MaskedLM head.

TensorFlow-only module for the data (tf.data) and the strategies; the model and the training step
are Keras 3 and also run under `KERAS_BACKEND=jax` (with the cpu/auto strategy).

`--data` is one of three kinds, told apart by the path (`data_kind`):
    shards   a folder written by `nlpkit tokenize` (manifest.json + TFRecord shards): its rows are
             already packed, so they go straight to the dynamic masker (seq_length and vocab checked
             against the manifest; no sentence pairs, so no next-sentence / sentence-order objective)
    table    a .csv / .tsv / .json / .jsonl / .parquet file read through `datasets`: each row of
             `--text-column` is a document, its lines are its sentences
    text     a text file or a folder of them: one sentence per line, a blank line between documents
Tables and text are packed into sentence pairs (`pack_documents`), optionally labelled for the
next-sentence ("nsp") or sentence-order ("sop") objective: the model then gets a 2-way head on
the pooled output and the loss is masked-LM + that cross-entropy. Everything streams.

A run directory RUN holds:
    RUN/pretrain_config.json         the resolved config (a second run must match it to resume)
    RUN/checkpoints/step-000100/     variables.npz (model + optimizer) and state.json, the last K kept
    RUN/logs/                        TensorBoard scalars: loss, mlm_accuracy, learning_rate, tokens_per_s
                                     (and sentence_accuracy with --objective nsp/sop)
    RUN/config.json, model.weights.h5, vocab.txt   the model directory, written at the end
Running the same command on an interrupted RUN resumes from its last checkpoint with the same step,
optimizer state, data position and random state, so it ends with the same weights.
"""

import contextlib
import dataclasses
import json
import math
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from nlpkit._tf import import_tensorflow

tf = import_tensorflow()  # before Keras, which would import TensorFlow with its log noise

import keras  # noqa: E402

from nlpkit.data.records import FEATURES, MANIFEST, load_records, read_manifest  # noqa: E402
from nlpkit.data.sources import KINDS, check_source, iter_rows, open_source  # noqa: E402
from nlpkit.errors import NlpkitError  # noqa: E402
from nlpkit.io import atomic_dir, atomic_file  # noqa: E402
from nlpkit.text.masking import MlmMasker, mask_dataset, pack_documents  # noqa: E402

RUN_CONFIG = "pretrain_config.json"
CHECKPOINTS = "checkpoints"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
DEFAULT_SEQ_LENGTH = 128
# --objective -> the label feature `pack_documents` adds (None: masked-LM only).
OBJECTIVE_LABELS = {"none": None, "nsp": "next_sentence_labels", "sop": "sentence_order_labels"}
_SHUFFLE_BUFFER = 1000
_ROWS_PER_READ = 256  # table rows read and tokenized together


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


# --------------------------------------------------------------------------------------------------
# Run directory and checkpoints


def prepare_run_dir(config, overwrite=False, chief=True):
    """Create RUN, or check an existing RUN is this run (to resume). Returns the last checkpoint or None.

    Only the chief writes; the other workers of a multi-worker run read the same RUN (a shared
    file system) to find the checkpoint to resume from.
    """
    run = Path(config.output)
    saved = run / RUN_CONFIG
    if not chief:
        return latest_checkpoint(run) if saved.is_file() and not overwrite else None
    if run.exists() and overwrite:
        shutil.rmtree(run)
    if run.exists() and any(run.iterdir()):
        if not saved.is_file():
            raise NlpkitError(f"{run} exists and is not a pretraining run", hint="pass --overwrite or another --output")
        previous = json.loads(saved.read_text(encoding="utf-8"))
        # A field missing from an older run's file had its default then (fields are only ever added).
        defaults = {field.name: field.default for field in dataclasses.fields(PretrainConfig)}
        differences = sorted(k for k, v in config.identity().items() if previous.get(k, defaults[k]) != v)
        if differences:
            raise NlpkitError(
                f"{run} holds a different run (differs in: {', '.join(differences)})",
                hint="run the same command to resume, or pass --overwrite / another --output",
            )
        return latest_checkpoint(run)
    try:
        run.mkdir(parents=True, exist_ok=True)
        with atomic_file(saved) as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise NlpkitError(f"cannot write to {run}: {err.strerror}", hint="choose a writable --output")
    return None


def latest_checkpoint(run):
    steps = sorted((run / CHECKPOINTS).glob("step-*"))
    return steps[-1] if steps else None


def save_checkpoint(run, step, model, optimizer, keep):
    """Write RUN/checkpoints/step-N atomically, then drop all but the `keep` newest."""
    folder = Path(run) / CHECKPOINTS / f"step-{step:06d}"
    with atomic_dir(folder, overwrite=True) as tmp:
        arrays = {f"model_{i}": np.asarray(v) for i, v in enumerate(model.variables)}
        arrays.update({f"optimizer_{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
        np.savez(tmp / "variables.npz", **arrays)
        (tmp / "state.json").write_text(json.dumps({"step": step}) + "\n", encoding="utf-8")
    for old in sorted((Path(run) / CHECKPOINTS).glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def restore_checkpoint(folder, model, optimizer):
    """Load a checkpoint into a built model and optimizer; returns its step."""
    with np.load(folder / "variables.npz") as arrays:
        for prefix, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
            for i, variable in enumerate(variables):
                variable.assign(arrays[f"{prefix}_{i}"])
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))["step"]


# --------------------------------------------------------------------------------------------------
# Data


def data_kind(path):
    """The kind of a --data path: "shards" (a `nlpkit tokenize` folder), "table" (csv/json/jsonl/parquet) or "text"."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        return "shards"
    if KINDS.get(path.suffix.lower(), "text") != "text":
        return "table"
    return "text"


def text_documents(path, tokenizer):
    """Tokenized documents from text files: one sentence per line, documents split by blank lines."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for file in files:
        lines = []
        with open(file, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    lines.append(line.strip())
                elif lines:
                    yield _tokenize(tokenizer, lines)
                    lines = []
        if lines:
            yield _tokenize(tokenizer, lines)


def _tokenize(tokenizer, lines):
    return tokenizer.tokenize(tf.constant(lines)).to_list()


def table_documents(config, tokenizer):
    """Tokenized documents from a csv/json/jsonl/parquet file: one per row, its lines are its sentences."""
    source = open_source(config.data, text_column=config.text_column)
    for batch in iter_rows(source, batch_size=_ROWS_PER_READ):
        rows = [[line.strip() for line in text.splitlines() if line.strip()] for text in batch["text"]]
        lines = [line for row in rows for line in row]
        tokens = iter(_tokenize(tokenizer, lines) if lines else [])  # all lines of the batch at once
        for row in rows:
            if row:
                yield [next(tokens) for _ in row]


def _examples(config, tokenizer, vocab):
    """Packed examples (dicts of int32 arrays) of a table or text corpus."""
    if data_kind(config.data) == "table":
        documents = table_documents(config, tokenizer)
    else:
        documents = text_documents(config.data, tokenizer)
    return pack_documents(
        documents,
        seq_length=config.seq_length,
        cls_id=vocab.index("[CLS]"),
        sep_id=vocab.index("[SEP]"),
        short_seq_prob=config.short_seq_prob,
        objective=None if config.objective == "none" else config.objective,
        seed=config.seed,
    )


def check_corpus(config, tokenizer, vocab, micro_batch, vocab_path):
    """Fail early on an unreadable, empty or mismatched corpus, or one that cannot fill a single batch."""
    if not Path(config.data).exists():
        raise NlpkitError(
            f"--data {config.data} does not exist",
            hint="pass a text file or folder, a csv/json/jsonl/parquet file, or a `nlpkit tokenize` folder",
        )
    kind = data_kind(config.data)
    if config.text_column is not None and kind != "table":
        raise NlpkitError(
            f"--text-column applies to csv/json/jsonl/parquet input, not to {config.data}",
            hint="drop --text-column",
        )
    if kind == "shards":
        count = _check_shards(config, vocab_path)
    else:
        if kind == "table":
            check_source(open_source(config.data, text_column=config.text_column))  # e.g. an unknown column
        count = 0
        for _ in _examples(config, tokenizer, vocab):
            count += 1
            if count >= micro_batch:
                break
    if count >= micro_batch:
        return
    what = "is empty" if count == 0 else f"gives only {count} sequence(s), fewer than one batch of {micro_batch}"
    raise NlpkitError(f"--data {config.data} {what}", hint="add text or lower --batch-size")


def _check_shards(config, vocab_path):
    """Check a `nlpkit tokenize` folder fits this run; returns its number of rows."""
    from nlpkit.text.vocab import file_checksum

    manifest = read_manifest(config.data)
    if config.objective != "none":
        raise NlpkitError(
            f"--objective {config.objective} needs sentence pairs, but {config.data} holds already packed rows",
            hint="pass the raw text (or a csv/json/jsonl/parquet file) as --data, or use --objective none",
        )
    length = manifest.get("seq_length")
    if length != config.seq_length:
        raise NlpkitError(
            f"--data {config.data} holds rows of length {length}, not --seq-length {config.seq_length}",
            hint=f"pass --seq-length {length} (or leave it out)",
        )
    if manifest.get("vocab_checksum") != file_checksum(vocab_path):
        raise NlpkitError(
            f"{Path(config.data) / MANIFEST} was made with another vocab ({manifest.get('vocab')}) than {vocab_path}",
            hint="re-run nlpkit tokenize with this vocab, or pretrain with the vocab the shards were made with",
        )
    return int(manifest.get("rows", 0))


def _packed_rows(config, tokenizer, vocab):
    """Unbatched dataset of packed rows (+ the objective's label): read from shards, or packed here."""
    if data_kind(config.data) == "shards":
        return load_records(config.data).map(lambda row: {name: row[name] for name in FEATURES})
    signature = {name: tf.TensorSpec([config.seq_length], tf.int32) for name in FEATURES}
    label = OBJECTIVE_LABELS[config.objective]
    if label is not None:
        signature[label] = tf.TensorSpec([], tf.int32)
    return tf.data.Dataset.from_generator(lambda: _examples(config, tokenizer, vocab), output_signature=signature)


def build_dataset(config, tokenizer, vocab, micro_batch, skip_batches):
    """Infinite dataset of (features, targets, sample weights) micro-batches, from `skip_batches` on.

    Targets and weights are `masked_lm_ids` and `masked_lm_weights`; with a sentence objective,
    dicts of those ("masked_lm") and of the sentence label with weight 1 ("sentence").
    """
    dataset = _packed_rows(config, tokenizer, vocab)
    dataset = dataset.repeat().shuffle(_SHUFFLE_BUFFER, seed=config.seed).batch(micro_batch, drop_remainder=True)
    masker = MlmMasker(
        vocab,
        max_predictions_per_seq=config.max_predictions_per_seq,
        masked_lm_prob=config.masked_lm_prob,
        whole_word=config.whole_word,
    )
    dataset = mask_dataset(dataset, masker, config.seed, skip=skip_batches)
    dataset = dataset.map(lambda features: _features_targets_weights(features, OBJECTIVE_LABELS[config.objective]))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _features_targets_weights(features, label=None):
    """Keras' (x, y, sample_weight) from a masked batch (`label`: the sentence label feature, if any)."""
    from nlpkit.training.masked_lm import MLM_OUTPUT, SENTENCE_OUTPUT

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


def load_encoder(config):
    """(encoder, encoder config, vocab path, lower_case) from --preset or --model."""
    from nlpkit.encoders.presets import build_encoder, encoder_config, load_config

    if (config.preset is None) == (config.model is None):
        raise NlpkitError("pass exactly one of --preset and --model")
    if config.preset is not None:
        encoder = build_encoder(load_config(config.preset))
        vocab_path, lower_case = config.vocab, config.lower_case
        if vocab_path is None:
            raise NlpkitError(f"--preset {config.preset} needs --vocab", hint="pass the WordPiece vocab.txt to train with")
    else:
        from nlpkit.encoders.model_dir import load_model, tokenizer_assets

        encoder = load_model(config.model)
        assets = tokenizer_assets(config.model) or {}
        vocab_path = config.vocab or assets.get("path")
        lower_case = assets.get("lower_case", config.lower_case)
        if vocab_path is None:
            raise NlpkitError(f"--model {config.model} has no vocab", hint="pass --vocab")
    return encoder, encoder_config(encoder), str(vocab_path), lower_case


def _check_vocab(vocab, encoder, vocab_path):
    if len(vocab) != encoder.vocab_size:
        raise NlpkitError(
            f"--vocab {vocab_path} has {len(vocab)} tokens but the model's vocab_size is {encoder.vocab_size}",
            hint="use the vocab the model was built with",
        )


def _check_seq_length(config, encoder):
    """Checked here: the encoder's own error would reach the user wrapped in Keras' call-time text."""
    longest = getattr(encoder, "max_sequence_length", None)
    windowed = getattr(encoder, "long_inputs", None) == "sliding_window"
    if longest is not None and config.seq_length > longest and not windowed:
        raise NlpkitError(
            f"--seq-length {config.seq_length} exceeds the model's max_sequence_length {longest}",
            hint=f"pass --seq-length {longest} or less",
        )


# --------------------------------------------------------------------------------------------------
# The loop


class _StepMonitor(keras.callbacks.Callback):
    """One Keras epoch = one optimizer update: logs it, guards against NaN, checkpoints."""

    def __init__(self, config, run, optimizer, writer, bar, chief):
        super().__init__()
        self.config, self.run, self.optimizer, self.writer, self.bar = config, run, optimizer, writer, bar
        self.chief = chief
        self.tokens_per_step = config.batch_size * config.seq_length
        self.history = []
        self.failure = None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            self.failure = step
            self.model.stop_training = True
            return
        tokens_per_s = self.tokens_per_step / max(time.perf_counter() - self._started, 1e-9)
        # Keras prefixes the metrics with the output name when the model has a sentence head.
        accuracy = logs.get("sparse_categorical_accuracy", logs.get("masked_lm_sparse_categorical_accuracy"))
        accuracy = math.nan if accuracy is None else float(accuracy)
        record = {"step": step, "loss": loss, "mlm_accuracy": accuracy, "tokens_per_s": tokens_per_s}
        if "sentence_sparse_categorical_accuracy" in logs:
            record["sentence_accuracy"] = float(logs["sentence_sparse_categorical_accuracy"])
        self.history.append(record)
        if self.writer is not None:
            scalars = {**record, "learning_rate": float(self.optimizer.learning_rate)}
            with self.writer.as_default(step=step):
                for name, value in scalars.items():
                    if name != "step":
                        _scalar_summary(name, value)
        if self.bar is not None:
            self.bar(step, loss, tokens_per_s)
        if step % self.config.checkpoint_every == 0 or step == self.config.max_steps:
            if self.chief:
                save_checkpoint(self.run, step, self.model, self.optimizer, self.config.keep_checkpoints)


def _scalar_summary(name, value):
    """A TensorBoard scalar, written with TensorFlow's core summary op (the `tensorboard` package,
    which `tf.summary.scalar` needs, is not a dependency)."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)


def run_pretraining(config, *, overwrite=False, on_step=None):
    """Train (or resume) the run described by `config`; returns a summary dict.

    `on_step(step, loss, tokens_per_s)` is called after every update (the CLI's progress bar).
    """
    from nlpkit.text.vocab import load_wordpiece_vocab
    from nlpkit.text.wordpiece import WordPieceTokenizer
    from nlpkit.training.masked_lm import (
        MLM_OUTPUT, SENTENCE_OUTPUT, MaskedLMPretrainer, masked_lm_loss, pretraining_losses,
    )
    from nlpkit.training.optimization import create_optimizer
    from nlpkit.training.strategies import plan_batch, resolve_strategy

    config = config.resolved()
    _check_options(config)
    strategy = _strategy_for_backend(config, resolve_strategy)
    plan = plan_batch(strategy, config.batch_size) if strategy is not None else None
    micro_batch = config.batch_size // config.accumulation_steps
    run = Path(config.output)

    keras.utils.set_random_seed(config.seed)
    keras.config.set_dtype_policy(config.precision)
    try:
        with _scope(strategy):
            encoder, encoder_cfg, vocab_path, lower_case = load_encoder(config)
            vocab = load_wordpiece_vocab(vocab_path)
            _check_vocab(vocab, encoder, vocab_path)
            _check_seq_length(config, encoder)
        # Created outside the scope on purpose: a Keras model created under a strategy runs a
        # "symbolic build" at fit time that reduces the whole input dict with strategy.reduce,
        # which fails with several replicas (Keras 3.15). Created outside, it trains under the
        # strategy active when fit runs (inside the scope below); its variables are made there too.
        sentence_classes = 0 if config.objective == "none" else 2
        model_class = _multi_worker_pretrainer_class() if _is_multi_worker(strategy) else MaskedLMPretrainer
        model = model_class(encoder, sentence_classes=sentence_classes)
        with _scope(strategy):
            model(_dummy_features(config))
            optimizer = create_optimizer(
                model.trainable_variables,
                learning_rate=config.learning_rate,
                total_steps=config.max_steps,
                warmup_steps=config.warmup_steps,
                weight_decay=config.weight_decay,
                global_clipnorm=config.clip_norm or None,
                gradient_accumulation_steps=config.accumulation_steps,
                loss_scaling=config.precision == "mixed_float16",
            )
            optimizer.build(model.trainable_variables)
            accuracy = ["sparse_categorical_accuracy"]
            model.compile(
                optimizer=optimizer,
                loss=pretraining_losses() if sentence_classes else masked_lm_loss(),
                weighted_metrics={MLM_OUTPUT: accuracy, SENTENCE_OUTPUT: accuracy} if sentence_classes else accuracy,
                jit_compile=config.jit,
            )
    finally:
        keras.config.set_dtype_policy("float32")
    tokenizer = WordPieceTokenizer(vocab, lower_case=lower_case)
    check_corpus(config, tokenizer, vocab, micro_batch, vocab_path)
    # Only now, with the inputs known to be usable, is the run directory created or resumed.
    chief = _is_chief(strategy)
    last = prepare_run_dir(config, overwrite=overwrite, chief=chief)
    start_step = restore_checkpoint(last, model, optimizer) if last is not None else 0
    if start_step < config.max_steps:
        dataset = build_dataset(config, tokenizer, vocab, micro_batch, start_step * config.accumulation_steps)
        writer = tf.summary.create_file_writer(str(run / "logs")) if chief else None
        monitor = _StepMonitor(config, run, optimizer, writer, on_step, chief)
        with _scope(strategy), warnings.catch_warnings():
            # The pooler is not part of the masked-LM loss; Keras warns that it gets no gradient.
            warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
            model.fit(
                dataset,
                initial_epoch=start_step,
                epochs=config.max_steps,
                steps_per_epoch=config.accumulation_steps,
                callbacks=[monitor],
                shuffle=False,
                verbose=0,
            )
        if writer is not None:
            writer.flush()
        if monitor.failure is not None:
            raise NlpkitError(
                f"the loss became NaN/Inf at step {monitor.failure}; stopped (last checkpoint: "
                f"{latest_checkpoint(run).name if latest_checkpoint(run) else 'none'})",
                hint="lower --learning-rate, or use --precision float32 / mixed_bfloat16",
            )
        history = monitor.history
    else:
        history = []
    if chief:
        _publish_model_dir(encoder, encoder_cfg, vocab_path, lower_case, run)
    return {
        "run": str(run),
        "start_step": start_step,
        "steps": config.max_steps,
        "strategy": plan.describe() if plan else "jax (default devices)",
        "history": history,
    }


def _check_options(config):
    if config.precision not in PRECISIONS:
        raise NlpkitError(f"unknown --precision {config.precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if config.objective not in OBJECTIVE_LABELS:
        raise NlpkitError(f"unknown --objective {config.objective!r}", hint=f"use one of {', '.join(OBJECTIVE_LABELS)}")
    for name in ("max_steps", "batch_size", "seq_length", "checkpoint_every", "keep_checkpoints", "accumulation_steps"):
        if getattr(config, name) < 1:
            raise NlpkitError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.warmup_steps > config.max_steps:
        raise NlpkitError(f"--warmup-steps {config.warmup_steps} exceeds --max-steps {config.max_steps}")
    if config.batch_size % config.accumulation_steps:
        raise NlpkitError(
            f"--batch-size {config.batch_size} is not a multiple of --accumulation-steps {config.accumulation_steps}"
        )


def _strategy_for_backend(config, resolve_strategy):
    """A tf.distribute strategy under TensorFlow; under JAX, None (Keras uses JAX's devices)."""
    if keras.backend.backend() == "tensorflow":
        return resolve_strategy(config.strategy, tpu=config.tpu)
    if config.tpu is not None or config.strategy not in ("auto", "cpu"):
        raise NlpkitError(
            f"--strategy {config.strategy} needs the TensorFlow backend", hint="unset KERAS_BACKEND=jax"
        )
    return None


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0)


def _is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _multi_worker_pretrainer_class():
    from nlpkit.training.masked_lm import MaskedLMPretrainer

    class MultiWorkerPretrainer(MaskedLMPretrainer):
        """Keras 3.15 reduces each logged value over workers with `reduce("MEAN", v, axis=0)`, which
        fails on the scalar loss and metrics; giving them a leading axis of 1 makes that reduce work
        (it returns them as scalars again)."""

        def compute_metrics(self, x, y, y_pred, sample_weight=None):
            results = super().compute_metrics(x, y, y_pred, sample_weight)
            return {name: keras.ops.reshape(value, (1,)) for name, value in results.items()}

    return MultiWorkerPretrainer


def _scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _dummy_features(config):
    ids = np.zeros((1, config.seq_length), "int32")
    positions = np.zeros((1, config.max_predictions_per_seq), "int32")
    return dict(input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=ids, masked_lm_positions=positions)


def _publish_model_dir(encoder, encoder_cfg, vocab_path, lower_case, run):
    """Make RUN a model directory: write one beside it, then move its files in (config.json last)."""
    from nlpkit.encoders.model_dir import CONFIG_FILE, save_model_dir

    staging = run / ".model-dir"
    save_model_dir(encoder, encoder_cfg, vocab_path, staging, lower_case=lower_case, overwrite=True)
    files = sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_FILE)
    for file in files:
        file.replace(run / file.name)
    shutil.rmtree(staging, ignore_errors=True)
