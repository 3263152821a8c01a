#!/usr/bin/env bash
# The laptop-scale reproduction of METHOD.md §4 (preliminary; see README):
# DAPO and DAPO + low-probability reweighting on SmolLM2-135M-Instruct with
# seeded arithmetic (levels 1 and 3), the same seed and budget; then Avg@4 on
# a held-out test split for the base model, both adapters, and selective
# extrapolation base -> reweighted with τ, γ chosen on a validation split.
# Usage: scripts/reproduce.sh [OUT_DIR]   (about 1.5 h on 2 cores)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/fetch-model.sh"
cargo build --release --quiet
dlogp="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/dlogp"
base="$root/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
out="$(realpath -m "${1:-out/reproduce}")"
mkdir -p "$out"
cd "$out"

# 1. Data: levels 1 and 3, deduplicated by question, shuffled; disjoint
#    test (100), validation (40) and training (the rest) splits.
for l in 1 3; do "$dlogp" tasks arith -n 600 --level "$l" --seed 11 -o "m$l.jsonl"; done
python3 - <<'PY'
import json, random
rows = [json.loads(x) for l in (1, 3) for x in open(f"m{l}.jsonl")]
seen, uniq = set(), []
for r in rows:
    if r["question"] not in seen:
        seen.add(r["question"]); uniq.append(r)
random.Random(0).shuffle(uniq)
for name, part in (("test", uniq[:100]), ("val", uniq[100:140]), ("train", uniq[140:])):
    with open(f"{name}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in part)
PY

# 2. Training: same seed and budget, 40 steps of 4 prompts x G = 4.
template='{question} Answer with just the number.'
train() { # name reweight
  "$dlogp" train --base "$base" --out "$1.gguf" --data train.jsonl \
    --template "$template" --extract boxed,last-number \
    --steps 40 --prompts-per-step 4 -G 4 --max-draw-factor 2 --max-tokens 48 --overlong-buffer 8 \
    --lr 2e-4 --warmup 3 --reweight "$2" --seed 1 --checkpoint-every 5 \
    --threads 1 --train-threads 1 -q
}
train dapo none & train lowprob lowprob & wait

# 3. Evaluation (T = 1, top-p 0.7, k = 4).
common=(-k 4 --max-tokens 48 --last-number --template "$template" --seed 0 -q)
"$dlogp" eval --base "$base" --rl-lora lowprob.gguf --data val.jsonl \
  --modes rl,extrapolate:tau=-0.3:gamma=0.1,extrapolate:tau=-0.5:gamma=0.3,extrapolate:tau=-1:gamma=0.5 \
  "${common[@]}" --summary val.json | tee val.md
"$dlogp" eval --base "$base" --rl-lora dapo.gguf --data test.jsonl --modes base,rl \
  "${common[@]}" --summary test-dapo.json | tee test-dapo.md
best="$(python3 -c 'import json; c=[x for x in json.load(open("val.json"))["configs"] if x["mode"]=="extrapolate"]; print(max(c, key=lambda x: x["avg_at_k"])["name"])')"
"$dlogp" eval --base "$base" --rl-lora lowprob.gguf --data test.jsonl --modes "rl,$best" \
  "${common[@]}" --summary test-lowprob.json | tee test-lowprob.md
