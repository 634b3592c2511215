#!/usr/bin/env bash
# Export a fine-tuned classifier as a SavedModel that takes raw text, call it from plain Python
# (tensorflow + tensorflow_text only), then through `nlpkit predict --saved-model`.
#   MODEL=DIR bash examples/export_and_serve/run.sh [OUT]
# MODEL is a fine-tuned model directory; without it the finetune_converted_bert example runs first
# (into OUT/finetuned, same SMALL setting).
EXAMPLE=export_and_serve
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

step "1/4 the fine-tuned model to export"
if [ -z "${MODEL:-}" ]; then
  bash "$EXAMPLES/finetune_converted_bert/run.sh" "$OUT/finetuned"
  MODEL="$OUT/finetuned/classifier"
fi
echo "model directory: $MODEL"

step "2/4 export a SavedModel (tokenizer, packer and model in one graph)"
nlpkit export --model "$MODEL" --output "$OUT/saved_model" --force

step "3/4 call it from plain Python: tensorflow + tensorflow_text, no nlpkit"
"$PYTHON" "$EXAMPLES/export_and_serve/serve.py" "$OUT/saved_model" "${SENTENCES[@]}" | tee "$OUT/served.jsonl"

step "4/4 the same through nlpkit predict --saved-model"
nlpkit predict --saved-model "$OUT/saved_model" "${SENTENCES[@]}" --output "$OUT/predictions.jsonl"
cat "$OUT/predictions.jsonl"
finish
