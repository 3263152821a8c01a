// Vulkan-Hpp as installed, plus VK_EXT_layer_settings when the installed
// headers predate it (Vulkan-Headers < 1.3.272, e.g. Debian 12's 1.3.239).
// The llama.cpp vendored by llama-cpp-sys-2 0.1.161 chains a
// vk::LayerSettingsCreateInfoEXT into every vkCreateInstance, unguarded, so
// with older headers ggml-vulkan.cpp fails with "'LayerSettingEXT' is not a
// member of 'vk'". scripts/test-gpu.sh puts this directory first on the
// include path (-isystem) only in that case. The definitions follow the
// Vulkan registry (sType 1000496000); a loader or driver that does not know
// the structure skips it in the pNext chain, and llama.cpp enables it only
// for the validation layer.
#pragma once
#include_next <vulkan/vulkan.hpp>

#ifndef VK_EXT_layer_settings
#define VK_EXT_layer_settings 1
namespace vk {
enum class LayerSettingTypeEXT : int32_t {
  eBool32 = 0,
  eInt32 = 1,
  eInt64 = 2,
  eUint32 = 3,
  eUint64 = 4,
  eFloat32 = 5,
  eFloat64 = 6,
  eString = 7,
};

struct LayerSettingEXT {
  const char *pLayerName = nullptr;
  const char *pSettingName = nullptr;
  LayerSettingTypeEXT type = LayerSettingTypeEXT::eBool32;
  uint32_t valueCount = 0;
  const void *pValues = nullptr;
};

struct LayerSettingsCreateInfoEXT {
  StructureType sType = static_cast<StructureType>(1000496000);
  const void *pNext = nullptr;
  uint32_t settingCount = 0;
  const LayerSettingEXT *pSettings = nullptr;

  template <typename Settings>
  explicit LayerSettingsCreateInfoEXT(const Settings &settings, const void *next = nullptr)
      : pNext(next), settingCount(static_cast<uint32_t>(settings.size())), pSettings(settings.data()) {}
};
}  // namespace vk
#endif
