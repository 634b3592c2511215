"""benchmarks/profile_step.py: the op categories, the busy-time union, and one profiled tiny step
(the plumbing, not the figures)."""

import json
import sys

import pytest


@pytest.fixture
def profile_step(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script sets sys.path[0] when imported
    from benchmarks import profile_step

    return profile_step


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gradient_tape/pretrainer/bert_encoder/transformer_layer_0/attention/query/MatMul/MatMul:_MklBatchMatMulV2",
         "matmul"),
        ("pretrainer/bert_encoder/transformer_layer_0/attention/Softmax:_MklSoftmax", "attention / softmax"),
        ("pretrainer/bert_encoder/transformer_layer_0/attention/transpose_1:_MklTranspose", "attention / softmax"),
        ("pretrainer/bert_encoder/transformer_layer_1/output_layer_norm/moments/SquaredDifference:SquaredDifference",
         "layer norm"),
        ("AddN_19/inputs_1:UnsortedSegmentSum", "embedding gradient"),
        ("adam_w/AssignSubVariableOp_16:AssignSubVariableOp", "optimizer update"),
        ("adam_w/Sqrt_2:Sqrt", "optimizer update"),
        ("adam_w_5/Mul_112:Mul", "optimizer update"),  # the optimizer of a process that made several
        ("compile_loss/sparse_categorical_crossentropy/SparseSoftmaxCrossEntropyWithLogits:"
         "SparseSoftmaxCrossEntropyWithLogits", "loss"),
        ("pretrainer/bert_encoder/transformer_layer_0/feedforward/inner_dense/Gelu/Erfc:Erfc", "other ops"),
    ],
)
def test_op_categories(profile_step, name, expected):
    match = profile_step.OP_EVENT.match(name)
    assert match and profile_step.category(match["scope"], match["type"]) == expected


def test_busy_time_is_the_union_of_op_intervals(profile_step):
    # [0, 10) and [5, 12) overlap (12 busy), [20, 21) alone, [30, 40) holds [32, 33): 12 + 1 + 10.
    ops = [("a", "X", 0, 10), ("b", "X", 5, 7), ("c", "X", 20, 1), ("d", "X", 30, 10), ("e", "X", 32, 1)]
    assert profile_step.busy_ps(ops) == 23


def test_one_tiny_step_is_profiled(profile_step, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["profile_step.py", "--config", "tiny", "--batch", "2", "--seq", "16",
                                      "--predictions", "3", "--steps", "1", "--warmup", "1"])
    profile_step.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    assert set(result["op_share"]) == set(profile_step.CATEGORIES)
    assert sum(result["op_share"].values()) == pytest.approx(1, abs=1e-3)
    assert result["op_ms_per_step"]["matmul"] > 0 and result["op_ms_per_step"]["optimizer update"] > 0
    assert 0 <= result["host_overhead_share_of_wall"] < 1 and result["step_ms"] > 0
    assert result["heaviest_ops_ms_per_step"]
