#!/usr/bin/env bash
# SNGP: fine-tune the converted all-MiniLM-L6-v2 with a spectral-normalised Gaussian-process head on
# Rotten Tomatoes, then evaluate calibration (ECE, reliability diagram) and how well its uncertainty
# tells news sentences (out of distribution) from reviews (OOD AUROC).
#   bash examples/sngp_ood/run.sh [OUT]      (SMALL=1 for a fast reduced run; CONVERTED=DIR reuses a conversion)
EXAMPLE=sngp_ood
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

step "1/4 convert the bundled all-MiniLM-L6-v2 into a model directory"
MODEL="$(converted_minilm)"

step "2/4 Rotten Tomatoes splits + out-of-distribution news sentences"
review_data

step "3/4 fine-tune an SNGP head"
finetune_on_reviews "$MODEL" sngp "$OUT/sngp"

step "4/4 evaluate with --ood (news sentences vs the review test split), predict with uncertainty"
nlpkit evaluate --model "$OUT/sngp" --data "$OUT/data/test.csv" --ood "$OUT/data/ood.txt" \
  --json "$OUT/metrics.json" --diagram "$OUT/reliability.png"
nlpkit predict --model "$OUT/sngp" "${SENTENCES[@]}" --output "$OUT/predictions.jsonl"
cat "$OUT/predictions.jsonl"
finish
