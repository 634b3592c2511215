"""Distribution strategies by name: auto | cpu | gpu | mirrored | multi-worker | tpu (TensorFlow-only).

`resolve_strategy` never hangs on a missing TPU: the cheap reachability checks (a local TPU device,
a TCP connect to a grpc:// address, the Cloud metadata server for a TPU name) run first, and the
TensorFlow connection itself runs under a time limit. Every failure is one NlpkitError line.
"""

import glob
import json
import os
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

from nlpkit._tf import import_tensorflow
from nlpkit.errors import NlpkitError

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi-worker", "tpu")
TPU_CONNECT_TIMEOUT_S = 120.0  # TPU system initialisation takes tens of seconds on a healthy pod
_PROBE_TIMEOUT_S = 3.0
_METADATA_SERVER = ("metadata.google.internal", 80)  # only reachable on Google Cloud machines
_TPU_HINT = "pass --tpu grpc://HOST:8470, --tpu local on a TPU VM, or drop --tpu"


@dataclass(frozen=True)
class BatchPlan:
    """How a global batch splits over the replicas of a strategy."""

    strategy: str
    replicas: int
    per_replica_batch: int
    global_batch: int

    def describe(self):
        return (
            f"{self.strategy}: {self.replicas} replica(s) x {self.per_replica_batch} "
            f"= global batch {self.global_batch}"
        )


def resolve_strategy(name="auto", tpu=None):
    """Build the `tf.distribute.Strategy` called `name`; `tpu` (a TPU name, grpc:// address or "local")
    implies the TPU strategy."""
    if name not in STRATEGIES:
        raise NlpkitError(f"unknown --strategy {name!r}", hint=f"use one of {', '.join(STRATEGIES)}")
    if tpu is not None and name not in ("auto", "tpu"):
        raise NlpkitError(f"--tpu {tpu} cannot be combined with --strategy {name}", hint="use --strategy tpu or auto")
    if name == "tpu" or tpu is not None:
        return _tpu_strategy(tpu if tpu is not None else "local")
    tf = import_tensorflow()
    if name == "auto":
        name = _auto_name(tf)
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise NlpkitError("--strategy gpu but TensorFlow sees no GPU", hint="use --strategy cpu or install CUDA")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    _read_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _auto_name(tf):
    if os.environ.get("TF_CONFIG") and len(_read_tf_config()["cluster"].get("worker", [])) > 1:
        return "multi-worker"
    gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if gpus > 1 else "gpu" if gpus == 1 else "cpu"


def _read_tf_config():
    """The parsed TF_CONFIG, checked enough to give a readable error instead of a gRPC one."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise NlpkitError(
            "--strategy multi-worker needs the TF_CONFIG environment variable",
            hint='e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}',
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise NlpkitError(f"TF_CONFIG is not valid: {err!r}", hint="it needs cluster.worker and task.type/index")
    if not isinstance(workers, list) or not workers or not 0 <= index < len(workers):
        raise NlpkitError(f"TF_CONFIG task index {index} does not name one of its {len(workers)} worker(s)")
    return config


def plan_batch(strategy, global_batch):
    """Split `global_batch` evenly over the strategy's replicas (an uneven split is an error)."""
    replicas = strategy.num_replicas_in_sync
    if global_batch < replicas or global_batch % replicas:
        raise NlpkitError(
            f"--batch-size {global_batch} does not split evenly over {replicas} replicas",
            hint=f"use a multiple of {replicas}",
        )
    return BatchPlan(type(strategy).__name__, replicas, global_batch // replicas, global_batch)


# --------------------------------------------------------------------------------------------------
# TPU


def _tpu_strategy(tpu):
    _check_tpu_reachable(tpu)
    tf = import_tensorflow()
    return _with_time_limit(lambda: _connect_tpu(tf, tpu), TPU_CONNECT_TIMEOUT_S, tpu)


def _check_tpu_reachable(tpu):
    """Fail in seconds when there is plainly no TPU behind `tpu`."""
    if tpu in ("local", ""):
        if not (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
            raise NlpkitError("--tpu local: this machine has no TPU device (/dev/accel*)", hint=_TPU_HINT)
        return
    if "://" in tpu:
        address = urlparse(tpu)
        if not address.hostname or not address.port:
            raise NlpkitError(f"--tpu {tpu}: not a HOST:PORT address", hint=_TPU_HINT)
        if not _can_connect(address.hostname, address.port):
            raise NlpkitError(f"--tpu {tpu}: no TPU answers at {address.hostname}:{address.port}", hint=_TPU_HINT)
        return
    # A bare name is looked up through the Cloud TPU API, which only works on Google Cloud.
    if not _can_connect(*_METADATA_SERVER):
        raise NlpkitError(
            f"--tpu {tpu}: a TPU name needs a Google Cloud machine (metadata server unreachable)", hint=_TPU_HINT
        )


def _can_connect(host, port):
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _connect_tpu(tf, tpu):
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="" if tpu == "local" else tpu)
    if tpu != "local":
        tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _with_time_limit(connect, seconds, tpu):
    """Run `connect()` in a daemon thread; give up with a clear error after `seconds`."""
    result = {}

    def target():
        try:
            result["strategy"] = connect()
        except Exception as err:  # noqa: BLE001 - re-raised below as one readable line
            result["error"] = err

    thread = threading.Thread(target=target, name="tpu-connect", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise NlpkitError(f"--tpu {tpu}: no answer from the TPU within {seconds:.0f} s", hint=_TPU_HINT)
    if "error" in result:
        first_line = str(result["error"]).strip().splitlines()[0] if str(result["error"]).strip() else ""
        raise NlpkitError(f"--tpu {tpu}: {type(result['error']).__name__}: {first_line}", hint=_TPU_HINT)
    return result["strategy"]
