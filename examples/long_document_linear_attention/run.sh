#!/usr/bin/env bash
# A long-document classifier: whole news articles against equally long runs of concatenated movie
# reviews, read at 1,024 tokens by a small BERT whose self-attention is the linear-time "linear"
# attention, chosen by name in the encoder config ("attention_type").
#   bash examples/long_document_linear_attention/run.sh [OUT]
#   SMALL=1 for a fast reduced run; ATTENTION=multi_head (or local, ...) to compare with another attention.
EXAMPLE=long_document_linear_attention
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ATTENTION="${ATTENTION:-linear}"
SEQ="$(size 512 1024)"

step "1/3 long documents: news articles (>= 600 words) vs concatenated reviews of the same length"
prepare long "$OUT/data" --per-class "$(size 16 200)" --test-per-class "$(size 8 100)"

step "2/3 fine-tune a small BERT with '$ATTENTION' attention at $SEQ tokens (random init, bundled BERT vocab)"
cat >"$OUT/encoder.json" <<JSON
{"kind": "bert", "vocab_size": 30522, "hidden_size": 64, "num_layers": 2, "num_attention_heads": 2,
 "inner_dim": 256, "max_sequence_length": $SEQ, "attention_type": "$ATTENTION",
 "output_dropout": 0.0, "attention_dropout": 0.0}
JSON
nlpkit finetune --preset "$OUT/encoder.json" --train "$OUT/data/train.csv" --validation-split 0.2 \
  --output "$OUT/classifier" --epochs "$(size 2 4)" --seq-length "$SEQ" --batch-size 8 \
  --learning-rate 1e-3 --patience 4 --overwrite

step "3/3 evaluate"
nlpkit evaluate --model "$OUT/classifier" --data "$OUT/data/test.csv" --json "$OUT/metrics.json"
finish
