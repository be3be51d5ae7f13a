//===- Reductions.cuh - Warp, block, column sums ---------------*- CUDA -*-===//
//
// FP32 sums and maxima across a warp, a block, and down the columns of a
// matrix, always in an order fixed by the launch configuration and never
// with atomics on data, so that every result is bit-for-bit reproducible
// run to run. Column reductions run in two stages (row chunks, then the
// chunks in order) so that a tall input fills the GPU.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_REDUCTIONS_CUH
#define KILN_RUNTIME_CUDA_DEVICE_REDUCTIONS_CUH

#include "Common.cuh"

namespace kiln::dev {

//===----------------------------------------------------------------------===//
// Reductions
//===----------------------------------------------------------------------===//

/// The operations of the reductions (functors: the library uses no
/// lambdas).
struct Sum {
  __device__ __forceinline__ float operator()(float a, float b) const {
    return a + b;
  }
};
struct Max {
  __device__ __forceinline__ float operator()(float a, float b) const {
    return fmaxf(a, b);
  }
};

/// `op` over each group of kLanes consecutive lanes (a power of two up to
/// 32), returned to every lane of the group. A butterfly: every lane
/// combines the same pairs, so all lanes get the same bits. Every lane of
/// the warp must call it.
template <int kLanes, typename Op>
__device__ __forceinline__ float laneReduce(float v, Op op) {
  static_assert(kLanes >= 2 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0,
                "kLanes must be a power of two in [2, 32]");
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2)
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

/// The sum and the maximum over the 32 lanes of a warp, returned to every
/// lane.
__device__ __forceinline__ float warpSum(float v) {
  return laneReduce<32>(v, Sum{});
}
__device__ __forceinline__ float warpMax(float v) {
  return laneReduce<32>(v, Max{});
}

/// `op` over the block's kThreads threads, returned to every thread: warp
/// results, then `op` over the warp results in warp order (`identity` pads
/// the missing lanes). The order depends only on kThreads, so the result is
/// reproducible. `sharedScratch` holds at least kThreads / 32 floats of
/// shared memory; every thread must call, and the scratch may be reused as
/// soon as the call returns.
template <int kThreads, typename Op>
__device__ __forceinline__ float blockReduce(float v, float *sharedScratch,
                                             Op op, float identity) {
  static_assert(kThreads % 32 == 0 && kThreads >= 32 && kThreads <= 1024,
                "kThreads must be a multiple of 32 in [32, 1024]");
  constexpr int kWarps = kThreads / 32;
  v = laneReduce<32>(v, op);
  if constexpr (kWarps == 1) {
    return v;
  } else {
    const int lane = threadIdx.x % 32;
    if (lane == 0)
      sharedScratch[threadIdx.x / 32] = v;
    __syncthreads();
    float total = lane < kWarps ? sharedScratch[lane] : identity;
    total = laneReduce<32>(total, op);
    __syncthreads(); // the scratch is free again
    return total;
  }
}

/// The sum and the maximum over the block's threads (see blockReduce).
template <int kThreads>
__device__ __forceinline__ float blockSum(float v, float *sharedScratch) {
  return blockReduce<kThreads>(v, sharedScratch, Sum{}, 0.0f);
}
template <int kThreads>
__device__ __forceinline__ float blockMax(float v, float *sharedScratch) {
  return blockReduce<kThreads>(v, sharedScratch, Max{}, negativeInfinity());
}

namespace detail {

/// The first column of this thread and the stride of a thread-per-column
/// loop.
__device__ __forceinline__ long long firstColumn() {
  return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long columnStride() {
  return static_cast<long long>(gridDim.x) * blockDim.x;
}

/// The rows [begin, end) of this block's chunk: gridDim.y chunks of
/// ceil(rows / gridDim.y) rows each.
struct RowChunk {
  long long begin, end;
};
__device__ __forceinline__ RowChunk rowChunk(long long rows) {
  const long long per = (rows + gridDim.y - 1) / gridDim.y;
  const long long begin = static_cast<long long>(blockIdx.y) * per;
  return {begin, begin + per < rows ? begin + per : rows};
}

} // namespace detail

// Column reductions over rows (weight and bias gradients) run in two
// stages, so that a tall input fills the GPU rather than one block per 256
// columns: the *Partials kernels (grid: column blocks x row chunks, thread
// per column) sum each chunk of rows, in order, into partials[chunk * cols
// + j]; finishColumns (thread per column) adds the chunks in order. Every
// order is fixed by the grid: the result is deterministic.

/// Stage 1 of y[j] = sum over rows of x[row, j] (the gradient of a
/// broadcast bias).
template <typename T>
__device__ __forceinline__ void columnSumPartials(const T *x, float *partials,
                                                  long long rows, int cols) {
  const detail::RowChunk chunk = detail::rowChunk(rows);
  for (long long j = detail::firstColumn(); j < cols;
       j += detail::columnStride()) {
    float acc = 0.0f;
    for (long long r = chunk.begin; r < chunk.end; ++r)
      acc += toFloat(x[r * cols + j]);
    partials[blockIdx.y * static_cast<long long>(cols) + j] = acc;
  }
}

/// Stage 2: y[j] = the sum of the `chunks` partials of column j, in order.
template <typename T>
__device__ __forceinline__ void finishColumns(const float *partials, T *y,
                                              int chunks, long long cols) {
  for (long long j = detail::firstColumn(); j < cols;
       j += detail::columnStride()) {
    float acc = 0.0f;
    for (int c = 0; c < chunks; ++c)
      acc += partials[c * cols + j];
    y[j] = fromFloat<T>(acc);
  }
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_REDUCTIONS_CUH
