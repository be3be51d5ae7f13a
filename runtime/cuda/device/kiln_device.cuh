//===- kiln_device.cuh - Device library of generated kernels -*- CUDA -*-===//
//
// The device-side library every CUDA kernel Kiln generates calls into. The
// code generator emits small `extern "C" __global__` wrappers that forward
// their parameters to the functions here, and NVRTC compiles wrappers and
// this header together at run time, so the header:
//   - is C++17 and includes only <cuda_bf16.h>: no host standard headers, no
//     <cstdint> (sizes are `long long` and `int`), no printf;
//   - consists of `__device__ __forceinline__` functions and templates only,
//     so it can be included by any number of translation units;
//   - needs no NVRTC option beyond -std=c++17 and CUDA's include directory
//     (for cuda_bf16.h): no lambdas, so not even -default-device.
//
// Numerics follow the host reference backend (runtime/host/Kernels.h), which
// GPU kernels are tested against: storage is `float` (f32) or
// `__nv_bfloat16` (bf16); every kernel computes in FP32 and rounds what it
// stores to the storage type, bf16 to nearest-even (__float2bfloat16_rn).
// Where the host accumulates in double the device accumulates in FP32, in a
// fixed order that depends only on the launch configuration and the
// buffers' alignment (below): no atomics on data, so every result is
// bit-for-bit reproducible run to run. No fast-math intrinsics: expf, erff,
// tanhf and sqrtf are the accurate ones, 1/sqrt is __frsqrt_rn (correctly
// rounded), rope's angles and sin/cos are double.
//
// Launch conventions (the wrapper passes its block size as kThreads, a
// multiple of 32 and at most 1024, and must be launched with exactly that
// many threads in x; blockDim.y = blockDim.z = 1):
//   - "block per row": the function loops
//       for (row = blockIdx.x; row < rows; row += gridDim.x)
//     so any grid size >= 1 is correct; rows blocks is the natural choice.
//   - "thread per column": threads of the whole grid stride over columns,
//     each thread summing its column over all rows in row order.
//   - "grid-stride": threads of the whole grid stride over elements.
//   - "single block": only block 0 works; launch one block.
//   - attention: grid (seq, heads or kvHeads, batch), block per row of one
//     head; the functions stride by gridDim as well, so smaller grids work.
//
// Vector access: a row is read and written 16 bytes at a time (Vec<T>) when
// the row length is a multiple of Vec<T>::kWidth and every pointer the row
// touches is 16-byte aligned; otherwise element by element. The choice is
// made at run time, per row, from the actual addresses, so any buffer
// offset is correct and aligned buffers are fast. The two paths split a row
// among threads differently, so their FP32 sums may differ in the last bits.
//
// The library is split by kernel family, mirroring runtime/host/, each
// header opening with its design choice and including what it uses; this
// one includes them all. NVRTC gets it in memory, with the includes
// inlined (runtime/cuda/DeviceHeader.cmake), so a family header added here
// needs nothing else.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_KILN_DEVICE_CUH
#define KILN_RUNTIME_CUDA_DEVICE_KILN_DEVICE_CUH

#include "Attention.cuh"
#include "Common.cuh"
#include "CrossEntropy.cuh"
#include "Elementwise.cuh"
#include "Embedding.cuh"
#include "FlashAttention.cuh"
#include "Norms.cuh"
#include "Optimizer.cuh"
#include "Reductions.cuh"
#include "Rope.cuh"
#include "RowRegion.cuh"

#endif // KILN_RUNTIME_CUDA_DEVICE_KILN_DEVICE_CUH
