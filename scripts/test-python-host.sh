#!/usr/bin/env bash
# libdlogp in a real Python host: installs llama-cpp-python from the package
# registry into a venv under the cache dir (it builds llama.cpp from source,
# 5-10 min on 2 cores the first time; the wheel is cached beside the venv),
# builds libdlogp, and checks that llama-cpp-python + the dlogp sampler
# generate exactly what `dlogp generate` does on the SmolLM2 pair
# (tests/python/host_equals_generate.py).
# Not part of scripts/test.sh (the first build is slow); run it by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/fetch-model.sh"
cargo build --release --quiet
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
# shellcheck source=scripts/python-host-env.sh
source "$root/scripts/python-host-env.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
DLOGP_LIB_DIR="$target/release" "$py" tests/python/host_equals_generate.py \
  "$target/release/dlogp" gguf/SmolLM2-135M-Instruct.Q4_1.gguf \
  gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf "$work"
