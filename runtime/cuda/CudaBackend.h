//===- CudaBackend.h - Runs a plan on an NVIDIA GPU -------------*- C++ -*-===//
//
// The cuda backend: one device arena for the step (the plan's offsets),
// kernels compiled by NVRTC for the device's own architecture (in parallel,
// through the on-disk kernel cache, or taken from cubins precompiled into
// the plan), GEMMs through cuBLASLt, everything on one stream. Values are
// read and written through the host with the same rounding as the host
// backend, so the trainer cannot tell the two apart.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_CUDABACKEND_H
#define KILN_RUNTIME_CUDA_CUDABACKEND_H

#include "runtime/Backend.h"
#include "runtime/dist/Communicator.h"

#include <memory>

namespace kiln::rt::cuda {

/// Creates the cuda backend for `plan` on device 0; throws Error when there
/// is no usable GPU, the plan has no CUDA kernels, or a kernel fails to
/// compile or load. `comm` (may be null for one process) spans the ranks
/// the plan was compiled for.
std::unique_ptr<Backend> createCudaBackend(const Plan &plan,
                                           Communicator *comm = nullptr);

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_CUDABACKEND_H
