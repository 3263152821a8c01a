#!/usr/bin/env bash
# Forward + backward tokens/s of the trainer's LoRA policy on SmolLM2
# (rank 16 on all seven projections, one 128-token sequence per step) against
# the same LoRA forward + backward in PyTorch on the CPU (weights read and
# dequantized from the same GGUF with the `gguf` package), measured in one
# run with the same thread count: PyTorch spreads each sequence's ops over
# the threads, dlogp runs one sequence per thread side by side (as
# `dlogp train --train-threads` does). The last line is `train/pytorch = R`.
#
# PyTorch and gguf come from PyPI into a venv under the cache dir
# (${XDG_CACHE_HOME:-~/.cache}/dlogp/bench-train-venv), made on first use.
# Usage: scripts/bench-train.sh [SEQ_LEN] [STEPS] [THREADS (default: all CPUs)]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seq_len="${1:-128}"
steps="${2:-3}"
threads="${3:-$(nproc)}"
rank=16

"$root/scripts/fetch-model.sh"
cargo build --release --quiet --example bench_train
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
base="gguf/SmolLM2-135M-Instruct.Q4_1.gguf"

venv="${XDG_CACHE_HOME:-$HOME/.cache}/dlogp/bench-train-venv"
if ! "$venv/bin/python" -c 'import torch, gguf, numpy' 2>/dev/null; then
  echo "installing torch, gguf and numpy from PyPI into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch gguf numpy
fi

ours=$("$target/release/examples/bench_train" "$base" "$seq_len" "$steps" "$rank" "$threads")
theirs=$("$venv/bin/python" scripts/bench_train_torch.py "$base" "$seq_len" "$steps" "$rank" "$threads")
echo "$ours"
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
if abs(a["loss"] - b["loss"]) > 1e-3 * max(1.0, abs(b["loss"])):
    sys.exit(f"error: the two forwards disagree: loss {a['loss']} vs {b['loss']}")
print(f"model: SmolLM2-135M Q4_1 (f32 weights), LoRA rank {a['rank']} on 7 projections, "
      f"{a['params']} trainable parameters, {a['seq_len']}-token sequences, {a['threads']} thread(s)")
print(f"same loss: {a['loss']:.5f} (dlogp) vs {b['loss']:.5f} (pytorch)")
for r in (a, b):
    print(f"{r['impl']:>24}: {r['tokens_per_s']:7.1f} tokens/s  ({r['s_per_1k_tokens']:.2f} s per 1k tokens, forward + backward)")
print(f"train/pytorch = {a['tokens_per_s'] / b['tokens_per_s']:.3f}")
PY
