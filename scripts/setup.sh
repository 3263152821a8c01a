#!/usr/bin/env bash
# One-time set-up on a fresh machine: system packages for building llama.cpp
# (cmake, libclang-dev), the default model (SmolLM2-135M-Instruct, verified by
# sha256) and the release binary. Safe to run again: it skips what is done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q libclang; then
  missing+=(libclang-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (needed to build llama.cpp)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; install ${missing[*]} with your package manager" >&2
    exit 1
  fi
  $sudo apt-get update -qq >/dev/null || true
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; then
    echo "error: could not install ${missing[*]} with apt-get" >&2
    echo "hint: check access to the Debian package mirror, or install them by hand" >&2
    exit 1
  fi
fi

"$root/scripts/fetch-model.sh"

echo "setup: building dlogp (release; the first build compiles llama.cpp, ~5-10 min on 2 cores)" >&2
cargo build --release --locked --quiet
echo "setup: done: $(cargo metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)/release/dlogp" >&2
