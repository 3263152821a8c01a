#!/usr/bin/env bash
# Set up what the tests need (build tools, the real model) and run the whole
# test suite in release mode (the dev profile would build llama.cpp twice).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
# Real clients for the serve tests (skipped, with the reason, when this fails).
"$root/scripts/client-venv.sh" >/dev/null || echo "test.sh: the openai SDK venv could not be made; the client tests will skip" >&2
"$root/scripts/lm-eval-venv.sh" >/dev/null || echo "test.sh: the lm-eval venv could not be made; the lm-eval test will skip" >&2
# One test at a time: each test already runs llama.cpp on every core, and
# llama.cpp's spinning thread barriers collapse when oversubscribed.
# The cdylib (libdlogp.so, linked by the C host test) is built by `cargo
# build`, not by `cargo test`.
cargo build --release --locked
# The shared libdlogp (feature shared-llama: linked to llama.cpp's shared
# libraries, so a host can hand it its own model) for the one-weight-copy
# host test in tests/it/plugin.rs. Its own target dir, as its llama.cpp is
# built as shared libraries (a cold build: about 4 min on 2 cores).
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/shared-llama" \
  cargo build --release --locked --lib --no-default-features --features shared-llama
cargo test --release --locked "$@" -- --test-threads=1
