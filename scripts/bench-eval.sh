#!/usr/bin/env bash
# Time `dlogp eval` on SmolLM2 + a LoRA adapter, in one run: the same
# arithmetic problems, samples and seed decoded many sequences side by side
# (--sequences 8, the default lockstep; DRAFT=4 drafts speculatively) against
# one sequence at a time (--sequences 1, lockstep). Checks that both give identical samples, prints
# the decoding tokens/s of each configuration (model load excluded), and
# ends with `parallel/serial = R` over all configurations.
# Usage: scripts/bench-eval.sh [N_PROBLEMS] [K] [MAX_TOKENS] [extra eval flags...]
# Defaults: 8 problems (levels mixed), k = 4, up to 128 tokens, modes base,extrapolate.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n_problems="${1:-8}"
k="${2:-4}"
max_tokens="${3:-128}"
shift 3 || shift $# || true
# shellcheck source=scripts/bench-common.sh
source "$root/scripts/bench-common.sh"
make_lora 8
"$dlogp" tasks arith -n "$n_problems" --seed 1 -o "$work/tasks.jsonl"

run() { # name, sequences, flags...
  local name="$1" sequences="$2"; shift 2
  "$dlogp" eval --quiet --base "$base" --rl-lora "$work/lora.gguf" --data "$work/tasks.jsonl" \
    --modes "${MODES:-base,extrapolate}" -k "$k" --max-tokens "$max_tokens" --last-number --seed 0 \
    --sequences "$sequences" -o "$work/$name.jsonl" --summary "$work/$name.json" "$@" >/dev/null
}

run serial 1 "$@"
run parallel 8 --draft "${DRAFT:-1}" "$@"
cmp -s "$work/serial.jsonl" "$work/parallel.jsonl" || { echo "error: parallel and serial samples differ" >&2; exit 1; }
python3 - "$work/serial.json" "$work/parallel.json" <<'PY'
import json, sys
s, p = (json.load(open(f)) for f in sys.argv[1:])
print(f"{s['n_problems']} problems x {s['k']} samples; identical samples in both runs")
tot = {}
for name, summary in (("serial", s), ("parallel", p)):
    n = t = 0.0
    for c in summary["configs"]:
        tokens = c["mean_tokens"] * c["n_samples"]
        secs = tokens / c["tokens_per_s"]
        n, t = n + tokens, t + secs
        print(f"{name:8s} {c['name']:12s} {int(tokens):6d} tokens {secs:7.2f} s {c['tokens_per_s']:7.1f} tokens/s"
              f"  Avg@{summary['k']} {100*c['avg_at_k']:.1f}%  replaced {100*c['replacement_ratio']:.2f}%")
    tot[name] = n / t
    print(f"{name:8s} all          {int(n):6d} tokens {t:7.2f} s {n/t:7.1f} tokens/s")
print(f"parallel/serial = {tot['parallel']/tot['serial']:.3f}")
PY
