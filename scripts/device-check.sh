#!/usr/bin/env bash
# The GPU test set on a lent GPU machine (an NVIDIA H200 with a Vulkan
# driver, no Rust, nothing fetchable, 64 MiB carried per call, 10 min per
# command). Two halves:
#
#   scripts/device-check.sh --prepare   here: build the portable Vulkan binary
#                                       into target/device/ (with the Vulkan
#                                       loader) and check the carry size
#   scripts/device-check.sh             there, from the checkout copy with
#                                       target/device carried: gpu-checks.sh
#                                       on the machine's own Vulkan driver
#
# What travels: the checkout's tracked files (the tiny fixtures, the
# committed SmolLM2 adapter, tests/data, these scripts: 9 MiB) and
# target/device (dlogp built with --no-default-features --features vulkan
# for x86-64-v3, not this machine's CPU, so it runs on the GPU machine's;
# and libvulkan.so.1 in case the machine has a driver but no loader).
#
# The SmolLM2 base model (94 MiB) does not fit one call, so --prepare also
# cuts it into parts of at most 50 MiB (target/device/smollm2/part-NN, with
# its SHA-256) and prints the carry plan: the binary in a first call, then
# one call per part, each carrying that part (the device keeps the ignored
# files of earlier calls while it stays warm), the last one running this
# script, which joins the parts, checks the hash, runs the checks on SmolLM2
# too and times it (scripts/device-bench.sh: extrapolate/plain and
# pair/single scoring, on the GPU and on the same binary's CPU backend). Without the parts (a single
# call), the checks run on the tiny fixtures only and say SKIP for SmolLM2.
#
# The CPU reference is the same binary with the Vulkan loader pointed at no
# driver: llama.cpp then has only its CPU backend.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bundle="$root/target/device"

if [ "${1:-}" = --prepare ]; then
  target="${DLOGP_DEVICE_TARGET:-$root/target/device-build}"
  . "$root/scripts/vulkan-env.sh"
  # x86-64-v3 (AVX2, FMA, F16C): llama-cpp-sys-2 then builds llama.cpp with
  # GGML_NATIVE off and -march=x86-64-v3 instead of this CPU's -march=native.
  CARGO_TARGET_DIR="$target" RUSTFLAGS="-C target-cpu=x86-64-v3" \
    cargo build --release --locked --no-default-features --features vulkan
  mkdir -p "$bundle"
  cp "$target/release/dlogp" "$bundle/dlogp"
  strip "$bundle/dlogp" 2>/dev/null || true
  loader="$(ldconfig -p | awk '/libvulkan.so.1 / {print $NF; exit}')"
  [ -n "$loader" ] && cp -L "$loader" "$bundle/libvulkan.so.1"
  size=$(du -cb "$bundle"/dlogp "$bundle"/libvulkan.so.1 $(git ls-files) 2>/dev/null | tail -1 | cut -f1)
  echo "device-check: bundle $(du -sh "$bundle" | cut -f1) in $bundle; with the tracked files $((size >> 20)) MiB (limit 64 MiB)"
  [ "$size" -le $((64 << 20)) ] || { echo "error: more than 64 MiB would travel" >&2; exit 1; }
  smol=gguf/SmolLM2-135M-Instruct.Q4_1.gguf
  if [ -f "$smol" ]; then
    rm -rf "$bundle/smollm2" && mkdir -p "$bundle/smollm2"
    split -b 50M -d "$smol" "$bundle/smollm2/part-"
    (cd "$(dirname "$smol")" && sha256sum "$(basename "$smol")") > "$bundle/smollm2/SHA256SUMS"
    echo "device-check: carry plan (one run call each, in order, while the machine stays warm):"
    echo "  call 1: carry target/device/dlogp target/device/libvulkan.so.1 target/device/smollm2/SHA256SUMS; command: true"
    parts=("$bundle"/smollm2/part-*)
    for ((i = 0; i < ${#parts[@]}; i++)); do
      rel="target/device/smollm2/$(basename "${parts[$i]}")"
      part_size=$(du -cb "${parts[$i]}" $(git ls-files) 2>/dev/null | tail -1 | cut -f1)
      [ "$part_size" -le $((64 << 20)) ] || { echo "error: $rel and the tracked files exceed 64 MiB" >&2; exit 1; }
      cmd=true
      [ "$i" -eq $((${#parts[@]} - 1)) ] && cmd=scripts/device-check.sh
      echo "  call $((i + 2)): carry $rel; command: $cmd"
    done
  fi
  exit 0
fi

dev="$bundle/dlogp"
smol=gguf/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$smol" ] && [ -f "$bundle/smollm2/SHA256SUMS" ]; then
  cat "$bundle"/smollm2/part-* > "$smol.partial"
  mv "$smol.partial" "$smol"
  if (cd gguf && sha256sum -c --quiet "$bundle/smollm2/SHA256SUMS"); then
    echo "device-check: SmolLM2 joined from $(ls "$bundle"/smollm2/part-* | wc -l) parts, hash ok"
  else
    echo "device-check: the SmolLM2 parts do not match the hash (a part missing?); tiny fixtures only" >&2
    rm -f "$smol"
  fi
fi
[ -x "$dev" ] || { echo "error: $dev is missing; run scripts/device-check.sh --prepare on the build machine and carry target/device" >&2; exit 2; }
# The system loader if there is one, else the carried one.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
  export LD_LIBRARY_PATH="$bundle${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null | tr '\n' ' '; echo
ldd "$dev" | grep -E 'vulkan|not found' || true
cat > "$bundle/dlogp-cpu" <<'CPU'
#!/usr/bin/env bash
# the Vulkan build with no Vulkan driver: llama.cpp's CPU backend only
VK_ICD_FILENAMES=/dev/null VK_DRIVER_FILES=/dev/null exec "$(dirname "$0")/dlogp" "$@"
CPU
chmod +x "$bundle/dlogp-cpu"
start=$(date +%s)
echo "== GPU test set"
DLOGP_GPU_REQUIRED=1 "$root/scripts/gpu-checks.sh" "$bundle/dlogp-cpu" "$dev" || status=$?
if [ -f "$smol" ]; then
  echo "== speed on the device (SmolLM2 + adapter, all layers offloaded)"
  "$root/scripts/device-bench.sh" "$dev" "$smol" gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf 128 4 --gpu-layers 999 2>/dev/null || status=$?
  echo "== the same binary on the CPU backend"
  "$root/scripts/device-bench.sh" "$bundle/dlogp-cpu" "$smol" gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf 128 4 2>/dev/null || status=$?
fi
echo "device-check: done in $(($(date +%s) - start)) s"
exit "${status:-0}"
