//===- Embedding.cuh - Embedding lookup and its gradient -------*- CUDA -*-===//
//
// Embedding lookup (runtime/host/Embedding.cpp) and its gradient. The
// gradient is a gather, not a scatter: each thread owns a column of a
// range of vocabulary rows and scans every id of the batch in order, so
// no atomics are needed and the sums are deterministic. A bad id sets the
// error flag (Common.cuh) rather than reading out of bounds.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_EMBEDDING_CUH
#define KILN_RUNTIME_CUDA_DEVICE_EMBEDDING_CUH

#include "Common.cuh"
#include "Reductions.cuh"

namespace kiln::dev {

/// y[p, :] = table[ids[p], :] for a [vocab, dim] table. An id outside
/// [0, vocab) sets *errorFlag to p + 1 (first writer wins; the host reports
/// it, as the host kernel throws) and writes zeros. Block per id.
template <typename T, int kThreads>
__device__ __forceinline__ void embedding(const T *table, const int *ids, T *y,
                                          long long numIds, int vocab, int dim,
                                          int *errorFlag) {
  constexpr int W = Vec<T>::kWidth;
  for (long long p = blockIdx.x; p < numIds; p += gridDim.x) {
    const int id = ids[p];
    T *yr = y + p * dim;
    if (id < 0 || id >= vocab) {
      if (threadIdx.x == 0)
        detail::reportError(errorFlag, p);
      for (int j = threadIdx.x; j < dim; j += kThreads)
        yr[j] = fromFloat<T>(0.0f);
      continue;
    }
    const T *src = table + static_cast<long long>(id) * dim;
    if (canVectorize(src, dim) && isAligned16(yr)) {
      for (int j = threadIdx.x * W; j < dim; j += kThreads * W)
        storeVec(yr + j, loadVec(src + j));
    } else {
      for (int j = threadIdx.x; j < dim; j += kThreads)
        yr[j] = src[j];
    }
  }
}

/// The table gradient of embedding, in FP32 by design: thread per column j
/// (grid.x covers dim) and block row per range of vocabulary ids (grid.y
/// splits [0, vocab) into equal ranges). The thread zeroes column j of its
/// range's rows, then adds dy[p, j] to dtable[ids[p], j] for every p, in
/// ascending order, whose id is in its range. Ids outside [0, vocab) are
/// skipped (the forward reported them). Every element has one writer and
/// one summation order, whatever the grid: deterministic.
template <typename T>
__device__ __forceinline__ void
embeddingGradColumns(const T *dy, const int *ids, float *dtable,
                     long long numIds, int vocab, int dim) {
  const detail::RowChunk range = detail::rowChunk(vocab);
  for (long long j = detail::firstColumn(); j < dim;
       j += detail::columnStride()) {
    for (long long row = range.begin; row < range.end; ++row)
      dtable[row * dim + j] = 0.0f;
    for (long long p = 0; p < numIds; ++p) {
      const int id = ids[p];
      if (id >= range.begin && id < range.end)
        dtable[static_cast<long long>(id) * dim + j] +=
            toFloat(dy[p * dim + j]);
    }
  }
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_EMBEDDING_CUH
