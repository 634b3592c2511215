#!/usr/bin/env bash
# The test command (README and CI): the whole suite under TensorFlow, then the layer tests under JAX.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
python -m pytest -q -p no:cacheprovider -n 2 tests
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider -n 2 tests/layers
