#!/usr/bin/env bash
# dlogp against the program a user would write without it: a llama-cpp-python
# loop (scripts/bench_peer.py: two `Llama` objects, base and base + adapter,
# stepped concurrently on one thread each, numpy log-softmax and top-p), on
# SmolLM2 + the committed adapter, same prompts and settings (T 1, top-p 0.7,
# τ −0.3, γ 0.1), programs interleaved, REPS repetitions, medians of
# wall-clock tokens/s. Then teacher-forced pair scoring: `dlogp score` against
# the peer computing Δlog p, both entropies and KL with numpy.
# The last lines are the ratios `dlogp ÷ peer`.
# Usage: scripts/bench-peer.sh [N_PROMPTS] [MAX_TOKENS] [N_SCORE_ROWS]
# (defaults 4, 128, 12; REPS=3). Installs llama-cpp-python like
# scripts/test-python-host.sh (minutes the first time).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n_prompts="${1:-4}"
max_tokens="${2:-128}"
n_rows="${3:-12}"
reps="${REPS:-3}"
# shellcheck source=scripts/bench-common.sh
source "$root/scripts/bench-common.sh"
# shellcheck source=scripts/python-host-env.sh
source "$root/scripts/python-host-env.sh"
adapter="gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf"
python3 - "$data" "$n_prompts" "$n_rows" "$work" <<'PY'
import json, sys
path, n, m, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for _, l in zip(range(max(n, m)), open(path))]
with open(f"{work}/prompts.jsonl", "w") as f:
    for i, r in enumerate(rows[:n]):
        f.write(json.dumps({"id": i, "prompt": r["question"]}) + "\n")
with open(f"{work}/rows.jsonl", "w") as f:
    for i, r in enumerate(rows[:m]):
        f.write(json.dumps({"id": i, "prompt": r["question"], "response": r["answer"]}) + "\n")
PY

dlogp_generate() { # flags... -> "seconds tokens"
  local t0 t1
  t0=$(date +%s.%N)
  "$dlogp" generate --quiet --base "$base" --rl-lora "$adapter" --input "$work/prompts.jsonl" \
    --output "$work/gen.jsonl" --max-tokens "$max_tokens" --seed 0 "$@"
  t1=$(date +%s.%N)
  python3 -c "import json,sys; print($t1 - $t0, sum(json.loads(l)['n_tokens'] for l in open('$work/gen.jsonl')))"
}
dlogp_score() { # -> "seconds tokens"
  local t0 t1
  t0=$(date +%s.%N)
  "$dlogp" score --quiet --base "$base" --rl-lora "$adapter" --input "$work/rows.jsonl" \
    --output "$work/score.jsonl" --raw
  t1=$(date +%s.%N)
  echo "$(python3 -c "print($t1 - $t0)") $(wc -l < "$work/score.jsonl")"
}

"$dlogp" generate --quiet --base "$base" --max-tokens 4 "warm up" >/dev/null
: > "$work/times"
for r in $(seq "$reps"); do
  echo "dlogp-default $(dlogp_generate)" >> "$work/times"
  echo "dlogp-seq1 $(dlogp_generate --sequences 1)" >> "$work/times"
  echo "peer-generate $("$py" scripts/bench_peer.py generate "$base" "$adapter" "$work/prompts.jsonl" "$max_tokens" | cut -d' ' -f1,2)" >> "$work/times"
  echo "dlogp-score $(dlogp_score)" >> "$work/times"
  echo "peer-score $("$py" scripts/bench_peer.py score "$base" "$adapter" "$work/rows.jsonl")" >> "$work/times"
  echo "repetition $r done" >&2
done
python3 - "$work/times" "$n_prompts" "$max_tokens" "$n_rows" "$reps" <<'PY'
import statistics, sys
rates = {}
for line in open(sys.argv[1]):
    name, s, n = line.split()
    rates.setdefault(name, []).append(float(n) / float(s))
n, m, rows, reps = sys.argv[2:]
med = {k: statistics.median(v) for k, v in rates.items()}
print(f"{n} prompts x up to {m} tokens; {rows} scored rows; {reps} repetitions, medians (min-max)")
for k, v in rates.items():
    print(f"{k:14s} {med[k]:8.1f} tokens/s  ({min(v):.1f}-{max(v):.1f})")
print(f"selective extrapolation, dlogp --sequences 1 / peer = {med['dlogp-seq1'] / med['peer-generate']:.2f}")
print(f"selective extrapolation, dlogp default / peer = {med['dlogp-default'] / med['peer-generate']:.2f}")
print(f"pair scoring, dlogp / peer = {med['dlogp-score'] / med['peer-score']:.2f}")
PY
