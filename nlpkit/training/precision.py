"""Training precision: the `--precision` policies and what `--precision auto` / an unset `--jit` pick.

The choice is one pure function of the device (`choose_auto`), so every case is tested without
the hardware; `auto_choice` applies it to this machine.
"""

import contextlib
import dataclasses
import os

from nlpkit._tf import import_tensorflow

tf = import_tensorflow()

import keras  # noqa: E402

from nlpkit.errors import NlpkitError  # noqa: E402

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Strategies whose steps all-reduce across replicas (on a CPU, XLA cannot compile those collectives).
REPLICATED_STRATEGIES = ("mirrored", "multi-worker")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise NlpkitError(f"unknown --precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")


@contextlib.contextmanager
def precision_policy(precision):
    """Build models under the `--precision` policy; float32 again afterwards (for the next command)."""
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


# --------------------------------------------------------------------------------------------------
# --precision auto / --jit auto


# /proc/cpuinfo flags of the CPU units that compute bf16 dot products natively: without them a
# bf16 matmul is converted to float32 and back, slower than float32 alone (issue #19).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class AutoChoice:
    """What `--precision auto` (and `--jit` left unset) picks, and why, in words."""

    precision: str
    jit: bool
    reason: str

    def describe(self):
        return f"{self.precision}, XLA {'on' if self.jit else 'off'}"


def choose_auto(cpu_flags, device_kind, backend, *, compute_capability=None, onednn=True):
    """The precision and XLA choice for a device: a pure function, so every case is tested.

    `cpu_flags`: the /proc/cpuinfo flags; `device_kind`: "cpu", "gpu" or "tpu"; `backend`: the Keras
    backend; `compute_capability`: (major, minor) of a GPU; `onednn`: whether TensorFlow's oneDNN
    kernels are on (without them TensorFlow has no fast bf16 CPU matmul).
    """
    if device_kind == "tpu":
        precision, why = "mixed_bfloat16", "TPU: bf16 matrix units"
    elif device_kind == "gpu":
        major, minor = compute_capability or (0, 0)
        bf16 = (major, minor) >= (8, 0)
        precision = "mixed_bfloat16" if bf16 else "float32"
        why = f"GPU compute capability {major}.{minor} {'has' if bf16 else 'has no'} bf16 tensor cores"
    else:
        units = [flag for flag in BF16_CPU_FLAGS if flag in {f.lower() for f in cpu_flags}]
        if units and (onednn or backend != "tensorflow"):
            precision, why = "mixed_bfloat16", f"CPU has bf16 dot-product units ({', '.join(units)})"
        elif units:
            precision, why = "float32", "TF_ENABLE_ONEDNN_OPTS=0 turns off TensorFlow's bf16 CPU kernels"
        else:
            precision, why = "float32", "CPU has no bf16 dot-product units (avx512_bf16, amx_bf16)"
    jit, jit_why = auto_jit(precision, device_kind, backend)
    return AutoChoice(precision, jit, f"{why}; {jit_why}")


def auto_jit(precision, device_kind, backend):
    """(XLA on?, why) for `precision` on that device.

    The CPU rows are issue #19's measurements (2-core AVX512_BF16 CPU, bert_small step): under
    TensorFlow bf16 ran 1.74x faster without XLA than with it, float32 1.19x faster with it.
    """
    if backend == "jax":
        return True, "JAX always compiles with XLA"
    if device_kind in ("gpu", "tpu"):
        return True, f"XLA fuses the step on {device_kind.upper()}"
    if precision == "float32":
        return True, "TensorFlow's float32 CPU step is faster with XLA"
    # Without whole-step XLA, XLA still fuses the elementwise ops between the oneDNN kernels
    # (`elementwise_fusion`); the doctor row that shows this reason must fit one terminal line.
    return False, "TensorFlow's bf16 CPU step is faster without XLA"


def fuses_elementwise(model):
    """Whether `model`'s steps get XLA-fused elementwise ops around TensorFlow's own kernels: a bf16
    model compiled without XLA, under TensorFlow with oneDNN on a CPU (issue #19's profile: GELU,
    dropout, layer-norm and casts, one op and one pass over memory each, cost more than the matrix
    products; XLA's own bf16 matrix products are slower than oneDNN's, so whole-step XLA does not help)."""
    return (keras.backend.backend() == "tensorflow" and not getattr(model, "jit_compile", False)
            and model.dtype_policy.compute_dtype == "bfloat16" and onednn_enabled()
            and not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU"))


@contextlib.contextmanager
def elementwise_fusion(model):
    """Run `model`'s steps (those traced inside) with TensorFlow's XLA auto-clustering restricted to
    fusible elementwise ops, where `fuses_elementwise(model)`. The restriction (TF_XLA_FLAGS) is set
    by `nlpkit._tf` before TensorFlow starts; without it nothing is clustered on a CPU."""
    if not fuses_elementwise(model):
        yield
        return
    previous = tf.config.optimizer.get_jit()
    tf.config.optimizer.set_jit("autoclustering")
    try:
        yield
    finally:
        tf.config.optimizer.set_jit(previous or False)


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU feature flags of the first processor in `cpuinfo` (none where it cannot be read)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def this_device(tpu=None):
    """(device kind, compute capability or None) of the device training will use here."""
    if tpu is not None:
        return "tpu", None
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        capability = getattr(device, "compute_capability", None)
        return device.platform, tuple(int(part) for part in capability.split(".")) if capability else None
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return "gpu", tuple(capability) if capability else None
    if tf.config.list_physical_devices("TPU"):
        return "tpu", None
    return "cpu", None


def onednn_enabled():
    """Whether TensorFlow's oneDNN kernels are on: TF_ENABLE_ONEDNN_OPTS, or (unset) TensorFlow's own
    default, which is on for every CPU with bf16 units (they all have AVX512_VNNI)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def auto_choice(tpu=None):
    """`choose_auto` for this machine."""
    kind, capability = this_device(tpu)
    return choose_auto(cpu_flags(), kind, keras.backend.backend(), compute_capability=capability,
                       onednn=onednn_enabled())


def resolve_precision_and_jit(precision, jit, tpu=None, strategy=None):
    """(precision, jit, reason): an "auto" precision and an unset (None) jit become this machine's choice.

    An explicit --precision gets the XLA choice for that precision here; an explicit --jit always
    wins. `reason` says what auto decided ("" when nothing was left to it). `strategy` (the
    --strategy name): TensorFlow's XLA has no CPU collectives, so a replicated CPU run gets no XLA.
    """
    if precision != "auto" and jit is not None:
        return precision, jit, ""
    if precision == "auto":
        choice = auto_choice(tpu)
        precision, chosen, why = choice.precision, choice.jit, choice.reason
    else:
        check_precision(precision)
        chosen, why = auto_jit(precision, this_device(tpu)[0], keras.backend.backend())
    if chosen and strategy in REPLICATED_STRATEGIES and keras.backend.backend() == "tensorflow" \
            and this_device(tpu)[0] == "cpu":
        chosen, why = False, f"{why}, but not with --strategy {strategy}: XLA has no CPU collectives"
    return precision, chosen if jit is None else jit, why
