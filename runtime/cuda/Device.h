//===- Device.h - Is there a CUDA GPU, and which ----------------*- C++ -*-===//
//
// The question the runtime asks before it picks a backend. It needs no CUDA
// header and exists in every build: a runtime built without CUDA support
// answers "no" with that reason, one built with it asks the driver, loaded
// with dlopen, so the same binary runs on a machine without GPU or driver
// (and then uses the host backend).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_H
#define KILN_RUNTIME_CUDA_DEVICE_H

#include <cstddef>
#include <optional>
#include <string>

namespace kiln::rt::cuda {

/// What the runtime needs to know about a GPU.
struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  /// Compute capability.
  int major = 0, minor = 0;
  int smCount = 0;
  /// The most shared memory one block may opt in to, bytes.
  int sharedMemoryPerBlockOptin = 0;
  std::size_t totalMemory = 0;
  /// The driver's CUDA version, as CUDA_VERSION spells it (13000 for 13.0).
  int driverVersion = 0;

  /// The architecture NVRTC compiles for: the arch-specific "sm_90a" on
  /// Hopper (9.0) and "sm_100a" on Blackwell (10.0), whose wgmma/tcgen05
  /// instructions the plain targets lack; "sm_XY" for every other X.Y.
  std::string arch() const;
};

/// Device `ordinal`, or nullopt with the reason in `*whyNot` (when given):
/// built without CUDA support, no driver library, cuInit failed (no device,
/// stub library, driver too old), no such device. Never throws.
std::optional<DeviceInfo> probeDevice(std::string *whyNot = nullptr,
                                      int ordinal = 0);

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_DEVICE_H
