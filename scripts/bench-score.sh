#!/usr/bin/env bash
# Time `dlogp score` on SmolLM2 (base vs base + LoRA, both models per token)
# against a single-model teacher-forced evaluation of the same tokens
# (`dlogp score --base` alone: same tokenizer, batching and I/O), in one run.
# Prints tokens/s of each; the last line is `score/single = R`.
# Usage: scripts/bench-score.sh [N_ROWS] [extra dlogp score flags...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n_rows="${1:-48}"
shift || true
# shellcheck source=scripts/bench-common.sh
source "$root/scripts/bench-common.sh"
make_lora 16
python3 - "$data" "$n_rows" > "$work/rows.jsonl" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    for i, line in zip(range(n), f):
        row = json.loads(line)
        print(json.dumps({"id": i, "prompt": row["question"], "response": row["answer"]}))
PY

time_it() { # name, args...: prints seconds
  local name="$1"; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$dlogp" score --quiet --input "$work/rows.jsonl" --output "$work/$name.jsonl" "$@"
  t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}

# warm the page cache
"$dlogp" score --quiet --base "$base" --input "$work/rows.jsonl" --output /dev/null --raw 2>/dev/null | true

single_s=$(time_it single --base "$base" "$@")
pair_s=$(time_it pair --base "$base" --rl-lora "$work/lora.gguf" "$@")
n_tokens=$(wc -l < "$work/pair.jsonl")
[ "$n_tokens" -eq "$(wc -l < "$work/single.jsonl")" ] || { echo "error: token counts differ" >&2; exit 1; }
python3 - "$n_tokens" "$single_s" "$pair_s" "$n_rows" <<'PY'
import sys
n, single, pair, rows = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"rows: {rows}, scored response tokens: {n} (wall time includes model load)")
print(f"single model: {single:7.2f} s  {n / single:8.1f} tokens/s")
print(f"pair (base + LoRA): {pair:7.2f} s  {n / pair:8.1f} tokens/s")
print(f"score/single = {single / pair:.3f}")
PY
