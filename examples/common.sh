# Sourced by every examples/*/run.sh (which sets EXAMPLE first): output folder, size switch,
# the nlpkit CLI and timed steps.
#   OUT     output folder: first argument, else $OUT, else runs/examples/$EXAMPLE
#   SMALL=1 a fast reduced run (what tests/examples/test_examples.py runs)
#   PYTHON  the interpreter that has nlpkit installed (default: python of the active venv)
set -euo pipefail
EXAMPLES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
SMALL="${SMALL:-0}"
OUT="${1:-${OUT:-runs/examples/$EXAMPLE}}"
mkdir -p "$OUT"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"  # TF C++ log noise off

# The CLI through the interpreter above, so the script works with or without an activated venv.
nlpkit() { "$PYTHON" -m commands.main "$@"; }
prepare() { "$PYTHON" "$EXAMPLES/prepare_data.py" "$@"; }
# size SMALL_VALUE FULL_VALUE: the value for this run's size.
size() { if [ "$SMALL" = 1 ]; then echo "$1"; else echo "$2"; fi; }

STARTED=$SECONDS
step() { echo; echo "== [$((SECONDS - STARTED))s] $*"; }
finish() { echo; echo "== $EXAMPLE done in $((SECONDS - STARTED))s; outputs under $OUT"; }

# Model directory with the real all-MiniLM-L6-v2 weights: $CONVERTED if given (reuse an earlier
# conversion), else converted now from the bundled package into $OUT/minilm.
converted_minilm() {
  if [ -n "${CONVERTED:-}" ]; then
    echo "reusing the converted model directory $CONVERTED" >&2
    echo "$CONVERTED"
    return
  fi
  local source
  source="$("$PYTHON" -c 'from nlpkit.data.bundled import minilm_dir; print(minilm_dir())')"
  nlpkit convert "$source" --output "$OUT/minilm" --force >"$OUT/convert.log"
  echo "converted $source -> $OUT/minilm (accounting table: $OUT/convert.log)" >&2
  echo "$OUT/minilm"
}

# The review splits every sentiment example uses (train / validation / test.csv, ood.txt under $OUT/data).
review_data() {
  prepare reviews "$OUT/data" --train "$(size 96 3000)" --validation "$(size 32 500)" \
    --test "$(size 32 1500)" --ood "$(size 32 1000)"
}

# A few raw sentences to predict on.
SENTENCES=(
  "A gripping, beautifully shot film with a terrific lead performance."
  "Tedious, overlong and not once funny."
  "The Senate voted on Tuesday to confirm the nominee after a long debate."
)

# finetune_on_reviews MODEL HEAD OUTPUT: fine-tune MODEL with HEAD (classification | sngp) on the
# review splits; both heads get the same settings so their metrics compare directly.
finetune_on_reviews() {
  nlpkit finetune --model "$1" --head "$2" --output "$3" --train "$OUT/data/train.csv" \
    --validation "$OUT/data/validation.csv" --epochs "$(size 1 2)" --seq-length "$(size 32 48)" \
    --batch-size 32 --learning-rate 1e-4 --overwrite
}
