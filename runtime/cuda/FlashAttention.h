//===- FlashAttention.h - Shapes of the tensor-core attention kernels -----===//
//
// What the host side (the cost model, the code generator, tests and
// benchmarks) needs to know of flashAttentionForward/Backward in
// runtime/cuda/device/kiln_device.cuh: the dynamic shared memory a launch
// must give them. The device library includes nothing, so it keeps its own
// copy of these formulas (the kernels trap when launched with less);
// test/Runtime/cuda/device/DeviceEmulationTest.cpp checks the two agree.
// Standard C++ only.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_FLASHATTENTION_H
#define KILN_RUNTIME_CUDA_FLASHATTENTION_H

#include <cstdint>

namespace kiln::rt::cuda {

/// Bytes of dynamic shared memory of the forward kernel: the BF16 Q tile
/// and `stages` K and V tiles.
constexpr std::int64_t flashForwardSharedBytes(std::int64_t headDim,
                                               std::int64_t blockQ,
                                               std::int64_t blockK,
                                               std::int64_t stages) {
  return (blockQ + 2 * stages * blockK) * headDim * 2;
}

/// Bytes of dynamic shared memory of the backward kernel: BF16 K, V, Q, dO
/// and dS tiles, then per query row lse and delta (FP32) and the bounds of
/// the keys it sees (int).
constexpr std::int64_t flashBackwardSharedBytes(std::int64_t headDim,
                                                std::int64_t blockQ,
                                                std::int64_t blockK) {
  return (2 * blockK * headDim + 2 * blockQ * headDim + blockQ * blockK) * 2 +
         blockQ * (4 + 4 + 4 + 4);
}

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_FLASHATTENTION_H
