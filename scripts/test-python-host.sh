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
version="0.3.36"  # its llama.h has the same llama_sampler_i as llama-cpp-sys-2 0.1.161
cache="${DLOGP_CACHE:-$HOME/.cache/dlogp}"
venv="$cache/python-host-venv"
wheels="$cache/wheels"
"$root/scripts/fetch-model.sh"
cargo build --release --quiet
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import llama_cpp; assert llama_cpp.__version__ == '$version'" 2>/dev/null; then
  mkdir -p "$wheels"
  if ! ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $version (llama.cpp from source; minutes)..." >&2
    # the same llama.cpp settings as dlogp's build (.cargo/config.toml):
    # no llamafile GEMM (batch-invariant logits), no AMX kernels
    CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    CXXFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    CMAKE_ARGS="-DGGML_LLAMAFILE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
    "$venv/bin/pip" wheel --quiet --no-deps -w "$wheels" "llama-cpp-python==$version"
  fi
  "$venv/bin/pip" install --quiet "$wheels"/llama_cpp_python-"$version"-*.whl
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
DLOGP_LIB_DIR="$target/release" "$venv/bin/python" tests/python/host_equals_generate.py \
  "$target/release/dlogp" gguf/SmolLM2-135M-Instruct.Q4_1.gguf \
  gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf "$work"
