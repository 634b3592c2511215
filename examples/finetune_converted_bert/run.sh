#!/usr/bin/env bash
# Fine-tune the real all-MiniLM-L6-v2 BERT weights, converted by `nlpkit convert`, on Rotten Tomatoes
# (fresh vs rotten), then evaluate on a held-out test split and predict on raw sentences.
#   bash examples/finetune_converted_bert/run.sh [OUT]      (SMALL=1 for a fast reduced run)
EXAMPLE=finetune_converted_bert
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

step "1/4 convert the bundled all-MiniLM-L6-v2 (Hugging Face safetensors) into a model directory"
MODEL="$(converted_minilm)"

step "2/4 Rotten Tomatoes splits (fresh / rotten)"
review_data

step "3/4 fine-tune a classification head"
finetune_on_reviews "$MODEL" classification "$OUT/classifier"

step "4/4 evaluate on the test split, predict on raw sentences"
nlpkit evaluate --model "$OUT/classifier" --data "$OUT/data/test.csv" --json "$OUT/metrics.json"
nlpkit predict --model "$OUT/classifier" "${SENTENCES[@]}" --output "$OUT/predictions.jsonl"
cat "$OUT/predictions.jsonl"
finish
