//===- DeviceHeader.h - The device library, for NVRTC -----------*- C++ -*-===//
//
// The device library's source, built into the runtime so that NVRTC finds
// it without the source tree: runtime/cuda/device/kiln_device.cuh with every
// family header it includes inlined (cuda/DeviceHeader.cmake). Generated
// kernels include it as plan::kDeviceHeader.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICEHEADER_H
#define KILN_RUNTIME_CUDA_DEVICEHEADER_H

namespace kiln::rt::cuda {

const char *deviceHeaderSource();

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_DEVICEHEADER_H
