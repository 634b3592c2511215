#!/usr/bin/env bash
# Multi-worker data-parallel pretraining on one machine: two `nlpkit pretrain --strategy multi-worker`
# processes, each told its place in the cluster by TF_CONFIG, talking over loopback ports.
# Worker 0 is the chief: it writes the checkpoints and the final model directory.
#   bash examples/two_worker_training/run.sh [OUT]      (SMALL=1 for a fast reduced run)
EXAMPLE=two_worker_training
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

step "1/3 bundled news text (one sentence per line, a blank line between articles)"
prepare news "$OUT/data" --limit "$(size 30 300)"
cat >"$OUT/encoder.json" <<JSON
{"kind": "bert", "vocab_size": 30522, "hidden_size": 64, "num_layers": 2, "num_attention_heads": 2,
 "inner_dim": 256, "max_sequence_length": 128}
JSON

step "2/3 two workers on loopback ports"
read -r PORT0 PORT1 < <("$PYTHON" - <<'PY'
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
PY
)
CLUSTER="{\"worker\": [\"127.0.0.1:$PORT0\", \"127.0.0.1:$PORT1\"]}"
VOCAB="$("$PYTHON" -c 'from nlpkit.data.bundled import bert_vocab_path; print(bert_vocab_path())')"
rm -rf "$OUT/run"  # a fresh run; --overwrite on two workers at once would race
PIDS=()
for INDEX in 0 1; do
  TF_CONFIG="{\"cluster\": $CLUSTER, \"task\": {\"type\": \"worker\", \"index\": $INDEX}}" \
    "$PYTHON" -m commands.main pretrain --strategy multi-worker --data "$OUT/data/news_docs.txt" \
    --preset "$OUT/encoder.json" --vocab "$VOCAB" --output "$OUT/run" \
    --max-steps "$(size 4 100)" --batch-size "$(size 8 32)" --seq-length "$(size 32 128)" \
    --checkpoint-every "$(size 2 50)" >"$OUT/worker$INDEX.log" 2>&1 &
  PIDS+=($!)
  echo "worker $INDEX: 127.0.0.1:$([ $INDEX = 0 ] && echo "$PORT0" || echo "$PORT1"), log $OUT/worker$INDEX.log"
done
FAILED=0
for INDEX in 0 1; do
  wait "${PIDS[$INDEX]}" || { FAILED=1; echo "worker $INDEX failed; last lines of its log:"; tail -n 20 "$OUT/worker$INDEX.log"; }
done
[ "$FAILED" = 0 ] || exit 1

step "3/3 the chief's summary"
grep -E "replica|steps|→" "$OUT/worker0.log" || true
echo "model directory: $OUT/run"
finish
