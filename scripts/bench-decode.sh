#!/usr/bin/env bash
# Time generation on SmolLM2 + a LoRA adapter, in one run: plain single-model
# generation (`--mode rl`) against selective extrapolation (`--mode extrapolate`)
# with lockstep decoding (K = 1, the default) and with speculative gating
# (K = 4, or DRAFT=K). Same prompts, seed and length. Prints tokens/s and the
# gate rate of each; the last lines are `lockstep/plain` (the default's
# ratio) and `speculative/plain`.
# Usage: scripts/bench-decode.sh [N_PROMPTS] [MAX_TOKENS] [extra generate flags...]
# Defaults: 4 GSM8K prompts, up to 256 tokens, one sequence at a time (a laptop
# user; SEQUENCES=8 decodes them side by side).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n_prompts="${1:-4}"
max_tokens="${2:-256}"
sequences="${SEQUENCES:-1}"
shift 2 || shift $# || true
# shellcheck source=scripts/bench-common.sh
source "$root/scripts/bench-common.sh"
make_lora 8
python3 - "$data" "$n_prompts" > "$work/prompts.jsonl" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
suffix = " Please reason step by step, and put your final answer within \\boxed{}."
with open(path) as f:
    for i, line in zip(range(n), f):
        print(json.dumps({"id": i, "prompt": json.loads(line)["question"] + suffix}))
PY

run() { # name, flags...: prints "seconds tokens gate_rate"
  local name="$1"; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$dlogp" generate --quiet --base "$base" --rl-lora "$work/lora.gguf" --input "$work/prompts.jsonl" \
    --output "$work/$name.jsonl" --max-tokens "$max_tokens" --sequences "$sequences" --seed 0 "$@"
  t1=$(date +%s.%N)
  python3 - "$work/$name.jsonl" "$t0" "$t1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n = sum(r["n_tokens"] for r in rows)
fired = sum(r["replacement_ratio"] * r["n_tokens"] for r in rows)
print(float(sys.argv[3]) - float(sys.argv[2]), n, fired / max(n, 1))
PY
}

"$dlogp" generate --quiet --base "$base" --max-tokens 4 "warm up" >/dev/null
read -r plain_s plain_n _ < <(run plain --mode rl "$@")
read -r k1_s k1_n k1_gate < <(run lockstep --mode extrapolate --draft 1 "$@")
read -r kd_s kd_n kd_gate < <(run speculative --mode extrapolate --draft "${DRAFT:-4}" "$@")
cmp -s "$work/lockstep.jsonl" "$work/speculative.jsonl" || { echo "error: speculative and lockstep outputs differ" >&2; exit 1; }
python3 - "$plain_s" "$plain_n" "$k1_s" "$k1_n" "$k1_gate" "$kd_s" "$kd_n" "$kd_gate" "$n_prompts" "$max_tokens" <<'PY'
import sys
ps, pn, k1s, k1n, k1g, kds, kdn, kdg, n, m = sys.argv[1:]
ps, pn, k1s, k1n, k1g, kds, kdn, kdg = float(ps), int(pn), float(k1s), int(k1n), float(k1g), float(kds), int(kdn), float(kdg)
print(f"{n} prompts, up to {m} tokens each (wall time includes model load and prompt processing)")
print(f"plain --mode rl:                {pn:6d} tokens {ps:7.2f} s {pn/ps:7.1f} tokens/s")
print(f"extrapolate, lockstep (K = 1):  {k1n:6d} tokens {k1s:7.2f} s {k1n/k1s:7.1f} tokens/s  gate rate {100*k1g:.2f}%")
print(f"extrapolate, speculative K:     {kdn:6d} tokens {kds:7.2f} s {kdn/kds:7.1f} tokens/s  gate rate {100*kdg:.2f}%")
print(f"lockstep/plain = {(k1n/k1s)/(pn/ps):.3f}")
print(f"speculative/plain = {(kdn/kds)/(pn/ps):.3f}")
PY
