"""The one training runtime under `nlpkit pretrain` and `nlpkit finetune` (TensorFlow for the
strategies and TensorBoard; the step itself is Keras 3 `fit`).

What both recipes share: the strategy (`strategies.resolve_strategy`) and its multi-worker patch,
the precision policy, AdamW (`optimization.create_optimizer`), the run directory (resume,
`--overwrite`, never silently mixed), checkpoints keyed by variable path with exact resume, the
per-update monitor (NaN/Inf guard, TensorBoard scalars, progress, checkpoints), the model
directory published at the end, and the one `start_encoder`.

One Keras epoch is one optimizer update (`steps_per_epoch = accumulation_steps` micro-batches), so
a checkpoint can be taken after any update and a resumed run starts at exactly that update.
"""

import contextlib
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

from nlpkit._tf import import_tensorflow

tf = import_tensorflow()  # before Keras, which would import TensorFlow with its log noise

import keras  # noqa: E402

from nlpkit.errors import NlpkitError  # noqa: E402
from nlpkit.io import atomic_file, new_temp_dir, remove_stale_temps, run_lock, swap_in  # noqa: E402
from nlpkit.training.checkpoints import latest_checkpoint, restore_checkpoint, save_checkpoint  # noqa: E402, F401
from nlpkit.training.precision import (  # noqa: E402, F401 - the runtime's precision options, in their own module
    PRECISIONS, AutoChoice, auto_choice, auto_jit, check_precision, choose_auto, cpu_flags, elementwise_fusion,
    precision_policy, resolve_precision_and_jit, this_device,
)



# --------------------------------------------------------------------------------------------------
# Options


def check_learning_rate(learning_rate):
    """A NaN / Inf / non-positive rate would train (and save) a broken model: refuse it first."""
    if not math.isfinite(learning_rate) or learning_rate <= 0:
        raise NlpkitError(f"--learning-rate must be a positive number, got {learning_rate}", hint="e.g. --learning-rate 5e-5")


def check_seq_length_fits(seq_length, encoder):
    """Checked here: the encoder's own error would reach the user wrapped in Keras' call-time text."""
    longest = getattr(encoder, "max_sequence_length", None)
    windowed = getattr(encoder, "long_inputs", None) == "sliding_window"
    if longest is not None and seq_length > longest and not windowed:
        raise NlpkitError(
            f"--seq-length {seq_length} exceeds the model's max_sequence_length {longest}",
            hint=f"pass --seq-length {longest} or less",
        )


# --------------------------------------------------------------------------------------------------
# Strategies


def strategy_for_backend(name, tpu):
    """A tf.distribute strategy under TensorFlow; under JAX, None (Keras uses JAX's devices)."""
    from nlpkit.training.strategies import resolve_strategy

    if keras.backend.backend() == "tensorflow":
        return resolve_strategy(name, tpu=tpu)
    if tpu is not None or name not in ("auto", "cpu"):
        raise NlpkitError(f"--strategy {name} needs the TensorFlow backend", hint="unset KERAS_BACKEND=jax")
    return None


def describe_strategy(strategy, global_batch):
    """One line for the summary; also checks that the batch splits over the replicas."""
    from nlpkit.training.strategies import plan_batch

    return plan_batch(strategy, global_batch).describe() if strategy is not None else "jax (default devices)"


def replicas(strategy):
    return strategy.num_replicas_in_sync if strategy is not None else 1


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0)


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def for_strategy(model_class, strategy):
    """`model_class`, patched for multi-worker training when `strategy` is one.

    Keras 3.15 reduces each logged value over workers with `reduce("MEAN", v, axis=0)`, which fails
    on the scalar loss and metrics; giving them a leading axis of 1 makes that reduce work (it
    returns them as scalars again).
    """
    if not is_multi_worker(strategy):
        return model_class

    class MultiWorker(model_class):
        def compute_metrics(self, x, y, y_pred, sample_weight=None):
            results = super().compute_metrics(x, y, y_pred, sample_weight)
            return {name: keras.ops.reshape(value, (1,)) for name, value in results.items()}

    MultiWorker.__name__ = f"MultiWorker{model_class.__name__}"
    return MultiWorker


# --------------------------------------------------------------------------------------------------
# Run directory


def prepare_run_dir(config, *, config_file, kind, overwrite=False, chief=True, finished=None):
    """(the folder to train in, the checkpoint to resume from or None).

    The folder is RUN = `config.output`: created, or checked to be this run (to resume). With
    `overwrite` on a RUN that holds a run, it is a fresh folder beside RUN instead (`open_run_dir`
    swaps it in at the end), so the old run and its model stay whole until the new model is
    complete. A folder that is not `kind` (`config_file` absent; `finished(RUN)` says whether it is
    a finished output of the command, which only `overwrite` replaces) is never used.
    Only the chief writes; the other workers of a multi-worker run read the same RUN.
    """
    run = Path(config.output)
    saved = run / config_file
    if not chief:
        return run, latest_checkpoint(run) if saved.is_file() and not overwrite else None
    if run.exists() and not run.is_dir():
        raise NlpkitError(f"--output {run} is a file", hint="pass a folder for the run")
    remove_stale_temps(run)  # what a killed run left: an unfinished --overwrite folder, a half-done swap
    if run.exists() and any(run.iterdir()):
        is_finished = finished is not None and finished(run)
        if not saved.is_file() and not is_finished:
            raise NlpkitError(f"--output {run} exists and is not {kind}",
                              hint=f"choose another --output (--overwrite only replaces {kind})")
        if overwrite:
            work = new_temp_dir(run)
            _write_run_config(work, config, config_file)
            return work, None
        if is_finished:
            raise NlpkitError(f"--output {run} already exists", hint="pass --overwrite to replace it, or choose another --output")
        return _resume_or_restart(run, saved, config, config_file)
    _write_run_config(run, config, config_file)
    return run, None


def _resume_or_restart(run, saved, config, config_file):
    last = latest_checkpoint(run)
    previous = json.loads(saved.read_text(encoding="utf-8"))
    differences = _differences(config, previous)
    if not differences:
        return run, last
    if last is not None or (run / "config.json").exists():
        raise NlpkitError(
            f"{run} holds a different run (differs in: {', '.join(differences)})",
            hint=_resume_hint(differences, previous),
        )
    # A run that stopped before its first checkpoint has nothing to lose: start it afresh.
    _write_run_config(run, config, config_file)
    return run, None


def _resume_hint(differences, previous):
    """How to resume: the same command, and where only the precision / XLA differ (a run started
    before `--precision auto` was the default, or on another machine), the options it ran with."""
    if set(differences) <= {"precision", "jit"} and "precision" in previous:
        jit = "--jit" if previous.get("jit") else "--no-jit"
        return f"to resume it, pass --precision {previous['precision']} {jit}; or pass --overwrite / another --output"
    return "run the same command to resume, or pass --overwrite / another --output"


def _differences(config, previous):
    """Names of the identity fields where `config` and a saved run's config differ."""
    # A field missing from an older run's file had its default then (fields are only ever added).
    defaults = {field.name: field.default for field in dataclasses.fields(config)}
    return sorted(k for k, v in config.identity().items() if previous.get(k, defaults[k]) != v)


def _write_run_config(folder, config, config_file):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(folder / config_file) as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise NlpkitError(f"cannot write to {folder}: {err.strerror}", hint="choose a writable --output")


@contextlib.contextmanager
def open_run_dir(config, *, command, overwrite=False, chief=True, **rules):
    """Lock RUN while this process trains, and yield `prepare_run_dir`'s (folder, last checkpoint).

    A second process on the same RUN gets one error line; a fresh folder of `--overwrite` replaces
    RUN only when the block ends without error, and is removed otherwise. A kill at any moment
    leaves the old run whole (the next run removes the abandoned folder and takes over the lock).
    """
    run = Path(config.output)
    if not chief:
        yield prepare_run_dir(config, overwrite=overwrite, chief=False, **rules)
        return
    with run_lock(run, command):
        work, last = prepare_run_dir(config, overwrite=overwrite, **rules)
        try:
            yield work, last
            if work != run:
                swap_in(work, run)
        finally:
            if work != run:
                shutil.rmtree(work, ignore_errors=True)


def publish_model_dir(model, encoder_cfg, vocab_path, lower_case, run, head=None):
    """Make RUN a model directory: write one beside it, then move its files in (config.json last)."""
    from nlpkit.models.model_dir import CONFIG_FILE, save_model_dir

    staging = run / ".model-dir"
    save_model_dir(model, encoder_cfg, vocab_path, staging, head=head, lower_case=lower_case, overwrite=True)
    for file in sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_FILE):
        file.replace(run / file.name)
    shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# The loop


def build_optimizer(model, *, learning_rate, total_steps, warmup_steps, weight_decay, clip_norm,
                    accumulation_steps, precision):
    """AdamW with warm-up and decay (no decay on norms and biases), built for `model`'s variables."""
    from nlpkit.training.optimization import create_optimizer

    optimizer = create_optimizer(
        model.trainable_variables, learning_rate=learning_rate, total_steps=total_steps,
        warmup_steps=warmup_steps, weight_decay=weight_decay, global_clipnorm=clip_norm or None,
        gradient_accumulation_steps=accumulation_steps, loss_scaling=precision == "mixed_float16",
    )
    # Built before fit: slots created inside fit's first trace make TensorFlow trace the step twice.
    optimizer.build(model.trainable_variables)
    return optimizer


class StepMonitor(keras.callbacks.Callback):
    """After every update: the NaN/Inf guard, the record (`describe(step, logs, seconds)`), TensorBoard,
    `on_step(step, record)`, and a checkpoint every `checkpoint_every` updates and at `max_steps`.

    `state()` (optional) gives extra JSON state to keep in each checkpoint.
    """

    def __init__(self, *, run, optimizer, describe, max_steps, checkpoint_every, keep, chief,
                 on_step=None, state=None):
        super().__init__()
        self.run, self.optimizer, self.describe, self.on_step, self.state = run, optimizer, describe, on_step, state
        self.max_steps, self.checkpoint_every, self.keep, self.chief = max_steps, checkpoint_every, keep, chief
        self.writer = tf.summary.create_file_writer(str(Path(run) / "logs")) if chief else None
        self.history = []
        self.failure = None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        if not math.isfinite(float(logs["loss"])):
            self.failure = step
            self.model.stop_training = True
            return
        record = self.describe(step, logs, max(time.perf_counter() - self._started, 1e-9))
        self.history.append(record)
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for name, value in {**record, "learning_rate": float(self.optimizer.learning_rate)}.items():
                    if name != "step" and isinstance(value, float):
                        _scalar_summary(name, value)
        if self.on_step is not None:
            self.on_step(step, record)
        if self.chief and (step % self.checkpoint_every == 0 or step == self.max_steps or self.model.stop_training):
            save_checkpoint(self.run, step, self.model, self.optimizer, self.keep, self.state() if self.state else None)

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()

    def raise_if_failed(self, hint):
        if self.failure is not None:
            last = latest_checkpoint(self.run)
            raise NlpkitError(f"the loss became NaN/Inf at step {self.failure}; stopped (last checkpoint: "
                              f"{last.name if last else 'none'})", hint=hint)


def _scalar_summary(name, value):
    """A TensorBoard scalar, written with TensorFlow's core summary op (the `tensorboard` package,
    which `tf.summary.scalar` needs, is not a dependency)."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)


def fit_steps(model, dataset, *, strategy, start_step, max_steps, accumulation_steps, callbacks, **fit_options):
    """Run updates `start_step + 1 .. max_steps` (one Keras epoch each) under `strategy`."""
    import warnings

    with scope(strategy), elementwise_fusion(model), warnings.catch_warnings():
        # Unused outputs (the pooler under masked-LM, the sequence under a CLS head) get no gradient.
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
        model.fit(dataset, initial_epoch=start_step, epochs=max_steps, steps_per_epoch=accumulation_steps,
                  callbacks=callbacks, shuffle=False, verbose=0, **fit_options)


# --------------------------------------------------------------------------------------------------
# Encoders


def start_encoder(model=None, preset=None, vocab=None, lower_case=True):
    """(encoder, encoder config, vocab path, lower_case) from a model directory or a preset.

    A preset without --vocab takes the bundled BERT vocab when its vocab_size is that vocab's size,
    and needs --vocab otherwise. A model directory may hold an encoder (build / convert / pretrain)
    or a classifier, whose encoder is taken (fine-tuning or pretraining again from a fine-tuned model).
    """
    from nlpkit.data.bundled import bert_vocab_for
    from nlpkit.encoders.presets import build_encoder, encoder_config, load_config
    from nlpkit.text.vocab import check_vocab_fits

    if (preset is None) == (model is None):
        raise NlpkitError("pass exactly one of --model and --preset")
    if preset is not None:
        preset_config = load_config(preset)
        vocab = vocab or bert_vocab_for(preset_config.get("vocab_size"), f"--preset {preset}")
        check_vocab_fits(vocab, preset_config.get("vocab_size"))
        encoder = build_encoder(preset_config)
        return encoder, encoder_config(encoder), str(vocab), lower_case
    from nlpkit.models.model_dir import load_model, tokenizer_assets

    loaded = load_model(model)
    encoder = getattr(loaded, "encoder", loaded)
    assets = tokenizer_assets(model) or {}
    vocab = vocab or assets.get("path")
    if vocab is None:
        raise NlpkitError(f"--model {model} has no tokenizer assets", hint="pass --vocab")
    check_vocab_fits(vocab, encoder_config(encoder).get("vocab_size"))
    return encoder, encoder_config(encoder), str(vocab), assets.get("lower_case", lower_case)
