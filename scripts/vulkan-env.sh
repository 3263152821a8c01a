# Sourced by scripts/test-gpu.sh and scripts/device-check.sh before a Vulkan
# build: when the Vulkan headers in use ($VULKAN_SDK/include, else
# /usr/include) predate VK_EXT_layer_settings (Vulkan-Headers 1.3.272),
# which the vendored llama.cpp (llama-cpp-sys-2 0.1.161) uses unguarded,
# put scripts/vulkan-compat first on the C++ include path. The variable
# replaces .cargo/config.toml's CXXFLAGS, so its AMX flags are repeated.
vk_core="${VULKAN_SDK:-/usr}/include/vulkan/vulkan_core.h"
if [ -f "$vk_core" ] && ! grep -q '^#define VK_EXT_layer_settings 1' "$vk_core"; then
  echo "vulkan-env: $vk_core predates VK_EXT_layer_settings; building with scripts/vulkan-compat" >&2
  export CXXFLAGS_x86_64_unknown_linux_gnu="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -isystem $(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/vulkan-compat"
fi
unset vk_core
