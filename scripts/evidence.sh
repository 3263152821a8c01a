#!/usr/bin/env bash
# The evidence runs of the README's "Evidence at laptop scale" section, on the
# default pair (SmolLM2-135M-Instruct Q4_1 + the committed lowprob adapter,
# whose task contract gives the prompt and the grading), T = 1, top-p 0.7,
# k = 4, up to 48 tokens:
#   1. the τ × γ grid on a 100-problem validation split (`dlogp tune`);
#   2. the chosen cell on both test splits (100 and 228 problems), with
#      intervals over problems and paired differences against the adapter;
#   3. the RL-proposer variant on both test splits: with the chosen τ, γ,
#      and (first split) with γ 0.1 at τ −0.3 and τ 0;
#   4. the intervention sweep on the first test split with every criterion
#      at calibrated 10 % and 20 % target replacement ratios (RATIOS=… for
#      other points, about 10 min per point).
# Each step is skipped when its output exists, so a rerun resumes; the
# per-sample rows stay in OUT_DIR (default out/evidence), the summaries go
# to docs/results/evidence. About 1 h 15 min for steps 1–4 on 2 cores
# (prompts shared between a problem's samples; 2 h before), 20 min more for
# the second split.
# Usage: scripts/evidence.sh [OUT_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/fetch-model.sh"
cargo build --release --quiet
dlogp="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/dlogp"
out="$(realpath -m "${1:-out/evidence}")"
res="$root/docs/results/evidence"
mkdir -p "$out" "$res"
cd "$out"

# Data: the test (100) and second test (228) splits of scripts/reproduce.sh,
# and a new 100-problem validation split (seed 13) disjoint from every split
# there, the adapter's training split included.
if [ ! -s valbig.jsonl ]; then
  for l in 1 3; do
    for s in 11 12 13; do "$dlogp" tasks arith -n 600 --level "$l" --seed "$s" -o "s$s-l$l.jsonl" 2>/dev/null; done
  done
  python3 - <<'PY'
import json, random
def uniq(files, seen):
    out = []
    for r in (json.loads(x) for f in files for x in open(f)):
        if r["question"] not in seen:
            seen.add(r["question"]); out.append(r)
    random.Random(0).shuffle(out)
    return out
def write(name, rows):
    with open(name, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
seen = set()
first = uniq(["s11-l1.jsonl", "s11-l3.jsonl"], seen)   # reproduce.sh's test / val / train
write("test.jsonl", first[:100])
write("test2.jsonl", uniq(["s12-l1.jsonl", "s12-l3.jsonl"], seen)[:300])
write("valbig.jsonl", uniq(["s13-l1.jsonl", "s13-l3.jsonl"], seen)[:100])
PY
fi

pair=(-m "$root/gguf/SmolLM2-135M-Instruct.Q4_1.gguf" --lora "$root/gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf")
common=("${pair[@]}" -k 4 --max-tokens 48 --last-number --seed 0 -q)
taus="${TAUS:--0.15,-0.3,-0.6}"
gammas="${GAMMAS:-0,0.1,0.3}"

# 1. The grid on validation.
if [ ! -s "$res/grid-val.json" ]; then
  "$dlogp" tune --data valbig.jsonl --taus "$taus" --gammas "$gammas" "${common[@]}" \
    -o grid-val.jsonl --json grid-val.json > grid-val.md
  cp grid-val.json grid-val.md "$res/"
fi
read -r tau gamma < <(python3 -c '
import json; t = json.load(open("grid-val.json")); c = t["cells"][t["selection"]["index"]]
print(c["tau"], c["gamma"])')
cell="extrapolate:tau=$tau:gamma=$gamma"
echo "chosen on validation: $cell" >&2

# 2. The chosen cell against the adapter, 3. the RL-proposer variant with
#    it, on the first test split; 4. the sweep with every criterion there;
#    5. both on the second test split.
chosen() { # split
  if [ ! -s "$1-chosen.jsonl" ]; then
    "$dlogp" eval --data "$1.jsonl" --modes "rl,$cell" "${common[@]}" \
      -o "$1-chosen.jsonl" --summary "$1-chosen.json" > "$1-chosen.md"
    cp "$1-chosen.json" "$1-chosen.md" "$res/"
  fi
}
rlprop() { # split name mode
  if [ ! -s "$1-$2.jsonl" ]; then
    "$dlogp" eval --data "$1.jsonl" --modes "$3" "${common[@]}" \
      -o "$1-$2.jsonl" --summary "$1-$2.json" > "$1-$2.md"
    cp "$1-$2.json" "$1-$2.md" "$res/"
  fi
}
chosen test
rlprop test rlprop "$cell:proposer=rl"
rlprop test rlprop01 "extrapolate:tau=-0.3:gamma=0.1:proposer=rl"
rlprop test rlprop-tau0 "extrapolate:tau=0:gamma=0.1:proposer=rl"
if [ ! -s "$res/sweep.json" ]; then
  "$dlogp" intervene --data test.jsonl --criteria dlogp,kl,kl-r,js,entropy,entropy-rl,random \
    --ratios "${RATIOS:-0.1,0.2}" --calibrate 8 "${common[@]}" \
    -o sweep.jsonl --csv sweep.csv --json sweep.json > sweep.md
  cp sweep.json sweep.csv sweep.md "$res/"
fi
chosen test2
rlprop test2 rlprop "$cell:proposer=rl"

# The sweep's figure, and intervals over problems with paired differences
# from the per-sample rows of the test runs.
(cd "$root" && cargo build --release --quiet --example plot_sweep --example paired_intervals)
examples="$(dirname "$dlogp")/examples"
for ext in svg png; do "$examples/plot_sweep" sweep.json "$res/sweep.$ext"; done
"$examples/paired_intervals" test-*.jsonl test2-*.jsonl > "$res/tests.md"
"$examples/paired_intervals" sweep.jsonl > "$res/sweep-paired.md"
cat "$res/tests.md"
