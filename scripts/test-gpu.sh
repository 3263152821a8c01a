#!/usr/bin/env bash
# The Vulkan build on a real Vulkan device, with no GPU needed: Mesa's
# lavapipe (a conformant Vulkan driver on the CPU) runs llama.cpp's Vulkan
# backend: weights and KV caches in device buffers, partial offload, LoRA on
# the device, device-side kernels. Installs what it needs (Debian/Ubuntu:
# libvulkan-dev, glslc, spirv-headers, mesa-vulkan-drivers, vulkan-tools),
# builds the CPU binary (scripts/setup.sh) and the Vulkan one into its own
# target dir, shows the device and runs scripts/gpu-checks.sh.
#
#   scripts/test-gpu.sh                     lavapipe (this machine, CI)
#   DLOGP_VULKAN_ICD=system scripts/test-gpu.sh   the machine's own Vulkan driver
#
# DLOGP_VULKAN_TARGET: the Vulkan build's target dir (default target/vulkan);
# a cold build compiles llama.cpp and its few hundred shaders (about 20 min
# on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$(date +%s)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Debian 12 names; glslc compiles the shaders, spirv-headers is a CMake
# package the vendored llama.cpp requires (without it CMake stops at
# ggml/src/ggml-vulkan/CMakeLists.txt: 'Could not find a package
# configuration file provided by "SPIRV-Headers"').
need=(libvulkan-dev glslc spirv-headers mesa-vulkan-drivers vulkan-tools)
missing=()
for pkg in "${need[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${missing[*]} and no apt-get here" >&2
    echo "hint: install the Vulkan SDK (https://vulkan.lunarg.com), which has the loader, headers, glslc and SPIRV-Headers" >&2
    exit 1
  fi
  echo "test-gpu: installing ${missing[*]} with apt-get" >&2
  $sudo apt-get update -qq >/dev/null || true
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; then
    echo "error: could not install ${missing[*]} with apt-get" >&2
    exit 1
  fi
fi

"$root/scripts/setup.sh"  # cmake, libclang, the default model, the CPU binary
cpu="${CARGO_TARGET_DIR:-$root/target}/release/dlogp"
vk_target="${DLOGP_VULKAN_TARGET:-$root/target/vulkan}"
# A CMake configure that failed once (say, before spirv-headers was there)
# leaves a build dir without a Makefile that cargo never reconfigures
# ("gmake: Makefile: No such file or directory"): start that one afresh.
for d in "$vk_target"/release/build/llama-cpp-sys-2-*/out/build; do
  if [ -f "$d/CMakeCache.txt" ] && [ ! -f "$d/Makefile" ]; then
    echo "test-gpu: removing the failed llama.cpp configure in $d" >&2
    rm -rf "$(dirname "$d")"
  fi
done
# Debian 12's Vulkan headers need scripts/vulkan-compat (see vulkan-env.sh).
. "$root/scripts/vulkan-env.sh"
# cmake-rs does not configure an existing build dir again, so one made from
# another checkout keeps that checkout's -isystem .../scripts/vulkan-compat
# in its CMakeCache (the shim is then not found: "'LayerSettingEXT' is not a
# member of 'vk'"): point it at this checkout's (llama.cpp then recompiles).
for c in "$vk_target"/release/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt; do
  [ -f "$c" ] || continue
  old="$(grep -o -- '-isystem [^ ]*/scripts/vulkan-compat' "$c" | head -1 | cut -d' ' -f2 || true)"
  if [ -n "$old" ] && [ "$old" != "$root/scripts/vulkan-compat" ]; then
    echo "test-gpu: $c points at $old; using $root/scripts/vulkan-compat" >&2
    sed -i "s#$old#$root/scripts/vulkan-compat#g" "$c"
  fi
done
build_start=$(date +%s)
CARGO_TARGET_DIR="$vk_target" cargo build --release --locked --features vulkan
echo "test-gpu: the Vulkan build took $(($(date +%s) - build_start)) s" >&2
dev="$vk_target/release/dlogp"

if [ "${DLOGP_VULKAN_ICD:-lavapipe}" = lavapipe ]; then
  icd="$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null | head -1 || true)"
  if [ -z "$icd" ]; then
    echo "error: lavapipe's ICD (/usr/share/vulkan/icd.d/lvp_icd.*.json) is not installed" >&2
    echo "hint: apt-get install mesa-vulkan-drivers" >&2
    exit 1
  fi
  # Only lavapipe, and tell llama.cpp to use it: by default it skips Vulkan
  # devices of type CPU ("This is probably not the device you want").
  export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd" GGML_VK_VISIBLE_DEVICES=0
fi
vulkaninfo --summary 2>/dev/null | sed -n '/^Devices:/,$p' || echo "test-gpu: vulkaninfo found no device" >&2
DLOGP_GPU_REQUIRED=1 "$root/scripts/gpu-checks.sh" "$cpu" "$dev"
echo "test-gpu: done in $(($(date +%s) - start)) s"
