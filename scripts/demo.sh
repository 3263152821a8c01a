#!/usr/bin/env bash
# The main job on the default model: score SmolLM2-135M-Instruct against
# SmolLM2 + the committed RL adapter (DAPO + low-probability reweighting,
# gguf/README.md), token by token, and print the summary; then generate one
# answer with selective extrapolation over the same pair.
# Outputs land in out/ (tokens.jsonl, summary.json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
dlogp="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/dlogp"
base="gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
lora="gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf"
mkdir -p out
"$dlogp" score --base "$base" --rl-lora "$lora" \
  --input tests/data/score-rows.jsonl --output out/tokens.jsonl --summary out/summary.json
echo "wrote out/tokens.jsonl ($(wc -l < out/tokens.jsonl) tokens) and out/summary.json" >&2
# And the decoding side: selective extrapolation (the base proposes, the RL
# side steps in where it disagrees), streamed to stdout. Without --base, dlogp
# uses this same default pair.
echo "--- dlogp generate --mode extrapolate (τ -0.3, γ 0.1, T 1, top-p 0.7):" >&2
"$dlogp" generate --base "$base" --rl-lora "$lora" --max-tokens 160 --seed 0 \
  "A shop sells 23 pens on Monday, 19 on Tuesday and 7 on Wednesday. How many pens does it sell in all? Answer with just the number."
