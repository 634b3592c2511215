"""The runtime's elementwise fusion (`nlpkit.training.precision.elementwise_fusion`, issue #19).

A bf16 step without whole-step XLA, under TensorFlow with oneDNN on a CPU, has XLA cluster only the
elementwise ops: the trace of such a step holds XLA clusters (`_XlaRun`) *and* TensorFlow's own
matrix-product kernels, and its losses equal those of the same step unfused. Run in a fresh process:
TensorFlow reads the clustering flags once, before its first function, so they must be set by
`import nlpkit` before TensorFlow starts (as every nlpkit entry point does).
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import contextlib, json, sys, tempfile
    import nlpkit  # sets the clustering flags before TensorFlow loads
    import tensorflow as tf
    from benchmarks.profile_step import read_trace
    from nlpkit.bench import train_step
    from nlpkit.training.precision import elementwise_fusion, fuses_elementwise

    def losses(fused, trace_dir=None):
        model, features = train_step.build_step(train_step.config_encoder("tiny", vocab_size=600, seq_length=16),
                                                batch=4, seq_length=16, predictions=3, precision="mixed_bfloat16",
                                                jit=False)
        context = elementwise_fusion(model) if fused else contextlib.nullcontext()
        with context:
            first = train_step.time_steps(model, features, steps=1, warmup=0)[2]
            if trace_dir:
                tf.profiler.experimental.start(trace_dir)
            second = train_step.time_steps(model, features, steps=1, warmup=0)[2]
            if trace_dir:
                tf.profiler.experimental.stop()
        return [first, second], fuses_elementwise(model)

    with tempfile.TemporaryDirectory() as trace_dir:
        fused, applies = losses(True, trace_dir)
        types = sorted({op_type for _, op_type, _, _ in read_trace(trace_dir)})
    plain, _ = losses(False)
    print(json.dumps({"fused": fused, "plain": plain, "applies": applies, "types": types}))
""")


def test_fusion_clusters_elementwise_ops_only_and_keeps_the_losses():
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    from nlpkit.training.precision import onednn_enabled

    assert result["applies"] == onednn_enabled()
    matmuls = [t for t in result["types"] if "MatMul" in t]
    if result["applies"]:
        assert "_XlaRun" in result["types"], result["types"]
        assert matmuls, result["types"]  # the matrix products stay outside the clusters, on TensorFlow's kernels
    else:
        assert "_XlaRun" not in result["types"], result["types"]
    # Same initial weights and data (seeded): the same losses, within bf16 rounding of fused sums.
    for fused, plain in zip(result["fused"], result["plain"]):
        assert abs(fused - plain) <= 2e-2 * abs(plain), (result["fused"], result["plain"])
