#!/usr/bin/env bash
# The laptop-scale reproduction of docs/METHOD.md §4 (see README): DAPO and
# DAPO + low-probability reweighting on SmolLM2-135M-Instruct with seeded
# arithmetic (levels 1 and 3), the same seeds and budget; then Avg@4 on two
# held-out test splits for the base model and every adapter, selective
# extrapolation base -> reweighted with τ, γ chosen on a validation split, the
# intervention sweep on the trained pair, and the compaction of the committed
# adapter (gguf/README.md).
# Usage: [SEEDS="1 2"] scripts/reproduce.sh [OUT_DIR]
# (about 1.5 h per seed on 2 cores; the README's numbers are SEEDS="1 2")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/fetch-model.sh"
cargo build --release --quiet
dlogp="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/dlogp"
base="$root/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
out="$(realpath -m "${1:-out/reproduce}")"
seeds="${SEEDS:-1 2}"
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

#    A second, larger test split: new problems (seed 12) not in any split above.
for l in 1 3; do "$dlogp" tasks arith -n 600 --level "$l" --seed 12 -o "n$l.jsonl"; done
python3 - <<'PY'
import json, random
old = {json.loads(x)["question"] for f in ("test.jsonl", "val.jsonl", "train.jsonl") for x in open(f)}
seen, uniq = set(old), []
for r in (json.loads(x) for l in (1, 3) for x in open(f"n{l}.jsonl")):
    if r["question"] not in seen:
        seen.add(r["question"]); uniq.append(r)
random.Random(0).shuffle(uniq)
with open("test2.jsonl", "w") as f:   # 228 problems
    f.writelines(json.dumps(r) + "\n" for r in uniq[:300])
PY

# 2. Training: per seed, both runs side by side with one thread each, the
#    same budget: 40 steps of 4 prompts x G = 4.
template='{question} Answer with just the number.'
train() { # name reweight seed
  "$dlogp" train --base "$base" --out "$1.gguf" --data train.jsonl \
    --template "$template" --extract boxed,last-number \
    --steps 40 --prompts-per-step 4 -G 4 --max-draw-factor 2 --max-tokens 48 --overlong-buffer 8 \
    --lr 2e-4 --warmup 3 --reweight "$2" --seed "$3" --checkpoint-every 5 \
    --threads 1 --train-threads 1 -q
}
for s in $seeds; do
  train "dapo-s$s" none "$s" & train "lowprob-s$s" lowprob "$s" & wait
done

# 3. Evaluation (T = 1, top-p 0.7, k = 4). τ and γ of selective
#    extrapolation are chosen on the validation split with the seed-1 adapter.
common=(-k 4 --max-tokens 48 --last-number --template "$template" --seed 0 -q)
"$dlogp" eval --base "$base" --rl-lora lowprob-s1.gguf --data val.jsonl \
  --modes rl,extrapolate:tau=-0.3:gamma=0.1,extrapolate:tau=-0.5:gamma=0.3,extrapolate:tau=-1:gamma=0.5 \
  "${common[@]}" --summary val.json | tee val.md
best="$(python3 -c 'import json; c=[x for x in json.load(open("val.json"))["configs"] if x["mode"]=="extrapolate"]; print(max(c, key=lambda x: x["avg_at_k"])["name"])')"
for split in test test2; do
  "$dlogp" eval --base "$base" --data "$split.jsonl" --modes base \
    "${common[@]}" --summary "$split-base.json" | tee "$split-base.md"
  for s in $seeds; do
    "$dlogp" eval --base "$base" --rl-lora "dapo-s$s.gguf" --data "$split.jsonl" --modes rl \
      "${common[@]}" --summary "$split-dapo-s$s.json" | tee "$split-dapo-s$s.md"
    modes=rl; [ "$split" = test ] && modes="rl,$best"
    "$dlogp" eval --base "$base" --rl-lora "lowprob-s$s.gguf" --data "$split.jsonl" --modes "$modes" \
      "${common[@]}" --summary "$split-lowprob-s$s.json" | tee "$split-lowprob-s$s.md"
  done
done

# 4. The intervention sweep on the seed-1 pair (first 40 test problems, k = 2,
#    τ calibrated per criterion on 8 problems).
head -n 40 test.jsonl > test40.jsonl
"$dlogp" intervene --base "$base" --rl-lora lowprob-s1.gguf --data test40.jsonl \
  --criteria dlogp,kl,random --ratios 0.02,0.05,0.1,0.2 --calibrate 8 \
  -k 2 --max-tokens 48 --last-number --template "$template" --seed 0 -q \
  --csv sweep.csv --json sweep.json --plot sweep.png | tee sweep.md

# 5. The committed adapter: the seed-1 lowprob adapter at rank 8 in F16.
"$dlogp" lora-compact --lora lowprob-s1.gguf --rank 8 --type f16 --out lowprob-s1-r8.gguf
"$dlogp" eval --base "$base" --rl-lora lowprob-s1-r8.gguf --data test.jsonl --modes rl \
  "${common[@]}" --summary test-lowprob-s1-r8.json | tee test-lowprob-s1-r8.md
