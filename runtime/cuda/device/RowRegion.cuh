//===- RowRegion.cuh - Fused row regions -----------------------*- CUDA -*-===//
//
// A fused region whose ops are all row-local with one row count R
// (tile::rowWiseRows: a residual add and the RMSNorm after it, a norm
// gradient and the residual add, two RoPEs sharing positions, embedding
// gathers and their sum) runs as ONE kernel, generated per region
// (compiler/translate/cuda/RowRegion.cpp): a block per row, striding over
// the R rows, runs the region's ops in order on its row, each op with the
// whole block and a __syncthreads() after it, so that the next op may read
// what any thread wrote:
//   - a norm, RoPE or embedding is a call of its per-row function
//     (rmsNormOfRow, ..., ropeOfRow, embeddingOfRow in the family headers),
//     with a type per pointer;
//   - a run of elementwise ops of one row width is one generated loop over
//     the row (loadElements / storeElements, FP32 in registers, bf16
//     temporaries rounded with roundBf16), as a fused elementwise region;
//   - a value the region yields goes to its output buffer, and later ops
//     re-read it from there; any other value that a later op reads is a
//     row of dynamic shared memory (sharedRow), FP32, a bf16 value in a
//     RoundedBf16 row, so that it holds what the host's bf16 result holds.
// Why keep the row in the block: the region reads each input row once from
// global memory and writes each output once, where one kernel per op reads
// back what the previous one wrote. The numerics are the separate ops'
// exactly, up to the order of FP32 reductions.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_ROW_REGION_CUH
#define KILN_RUNTIME_CUDA_DEVICE_ROW_REGION_CUH

#include "Common.cuh"
#include "Elementwise.cuh"
#include "Embedding.cuh"
#include "Norms.cuh"
#include "Rope.cuh"

namespace kiln::dev {

/// The temporary row of T at `offset` bytes (a multiple of 16) into the
/// block's dynamic shared memory.
template <typename T> __device__ __forceinline__ T *sharedRow(unsigned offset) {
  return reinterpret_cast<T *>(detail::dynamicSharedMemory() + offset);
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_ROW_REGION_CUH
