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

namespace detail {
template <typename A, typename B> constexpr bool kSameType = false;
template <typename A> constexpr bool kSameType<A, A> = true;
} // namespace detail

/// yr = table[id, :], one row of a [vocab, dim] table, with the whole
/// block: a copy when the row types agree, else widened (to a float or
/// RoundedBf16 row of shared memory, exactly). An id outside [0, vocab)
/// sets *errorFlag to position + 1 (first writer wins; the host reports
/// it, as the host kernel throws) and writes zeros.
template <int kThreads, typename TT, typename TY>
__device__ __forceinline__ void
embeddingOfRow(const TT *table, long long id, int vocab, TY *yr, int dim,
               int *errorFlag, long long position) {
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0)
      detail::reportError(errorFlag, position);
    for (int j = threadIdx.x; j < dim; j += kThreads)
      yr[j] = fromFloat<TY>(0.0f);
    return;
  }
  const TT *src = table + id * dim;
  if constexpr (detail::kSameType<TT, TY>) {
    constexpr int W = Vec<TT>::kWidth;
    if (canVectorize(src, dim) && isAligned16(yr)) {
      for (int j = threadIdx.x * W; j < dim; j += kThreads * W)
        storeVec(yr + j, loadVec(src + j));
    } else {
      for (int j = threadIdx.x; j < dim; j += kThreads)
        yr[j] = src[j];
    }
  } else {
    constexpr int N = kRowVectorWidth<TT, TY>;
    if (canVectorizeRows<N>(dim, src, yr)) {
      for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
        float v[N];
        loadFloats<N>(src + j, v);
        storeFloats<N>(yr + j, v);
      }
    } else {
      for (int j = threadIdx.x; j < dim; j += kThreads)
        yr[j] = fromFloat<TY>(toFloat(src[j]));
    }
  }
}

/// y[p, :] = table[ids[p], :] for a [vocab, dim] table (embeddingOfRow).
/// Block per id.
template <typename T, int kThreads>
__device__ __forceinline__ void embedding(const T *table, const int *ids, T *y,
                                          long long numIds, int vocab, int dim,
                                          int *errorFlag) {
  for (long long p = blockIdx.x; p < numIds; p += gridDim.x)
    embeddingOfRow<kThreads>(table, ids[p], vocab, y + p * dim, dim, errorFlag,
                             p);
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
