"""Strategy resolution: CPU strategies work, a missing TPU fails fast with one clear line."""

import json
import socket
import time

import pytest

from nlpkit.errors import NlpkitError
from nlpkit.training import strategies
from nlpkit.training.strategies import plan_batch, resolve_strategy


def _closed_port():
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("tpu", ["local", "my-tpu-name", "grpc://127.0.0.1:{port}"])
def test_tpu_without_tpu_fails_fast_with_one_line(tpu):
    tpu = tpu.format(port=_closed_port())
    start = time.monotonic()
    with pytest.raises(NlpkitError) as caught:
        resolve_strategy("auto", tpu=tpu)
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert tpu in message and "\n" not in message


def test_tpu_connection_time_limit(monkeypatch):
    # Something answers at the address but never finishes initialising: the time limit fires.
    monkeypatch.setattr(strategies, "_check_tpu_reachable", lambda tpu: None)
    monkeypatch.setattr(strategies, "_connect_tpu", lambda tf, tpu: time.sleep(30))
    monkeypatch.setattr(strategies, "TPU_CONNECT_TIMEOUT_S", 0.5)
    start = time.monotonic()
    with pytest.raises(NlpkitError, match="no answer from the TPU"):
        resolve_strategy("tpu", tpu="grpc://10.0.0.1:8470")
    assert time.monotonic() - start < 5


def test_cpu_strategy_runs_a_replica_step():
    strategy = resolve_strategy("cpu")
    assert strategy.num_replicas_in_sync == 1
    result = strategy.run(lambda x: x * 2.0, args=(3.0,))
    assert float(strategy.reduce("SUM", result, axis=None)) == 6.0
    plan = plan_batch(strategy, 32)
    assert (plan.replicas, plan.per_replica_batch, plan.global_batch) == (1, 32, 32)
    assert "1 replica(s) x 32 = global batch 32" in plan.describe()


def test_auto_and_mirrored_on_a_cpu_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert resolve_strategy("auto").num_replicas_in_sync == 1
    assert resolve_strategy("mirrored").num_replicas_in_sync == 1


class _FakeStrategy:
    num_replicas_in_sync = 8


def test_batch_split_over_replicas():
    plan = plan_batch(_FakeStrategy(), 64)
    assert (plan.per_replica_batch, plan.global_batch) == (8, 64)
    with pytest.raises(NlpkitError, match="multiple of 8"):
        plan_batch(_FakeStrategy(), 60)


def test_bad_names_and_options(monkeypatch):
    with pytest.raises(NlpkitError, match="unknown --strategy"):
        resolve_strategy("fastest")
    with pytest.raises(NlpkitError, match="cannot be combined"):
        resolve_strategy("cpu", tpu="local")
    with pytest.raises(NlpkitError, match="no GPU"):
        resolve_strategy("gpu")  # this machine has none; on a GPU machine this test would need changing


@pytest.mark.parametrize(
    "tf_config,match",
    [
        (None, "needs the TF_CONFIG"),
        ("{not json", "not valid"),
        (json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}), "index 3"),
    ],
)
def test_multi_worker_checks_tf_config(monkeypatch, tf_config, match):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(NlpkitError, match=match):
        resolve_strategy("multi-worker")
