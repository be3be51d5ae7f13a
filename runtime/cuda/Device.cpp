//===- Device.cpp - Device architecture names, and the CUDA-less probe ----===//
//
// probeDevice itself lives in CudaApi.cpp when the runtime is built with
// CUDA support; this file gives the answer of a build without it.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/Device.h"

#include <fmt/format.h>

namespace kiln::rt::cuda {

std::string DeviceInfo::arch() const {
  // Kernels for these two use instructions that exist only in the
  // arch-specific targets (wgmma, setmaxnreg, tcgen05).
  bool archSpecific = (major == 9 || major == 10) && minor == 0;
  return fmt::format("sm_{}{}{}", major, minor, archSpecific ? "a" : "");
}

#if !KILN_ENABLE_CUDA
std::optional<DeviceInfo> probeDevice(std::string *whyNot, int) {
  if (whyNot)
    *whyNot = "the Kiln runtime was built without CUDA support "
              "(KILN_ENABLE_CUDA=OFF)";
  return std::nullopt;
}
#endif

} // namespace kiln::rt::cuda
