#!/usr/bin/env bash
# Which decoding settings are fastest on this machine, for the work the
# defaults serve: one prompt, and several prompts (the CLI's --sequences and
# --draft). Selective extrapolation on SmolLM2 + the committed adapter, the
# paper's defaults (τ −0.3, γ 0.1, T 1, top-p 0.7), all settings interleaved,
# REPS repetitions; medians (min–max) of wall-clock tokens/s. Every setting
# of one workload must give the same tokens (exact speculative decoding on
# the CPU backend); the script checks that, then prints the table.
# Usage: scripts/bench-settings.sh [N_PROMPTS] [MAX_TOKENS]   (defaults 4, 128; REPS=3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n_prompts="${1:-4}"
max_tokens="${2:-128}"
reps="${REPS:-3}"
# shellcheck source=scripts/bench-common.sh
source "$root/scripts/bench-common.sh"
adapter="gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf"
python3 - "$data" "$n_prompts" "$work" <<'PY'
import json, sys
path, n, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for _, l in zip(range(n), open(path))]
for name, subset in (("one", rows[:1]), ("many", rows)):
    with open(f"{work}/{name}.jsonl", "w") as f:
        for i, r in enumerate(subset):
            f.write(json.dumps({"id": i, "prompt": r["question"]}) + "\n")
PY
# workload|label|flags ("" = the defaults)
settings=(
  "one|default|"
  "one|--draft 1|--draft 1"
  "one|--draft 2|--draft 2"
  "one|--draft 4|--draft 4"
  "many|default|"
  "many|--draft 1|--draft 1"
  "many|--sequences 1|--sequences 1"
  "many|--sequences 1 --draft 4|--sequences 1 --draft 4"
  "many|--sequences 2|--sequences 2"
  "many|--sequences 4 --draft 1|--sequences 4 --draft 1"
  "many|--sequences 4 --draft 8|--sequences 4 --draft 8"
)
"$dlogp" generate --quiet --base "$base" --max-tokens 4 "warm up" >/dev/null
: > "$work/times"
for r in $(seq "$reps"); do
  for i in "${!settings[@]}"; do
    IFS='|' read -r load label flags <<<"${settings[$i]}"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$dlogp" generate --quiet --base "$base" --rl-lora "$adapter" --input "$work/$load.jsonl" \
      --output "$work/out-$i.jsonl" --max-tokens "$max_tokens" --seed 0 $flags
    t1=$(date +%s.%N)
    n=$(python3 -c "import json; print(sum(json.loads(l)['n_tokens'] for l in open('$work/out-$i.jsonl')))")
    echo "$i $t0 $t1 $n" >> "$work/times"
  done
  echo "repetition $r done" >&2
done
python3 - "$work" "$reps" "$n_prompts" "$max_tokens" "${settings[@]}" <<'PY'
import json, statistics, sys
work, reps, n, m, settings = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
rates = {}
for line in open(f"{work}/times"):
    i, t0, t1, k = line.split()
    rates.setdefault(int(i), []).append(int(k) / (float(t1) - float(t0)))
texts = {}
for i, s in enumerate(settings):
    load = s.split("|")[0]
    texts.setdefault(load, set()).add(open(f"{work}/out-{i}.jsonl").read())
bad = [load for load, t in texts.items() if len(t) != 1]
if bad:
    sys.exit(f"error: settings of {bad} gave different outputs")
print(f"{reps} repetitions, medians (min-max) of tokens/s; one = 1 prompt, many = {n} prompts; up to {m} tokens each")
for load in ("one", "many"):
    rows = [(i, s.split("|")[1]) for i, s in enumerate(settings) if s.split("|")[0] == load]
    best = max(statistics.median(rates[i]) for i, _ in rows)
    for i, label in rows:
        v = rates[i]
        med = statistics.median(v)
        print(f"{load:4s} {label:28s} {med:7.1f}  ({min(v):.1f}-{max(v):.1f})  {med / best:5.2f} of the fastest")
PY
