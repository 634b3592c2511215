#!/usr/bin/env bash
# From raw news text to a pretrained tiny BERT: train a WordPiece vocabulary, tokenize and pack the
# text, and pretrain with masked-LM.
#   bash examples/pretrain_from_raw_text/run.sh [OUT]      (SMALL=1 for a fast reduced run)
EXAMPLE=pretrain_from_raw_text
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

step "1/4 bundled news articles as plain text"
prepare news "$OUT/data" --limit "$(size 60 1000)"

step "2/4 train a WordPiece vocabulary on them"
nlpkit vocab "$OUT/data/news.txt" --output "$OUT/vocab.txt" --size "$(size 2000 8000)"

step "3/4 tokenize and pack (TFRecord shards + manifest.json); the first rows shown as tokens"
nlpkit tokenize "$OUT/data/news.txt" --vocab "$OUT/vocab.txt" --output "$OUT/shards" \
  --seq-length "$(size 64 128)" --preview 2 --force

step "4/4 pretrain a tiny BERT (masked LM) with that vocabulary"
# The encoder config: BERT-Tiny's shape, with the vocabulary size the trained vocab actually has.
cat >"$OUT/tiny_bert.json" <<JSON
{"kind": "bert", "vocab_size": $(wc -l <"$OUT/vocab.txt"), "hidden_size": 128, "num_layers": 2,
 "num_attention_heads": 2, "inner_dim": 512, "max_sequence_length": 512}
JSON
nlpkit pretrain --data "$OUT/data/news_docs.txt" --preset "$OUT/tiny_bert.json" --vocab "$OUT/vocab.txt" \
  --output "$OUT/pretrained" --max-steps "$(size 20 300)" --batch-size "$(size 8 32)" \
  --seq-length "$(size 64 128)" --learning-rate 1e-3 --checkpoint-every "$(size 10 100)" --overwrite
echo "the pretraining run is a model directory: nlpkit finetune --model $OUT/pretrained ..."
finish
