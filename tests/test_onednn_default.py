"""scripts/onednn_default.sh: the oneDNN mode scripts/test.sh runs first is TensorFlow's own default."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "onednn_default.sh"
AVX2_ONLY = "flags\t\t: fpu sse sse2 avx avx2 fma f16c\n"
AVX512F_ONLY = "flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512vl\n"
SAPPHIRE_RAPIDS = "flags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN4 = "flags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n"
ALDER_LAKE = "flags\t\t: avx2 avx_vnni\n"


def default_for(cpuinfo):
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, check=True,
                          env={**os.environ, **({"CPUINFO": str(cpuinfo)} if cpuinfo else {})})
    return done.stdout


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(AVX2_ONLY, "0\n"), (AVX512F_ONLY, "0\n"), (SAPPHIRE_RAPIDS, "1\n"), (ZEN4, "1\n"), (ALDER_LAKE, "1\n")],
    ids=["avx2", "avx512f", "amx", "avx512-vnni", "avx-vnni"],
)
def test_rule_follows_tensorflows_cpu_features(tmp_path, flags, expected):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\n" + flags)
    assert default_for(tmp_path / "cpuinfo") == expected


def test_this_machine_agrees_with_tensorflow():
    """TensorFlow itself, with TF_ENABLE_ONEDNN_OPTS unset, decides the same for this CPU."""
    probe = "from tensorflow.python.util import _pywrap_util_port as port; print(int(port.IsMklEnabled()))"
    environment = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, timeout=300)
    assert done.stdout.strip().splitlines()[-1] + "\n" == default_for(None)
