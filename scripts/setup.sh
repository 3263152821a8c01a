#!/usr/bin/env bash
# One-time set-up on a fresh machine: system packages for building llama.cpp
# (cmake, and libclang for bindgen), the default model (SmolLM2-135M-Instruct,
# verified by sha256) and the release binary. Safe to run again: it skips what
# is done.
#
#   scripts/setup.sh                    set up and build
#   scripts/setup.sh --find-libclang [ROOT]
#                                       print the libclang bindgen would load
#                                       (under ROOT, default /) or exit 1
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The libclang shared library that bindgen (clang-sys) can load, looked up the
# way clang-sys does: $LIBCLANG_PATH, `llvm-config --libdir`, then the system
# library directories, matching libclang.so, libclang-N.so, libclang.so.N and
# libclang-N.so.N (Linux) or libclang.dylib (macOS). libclang-cpp.so.N (the C++
# interface, package libclang-cpp14 on Debian 12) is NOT libclang: bindgen
# cannot use it, so it never counts. $1 is a root prefix for tests (default "").
find_libclang() {
  local prefix="${1:-}" dirs=() d f name
  if [ -z "$prefix" ]; then
    [ -n "${LIBCLANG_PATH:-}" ] && dirs+=("$LIBCLANG_PATH")
    if command -v llvm-config >/dev/null 2>&1; then
      dirs+=("$(llvm-config --libdir 2>/dev/null || true)")
    fi
    if command -v xcode-select >/dev/null 2>&1; then
      d="$(xcode-select --print-path 2>/dev/null || true)"
      [ -n "$d" ] && dirs+=("$d/usr/lib" "$d/Toolchains/XcodeDefault.xctoolchain/usr/lib")
    fi
  fi
  shopt -s nullglob
  dirs+=("$prefix"/usr/lib/llvm-*/lib "$prefix"/usr/lib "$prefix"/usr/lib64
    "$prefix"/usr/lib/*-linux-gnu "$prefix"/usr/local/lib "$prefix"/usr/local/lib64
    "$prefix"/usr/local/opt/llvm/lib "$prefix"/opt/homebrew/opt/llvm/lib
    "$prefix"/Library/Developer/CommandLineTools/usr/lib
    "$prefix"/Applications/Xcode.app/Contents/Developer/Toolchains/XcodeDefault.xctoolchain/usr/lib)
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/libclang.so "$d"/libclang-*.so "$d"/libclang.so.* "$d"/libclang-*.so.* "$d"/libclang.dylib; do
      name="${f##*/}"
      case "$name" in libclang-cpp*) continue ;; esac
      if [ -f "$f" ]; then
        shopt -u nullglob
        echo "$f"
        return 0
      fi
    done
  done
  shopt -u nullglob
  return 1
}

if [ "${1:-}" = "--find-libclang" ]; then
  find_libclang "${2:-}"
  exit
fi

cd "$root"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
os="$(uname -s)"
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
find_libclang >/dev/null || missing+=(libclang)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: missing ${missing[*]} (needed to build llama.cpp)" >&2
  if [ "$os" = Darwin ]; then
    # macOS: libclang comes with the Xcode command-line tools; cmake from Homebrew.
    if [[ " ${missing[*]} " == *" libclang "* ]]; then
      echo "error: libclang not found; install the Xcode command-line tools (xcode-select --install)" >&2
      echo "hint: or 'brew install llvm' and set LIBCLANG_PATH=\$(brew --prefix llvm)/lib" >&2
      exit 1
    fi
    if ! command -v brew >/dev/null 2>&1; then
      echo "error: cmake not found and Homebrew is not installed; install cmake (https://cmake.org/download/) or Homebrew (https://brew.sh)" >&2
      exit 1
    fi
    brew install cmake
  elif command -v apt-get >/dev/null 2>&1; then
    pkgs=()
    for m in "${missing[@]}"; do
      case "$m" in libclang) pkgs+=(libclang-dev) ;; *) pkgs+=("$m") ;; esac
    done
    echo "setup: installing ${pkgs[*]} with apt-get" >&2
    $sudo apt-get update -qq >/dev/null || true
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
      echo "error: could not install ${pkgs[*]} with apt-get" >&2
      echo "hint: check access to the Debian package mirror, or install them by hand" >&2
      exit 1
    fi
    if ! find_libclang >/dev/null; then
      echo "error: libclang-dev is installed but no libclang shared library was found" >&2
      echo "hint: set LIBCLANG_PATH to the directory holding libclang.so" >&2
      exit 1
    fi
  else
    echo "error: no supported package manager (apt-get, Homebrew) found; install ${missing[*]} yourself" >&2
    echo "hint: libclang ships with clang/LLVM (Fedora: clang-devel, Arch: clang); set LIBCLANG_PATH if it is not in a standard directory" >&2
    exit 1
  fi
fi

"$root/scripts/fetch-model.sh"

echo "setup: building dlogp (release; the first build compiles llama.cpp, ~5-10 min on 2 cores)" >&2
cargo build --release --locked --quiet
echo "setup: done: $(cargo metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)/release/dlogp" >&2
