#!/usr/bin/env bash
# The test command (README and CI): the whole suite under TensorFlow with this machine's oneDNN
# setting, the TensorFlow layer and encoder tests again with the other one (so an AVX2-only CI
# machine still runs the oneDNN kernels, and an AMX one the plain ones), then the layer tests
# under JAX.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
machine_onednn=$(scripts/onednn_default.sh)
case "${TF_ENABLE_ONEDNN_OPTS:-$machine_onednn}" in
  1 | true | True | TRUE) main_onednn=1 ;;
  *) main_onednn=0 ;;
esac
other_onednn=$((1 - main_onednn))
echo "oneDNN: main run TF_ENABLE_ONEDNN_OPTS=$main_onednn (TensorFlow's default on this CPU:" \
  "$machine_onednn); tests/layers tests/encoders again with TF_ENABLE_ONEDNN_OPTS=$other_onednn"
python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15 tests
TF_ENABLE_ONEDNN_OPTS=$other_onednn \
  python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests/layers tests/encoders
# Eager JAX compiles every op for every new shape; the layer tests run tiny shapes, so XLA's slow
# CPU code optimisations cost more than they save (they halve this run's time). Results are unchanged.
export XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests/layers
