//===- CrossEntropy.cuh - Cross-entropy loss and its gradient --*- CUDA -*-===//
//
// Cross-entropy (runtime/host/CrossEntropy.cpp) over rows of logits. Block
// per row with an online log-sum-exp, one pass over the vocabulary; the
// mean over valid rows is a separate single-block reduction in a fixed
// order (crossEntropyReduce, countValid) rather than atomics, so the loss
// is bit-for-bit reproducible.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_CROSS_ENTROPY_CUH
#define KILN_RUNTIME_CUDA_DEVICE_CROSS_ENTROPY_CUH

#include "Common.cuh"
#include "Reductions.cuh"

namespace kiln::dev {

namespace detail {

/// Adds x to a running (max, sum of exp(x - max)): online log-sum-exp.
/// -inf values add nothing; a NaN makes the sum NaN.
__device__ __forceinline__ void onlineLogSumExp(float &max, float &sum,
                                                float x) {
  if (x > max) {
    sum = sum * expf(max - x) + 1.0f;
    max = x;
  } else if (!(x == max && max == negativeInfinity())) {
    sum += expf(x - max);
  }
}

/// This thread's share of a row's online log-sum-exp.
template <int N, int kThreads, typename T>
__device__ __forceinline__ void partialLogSumExp(const T *row, int vocab,
                                                 float &max, float &sum) {
  for (int j = rowBegin<N>(); j < vocab; j += kThreads * N) {
    float xs[N];
    loadFloats<N>(row + j, xs);
#pragma unroll
    for (int i = 0; i < N; ++i)
      onlineLogSumExp(max, sum, xs[i]);
  }
}

/// log(sum(exp(row))) of a row, on every thread: one pass of online
/// log-sum-exp per thread, then the block's maximum and rescaled sum.
template <typename T, int kThreads>
__device__ __forceinline__ float rowLogSumExp(const T *row, int vocab,
                                              float *scratch) {
  constexpr int W = Vec<T>::kWidth;
  float max = negativeInfinity(), sum = 0.0f;
  if (canVectorize(row, vocab))
    partialLogSumExp<W, kThreads>(row, vocab, max, sum);
  else
    partialLogSumExp<1, kThreads>(row, vocab, max, sum);
  const float rowMax = blockMax<kThreads>(max, scratch);
  const float scaled = sum == 0.0f ? 0.0f : sum * expf(max - rowMax);
  return rowMax + logf(blockSum<kThreads>(scaled, scratch));
}

/// One row of crossEntropyGrad: scale * (exp(x - shift) - onehot(target)),
/// or zeros when `zero`.
template <int N, int kThreads, typename T>
__device__ __forceinline__ void
crossEntropyGradRow(const T *row, T *grad, int vocab, int target, float shift,
                    float scale, bool zero) {
  for (int j = rowBegin<N>(); j < vocab; j += kThreads * N) {
    float out[N];
    if (zero) {
#pragma unroll
      for (int i = 0; i < N; ++i)
        out[i] = 0.0f;
    } else {
      float xs[N];
      loadFloats<N>(row + j, xs);
#pragma unroll
      for (int i = 0; i < N; ++i)
        out[i] =
            scale * (expf(xs[i] - shift) - (j + i == target ? 1.0f : 0.0f));
    }
    storeFloats<N>(grad + j, out);
  }
}

} // namespace detail

/// rowLoss[row] = logsumexp(logits[row]) - logits[row, target] for rows
/// whose target is not ignoreIndex, 0 for ignored rows. A target outside
/// [0, vocab) that is not ignoreIndex sets *errorFlag to row + 1 (first
/// writer wins) and gives the row a NaN loss. Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void
crossEntropyRows(const T *logits, const int *targets, float *rowLoss,
                 long long rows, int vocab, long long ignoreIndex,
                 int *errorFlag) {
  __shared__ float scratch[kThreads / 32];
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const int target = targets[row];
    if (target == ignoreIndex) {
      if (threadIdx.x == 0)
        rowLoss[row] = 0.0f;
      continue;
    }
    if (target < 0 || target >= vocab) {
      if (threadIdx.x == 0) {
        detail::reportError(errorFlag, row);
        rowLoss[row] = __int_as_float(0x7fffffff); // NaN
      }
      continue;
    }
    const T *r = logits + row * vocab;
    const float lse = detail::rowLogSumExp<T, kThreads>(r, vocab, scratch);
    if (threadIdx.x == 0)
      rowLoss[row] = lse - toFloat(r[target]);
  }
}

namespace detail {

/// The number of rows whose target is not ignoreIndex, on every thread of
/// block 0. Exact up to 2^24 rows.
template <int kThreads>
__device__ __forceinline__ float
countValidRows(const int *targets, long long rows, long long ignoreIndex,
               float *scratch) {
  float count = 0.0f;
  for (long long r = threadIdx.x; r < rows; r += kThreads)
    count += targets[r] != ignoreIndex ? 1.0f : 0.0f;
  return blockSum<kThreads>(count, scratch);
}

} // namespace detail

/// *count = the number of rows whose target is not ignoreIndex (exact up to
/// 2^24). Single block.
template <int kThreads>
__device__ __forceinline__ void countValid(const int *targets, long long rows,
                                           long long ignoreIndex,
                                           float *count) {
  __shared__ float scratch[kThreads / 32];
  if (blockIdx.x != 0)
    return;
  const float total =
      detail::countValidRows<kThreads>(targets, rows, ignoreIndex, scratch);
  if (threadIdx.x == 0)
    *count = total;
}

/// *loss = the mean of rowLoss over the rows whose target is not
/// ignoreIndex, 0 when there are none. Each thread sums a fixed set of rows
/// in order, then the block sums the threads: deterministic. Single block.
template <int kThreads>
__device__ __forceinline__ void
crossEntropyReduce(const float *rowLoss, const int *targets, float *loss,
                   long long rows, long long ignoreIndex) {
  __shared__ float scratch[kThreads / 32];
  if (blockIdx.x != 0)
    return;
  float sum = 0.0f;
  for (long long r = threadIdx.x; r < rows; r += kThreads)
    if (targets[r] != ignoreIndex)
      sum += rowLoss[r];
  const float total = blockSum<kThreads>(sum, scratch);
  const float count =
      detail::countValidRows<kThreads>(targets, rows, ignoreIndex, scratch);
  if (threadIdx.x == 0)
    *loss = count > 0.0f ? total / count : 0.0f;
}

/// dlogits = *dloss * (softmax(row) - onehot(target)) / *count, with *count
/// from countValid; ignored rows (and every row when *count is 0) get zeros.
/// Two passes per row: log-sum-exp, then the gradient. Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void
crossEntropyGrad(const float *dloss, const float *count, const T *logits,
                 const int *targets, T *dlogits, long long rows, int vocab,
                 long long ignoreIndex) {
  __shared__ float scratch[kThreads / 32];
  constexpr int W = Vec<T>::kWidth;
  const float scale = *count > 0.0f ? *dloss / *count : 0.0f;
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const int target = targets[row];
    const T *r = logits + row * vocab;
    T *g = dlogits + row * vocab;
    const bool ignored = target == ignoreIndex;
    const float shift =
        ignored ? 0.0f : detail::rowLogSumExp<T, kThreads>(r, vocab, scratch);
    if (canVectorize(r, vocab) && isAligned16(g))
      detail::crossEntropyGradRow<W, kThreads>(r, g, vocab, target, shift,
                                               scale, ignored);
    else
      detail::crossEntropyGradRow<1, kThreads>(r, g, vocab, target, shift,
                                               scale, ignored);
  }
}

namespace detail {

/// One row of linearCrossEntropyRows' gradient: scale * (exp(x - shift) -
/// onehot(target)) from the FP32 logits, or zeros, stored as T. In place
/// when T is float: each thread reads its elements before writing them.
template <int N, int kThreads, typename T>
__device__ __forceinline__ void
linearCrossEntropyGradRow(const float *row, T *grad, int vocab, int target,
                          float shift, float scale, bool zero) {
  for (int j = rowBegin<N>(); j < vocab; j += kThreads * N) {
    float xs[N];
    loadFloats<N>(row + j, xs);
    float out[N];
#pragma unroll
    for (int i = 0; i < N; ++i)
      out[i] =
          zero
              ? 0.0f
              : scale * (expf(xs[i] - shift) - (j + i == target ? 1.0f : 0.0f));
    storeFloats<N>(grad + j, out);
  }
}

} // namespace detail

/// The rows of one chunk of linear_cross_entropy (the host's
/// linearCrossEntropy): rows [chunk * chunkRows, min(rows, (chunk + 1) *
/// chunkRows)) of the step, whose FP32 logits the chunk's GEMM wrote to
/// `logits` ([chunkRows, vocab]). Each row's loss as crossEntropyRows
/// computes it, into rowLoss (indexed by the step's row), then its gradient
/// as crossEntropyGrad computes it (*dloss / *count, from countValid) into
/// `dlogits` ([chunkRows, vocab] of T; the FP32 logits themselves, in
/// place, when T is float). With kRoundLogits (a BF16 T) the logits are
/// first rounded to T in place, as the unfused GEMM would store them.
/// Block per row.
template <typename T, int kThreads, bool kRoundLogits>
__device__ __forceinline__ void
linearCrossEntropyRows(float *logits, const int *targets, float *rowLoss,
                       const float *dloss, const float *count, T *dlogits,
                       long long rows, long long chunkRows, int vocab,
                       long long ignoreIndex, int *errorFlag, long long chunk) {
  __shared__ float scratch[kThreads / 32];
  constexpr int N = kRowVectorWidth<float, T>;
  const float scale = *count > 0.0f ? *dloss / *count : 0.0f;
  const long long begin = chunk * chunkRows;
  const long long n = rows - begin < chunkRows ? rows - begin : chunkRows;
  for (long long i = blockIdx.x; i < n; i += gridDim.x) {
    const long long row = begin + i;
    const int target = targets[row];
    float *r = logits + i * vocab;
    T *g = dlogits + i * vocab;
    bool zero = target == ignoreIndex;
    float shift = 0.0f;
    if (!zero && (target < 0 || target >= vocab)) {
      if (threadIdx.x == 0) {
        detail::reportError(errorFlag, row);
        rowLoss[row] = __int_as_float(0x7fffffff); // NaN
      }
      zero = true;
    } else if (!zero) {
      if constexpr (kRoundLogits) {
        // The logits as the unfused step stores them: rounded to T.
        for (int j = threadIdx.x; j < vocab; j += kThreads)
          r[j] = toFloat(fromFloat<T>(r[j]));
        __syncthreads();
      }
      shift = detail::rowLogSumExp<float, kThreads>(r, vocab, scratch);
      if (threadIdx.x == 0)
        rowLoss[row] = shift - r[target];
    } else if (threadIdx.x == 0) {
      rowLoss[row] = 0.0f;
    }
    // The target's logit is read before the gradient overwrites it.
    __syncthreads();
    if (vocab % N == 0 && isAligned16(r) && isAligned16(g))
      detail::linearCrossEntropyGradRow<N, kThreads>(r, g, vocab, target, shift,
                                                     scale, zero);
    else
      detail::linearCrossEntropyGradRow<1, kThreads>(r, g, vocab, target, shift,
                                                     scale, zero);
    __syncthreads();
  }
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_CROSS_ENTROPY_CUH
