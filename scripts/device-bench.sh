#!/usr/bin/env bash
# Speed ratios of a dlogp binary without cargo or ../shared (for a lent GPU
# machine: scripts/device-check.sh runs it): generation, plain (`--mode rl`)
# against selective extrapolation (default draft); scoring, one model
# against the base + LoRA pair. The prompts and responses are
# tests/data/score-rows.jsonl's, each used REPEAT times.
#
#   scripts/device-bench.sh DLOGP_BIN BASE.gguf ADAPTER.gguf [MAX_TOKENS] [REPEAT] [flags...]
#
# Prints tokens/s of each run, then `extrapolate/plain = R` and
# `pair/single (score) = R`. Flags (e.g. --gpu-layers 999) go to every run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dlogp="${1:?usage: device-bench.sh DLOGP_BIN BASE.gguf ADAPTER.gguf [MAX_TOKENS] [REPEAT] [flags...]}"
base="${2:?base model}" adapter="${3:?adapter}"
max_tokens="${4:-128}" repeat="${5:-4}"
shift 5 2>/dev/null || shift $#
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$root/tests/data/score-rows.jsonl" "$repeat" "$work" <<'PY'
import json, sys
src, repeat, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(src) if l.strip()]
with open(f"{work}/prompts.jsonl", "w") as p, open(f"{work}/rows.jsonl", "w") as r:
    for k in range(repeat):
        for row in rows:
            if "prompt" in row:
                p.write(json.dumps({"id": f"{row['id']}-{k}", "prompt": row["prompt"]}) + "\n")
            r.write(json.dumps(dict(row, id=f"{row['id']}-{k}")) + "\n")
PY
clock() { python3 -c 'import time; print(time.time())'; }
gen() { # name, flags: prints "tokens/s tokens"
  local name="$1" t0 t1; shift
  t0=$(clock)
  "$dlogp" generate --quiet --base "$base" --rl-lora "$adapter" --input "$work/prompts.jsonl" \
    --output "$work/$name.jsonl" --max-tokens "$max_tokens" --seed 0 "$@"
  t1=$(clock)
  python3 - "$work/$name.jsonl" "$t0" "$t1" <<'PY'
import json, sys
n = sum(json.loads(l)["n_tokens"] for l in open(sys.argv[1]))
print(n / (float(sys.argv[3]) - float(sys.argv[2])), n)
PY
}
score() { # name, flags: prints "tokens/s tokens"
  local name="$1" t0 t1; shift
  t0=$(clock)
  "$dlogp" score --quiet --truncate --input "$work/rows.jsonl" --output "$work/$name.jsonl" "$@"
  t1=$(clock)
  python3 -c "import sys; n = sum(1 for _ in open('$work/$name.jsonl')); print(n / ($t1 - $t0), n)"
}
"$dlogp" generate --quiet --base "$base" --max-tokens 4 "$@" "warm up" >/dev/null
read -r plain plain_n < <(gen plain --mode rl "$@")
read -r extra extra_n < <(gen extrapolate --mode extrapolate "$@")
read -r single single_n < <(score single --base "$base" "$@")
read -r pair pair_n < <(score pair --base "$base" --rl-lora "$adapter" "$@")
printf 'generate, plain (--mode rl):     %6d tokens %8.1f tokens/s\n' "$plain_n" "$plain"
printf 'generate, extrapolate:           %6d tokens %8.1f tokens/s\n' "$extra_n" "$extra"
printf 'score, one model:                %6d tokens %8.1f tokens/s\n' "$single_n" "$single"
printf 'score, base + LoRA pair:         %6d tokens %8.1f tokens/s\n' "$pair_n" "$pair"
python3 -c "print(f'extrapolate/plain = {$extra / $plain:.3f}'); print(f'pair/single (score) = {$pair / $single:.3f}')"
