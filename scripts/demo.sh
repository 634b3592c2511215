#!/usr/bin/env bash
# Install nlpkit into .venv, then run the main job end to end on bundled real data (runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
nlpkit demo --output runs/demo --force "$@"
