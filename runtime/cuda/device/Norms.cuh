//===- Norms.cuh - RMSNorm and LayerNorm -----------------------*- CUDA -*-===//
//
// RMSNorm and LayerNorm (runtime/host/Norms.cpp), forward, input gradient
// and weight gradient. Block per row: row statistics are FP32 block
// reductions; the per-element arithmetic is the host's, in FP32, with the
// statistics as FP32 values. Each pass over a row is a function template
// over N, the elements per access (see rowBegin), called with
// N = Vec<T>::kWidth or 1. The weight gradients recompute the row
// statistics (rmsRowStats, layerRowStats) rather than keep them from the
// forward, then reduce columns in two stages (Reductions.cuh). The
// per-row functions (rmsNormOfRow, ...) are what both the kernels here and
// the generated kernels of fused row regions (RowRegion.cuh) call.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_NORMS_CUH
#define KILN_RUNTIME_CUDA_DEVICE_NORMS_CUH

#include "Common.cuh"
#include "Reductions.cuh"

namespace kiln::dev {

namespace detail {

/// sum(x^2) of this thread's share of a row.
template <int N, int kThreads, typename T>
__device__ __forceinline__ float partialSumSquares(const T *xr, int dim) {
  float sum = 0.0f;
  for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
    float xs[N];
    loadFloats<N>(xr + j, xs);
#pragma unroll
    for (int i = 0; i < N; ++i)
      sum += xs[i] * xs[i];
  }
  return sum;
}

/// sum(x) of this thread's share of a row.
template <int N, int kThreads, typename T>
__device__ __forceinline__ float partialSum(const T *xr, int dim) {
  float sum = 0.0f;
  for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
    float xs[N];
    loadFloats<N>(xr + j, xs);
#pragma unroll
    for (int i = 0; i < N; ++i)
      sum += xs[i];
  }
  return sum;
}

/// sum((x - mean)^2) of this thread's share of a row.
template <int N, int kThreads, typename T>
__device__ __forceinline__ float
partialSumSquaredDeviations(const T *xr, int dim, float mean) {
  float sum = 0.0f;
  for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
    float xs[N];
    loadFloats<N>(xr + j, xs);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      float d = xs[i] - mean;
      sum += d * d;
    }
  }
  return sum;
}

/// 1 / sqrt(mean(x^2) + eps) of a row, on every thread.
template <typename T, int kThreads>
__device__ __forceinline__ float rmsInverse(const T *xr, int dim, float eps,
                                            float *scratch) {
  constexpr int W = Vec<T>::kWidth;
  const float partial = canVectorize(xr, dim)
                            ? partialSumSquares<W, kThreads>(xr, dim)
                            : partialSumSquares<1, kThreads>(xr, dim);
  const float sumSq = blockSum<kThreads>(partial, scratch);
  return __frsqrt_rn(sumSq / static_cast<float>(dim) + eps);
}

/// The mean and 1 / sqrt(biased variance + eps) of a row.
struct RowMoments {
  float mean;
  float rstd;
};

/// The moments of a row in two passes (mean, then squared deviations), on
/// every thread.
template <typename T, int kThreads>
__device__ __forceinline__ RowMoments rowMoments(const T *xr, int dim,
                                                 float eps, float *scratch) {
  constexpr int W = Vec<T>::kWidth;
  const bool vec = canVectorize(xr, dim);
  const float sum =
      vec ? partialSum<W, kThreads>(xr, dim) : partialSum<1, kThreads>(xr, dim);
  const float mean = blockSum<kThreads>(sum, scratch) / static_cast<float>(dim);
  const float sumSq =
      vec ? partialSumSquaredDeviations<W, kThreads>(xr, dim, mean)
          : partialSumSquaredDeviations<1, kThreads>(xr, dim, mean);
  const float var =
      blockSum<kThreads>(sumSq, scratch) / static_cast<float>(dim);
  return {mean, __frsqrt_rn(var + eps)};
}

template <int N, int kThreads, typename TX, typename TW, typename TY>
__device__ __forceinline__ void rmsNormRow(const TX *xr, const TW *w, TY *yr,
                                           int dim, float inv) {
  for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
    float xs[N], ws[N], ys[N];
    loadFloats<N>(xr + j, xs);
    loadFloats<N>(w + j, ws);
#pragma unroll
    for (int i = 0; i < N; ++i)
      ys[i] = xs[i] * inv * ws[i];
    storeFloats<N>(yr + j, ys);
  }
}

/// This thread's shares of sum(x^2) and sum(dy w x) of a row.
template <int N, int kThreads, typename TX, typename TDY, typename TW>
__device__ __forceinline__ void rmsNormGradSums(const TX *xr, const TDY *dyr,
                                                const TW *w, int dim,
                                                float &sumSq, float &dot) {
  for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
    float xs[N], dys[N], ws[N];
    loadFloats<N>(xr + j, xs);
    loadFloats<N>(dyr + j, dys);
    loadFloats<N>(w + j, ws);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      sumSq += xs[i] * xs[i];
      dot += dys[i] * ws[i] * xs[i];
    }
  }
}

template <int N, int kThreads, typename TX, typename TDY, typename TW,
          typename TDX>
__device__ __forceinline__ void rmsNormGradRow(const TX *xr, const TDY *dyr,
                                               const TW *w, TDX *dxr, int dim,
                                               float inv, float coef) {
  for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
    float xs[N], dys[N], ws[N], out[N];
    loadFloats<N>(xr + j, xs);
    loadFloats<N>(dyr + j, dys);
    loadFloats<N>(w + j, ws);
#pragma unroll
    for (int i = 0; i < N; ++i)
      out[i] = inv * dys[i] * ws[i] - coef * xs[i];
    storeFloats<N>(dxr + j, out);
  }
}

template <int N, int kThreads, typename TX, typename TW, typename TB,
          typename TY>
__device__ __forceinline__ void layerNormRow(const TX *xr, const TW *w,
                                             const TB *b, TY *yr, int dim,
                                             RowMoments m) {
  for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
    float xs[N], ws[N], ys[N];
    loadFloats<N>(xr + j, xs);
    loadFloats<N>(w + j, ws);
#pragma unroll
    for (int i = 0; i < N; ++i)
      ys[i] = (xs[i] - m.mean) * m.rstd * ws[i];
    if (b) {
      float bs[N];
      loadFloats<N>(b + j, bs);
#pragma unroll
      for (int i = 0; i < N; ++i)
        ys[i] += bs[i];
    }
    storeFloats<N>(yr + j, ys);
  }
}

/// This thread's shares of sum(g) and sum(g xhat) of a row, g = dy w.
template <int N, int kThreads, typename TX, typename TDY, typename TW>
__device__ __forceinline__ void
layerNormGradSums(const TX *xr, const TDY *dyr, const TW *w, int dim,
                  RowMoments m, float &sumG, float &sumGXhat) {
  for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
    float xs[N], dys[N], ws[N];
    loadFloats<N>(xr + j, xs);
    loadFloats<N>(dyr + j, dys);
    loadFloats<N>(w + j, ws);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      float g = dys[i] * ws[i];
      sumG += g;
      sumGXhat += g * ((xs[i] - m.mean) * m.rstd);
    }
  }
}

template <int N, int kThreads, typename TX, typename TDY, typename TW,
          typename TDX>
__device__ __forceinline__ void
layerNormGradRow(const TX *xr, const TDY *dyr, const TW *w, TDX *dxr, int dim,
                 RowMoments m, float meanG, float meanGXhat) {
  for (int j = rowBegin<N>(); j < dim; j += kThreads * N) {
    float xs[N], dys[N], ws[N], out[N];
    loadFloats<N>(xr + j, xs);
    loadFloats<N>(dyr + j, dys);
    loadFloats<N>(w + j, ws);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      float xhat = (xs[i] - m.mean) * m.rstd;
      out[i] = m.rstd * (dys[i] * ws[i] - meanG - xhat * meanGXhat);
    }
    storeFloats<N>(dxr + j, out);
  }
}

} // namespace detail

// One row. The functions below compute one row of `dim` elements with the
// whole block (every thread calls; `scratch` is kThreads / 32 floats of
// shared memory, free again when they return). Each pointer has a type of
// its own, so that a fused row region (RowRegion.cuh) can pass a row of
// shared memory (float, RoundedBf16) next to bf16 weights and outputs; the
// kernels further down run them over every row of a tensor of one type.
// A row is read and written N = kRowVectorWidth elements per access when
// canVectorizeRows holds for every pointer, else element by element.

/// RMSNorm (Llama) of one row: y = x / sqrt(mean(x^2) + eps) * w.
template <int kThreads, typename TX, typename TW, typename TY>
__device__ __forceinline__ void rmsNormOfRow(const TX *xr, const TW *w, TY *yr,
                                             int dim, float eps,
                                             float *scratch) {
  constexpr int N = kRowVectorWidth<TX, TW, TY>;
  const float inv = detail::rmsInverse<TX, kThreads>(xr, dim, eps, scratch);
  if (canVectorizeRows<N>(dim, xr, w, yr))
    detail::rmsNormRow<N, kThreads>(xr, w, yr, dim, inv);
  else
    detail::rmsNormRow<1, kThreads>(xr, w, yr, dim, inv);
}

/// The input gradient of rmsNormOfRow. With r = (mean(x^2) + eps)^(-1/2):
///   dx = r (dy w) - x r^3 sum(dy w x) / dim.
template <int kThreads, typename TDY, typename TX, typename TW, typename TDX>
__device__ __forceinline__ void rmsNormGradOfRow(const TDY *dyr, const TX *xr,
                                                 const TW *w, TDX *dxr, int dim,
                                                 float eps, float *scratch) {
  constexpr int N = kRowVectorWidth<TDY, TX, TW, TDX>;
  const bool vec = canVectorizeRows<N>(dim, xr, dyr, w, dxr);
  float sumSq = 0.0f, dot = 0.0f;
  if (vec)
    detail::rmsNormGradSums<N, kThreads>(xr, dyr, w, dim, sumSq, dot);
  else
    detail::rmsNormGradSums<1, kThreads>(xr, dyr, w, dim, sumSq, dot);
  sumSq = blockSum<kThreads>(sumSq, scratch);
  dot = blockSum<kThreads>(dot, scratch);
  const float inv = __frsqrt_rn(sumSq / static_cast<float>(dim) + eps);
  const float coef = inv * inv * inv * dot / static_cast<float>(dim);
  if (vec)
    detail::rmsNormGradRow<N, kThreads>(xr, dyr, w, dxr, dim, inv, coef);
  else
    detail::rmsNormGradRow<1, kThreads>(xr, dyr, w, dxr, dim, inv, coef);
}

/// LayerNorm (GPT-2) of one row: y = (x - mean) / sqrt(var + eps) * w + b,
/// with the biased variance; `b` may be null.
template <int kThreads, typename TX, typename TW, typename TB, typename TY>
__device__ __forceinline__ void layerNormOfRow(const TX *xr, const TW *w,
                                               const TB *b, TY *yr, int dim,
                                               float eps, float *scratch) {
  constexpr int N = kRowVectorWidth<TX, TW, TB, TY>;
  const detail::RowMoments m =
      detail::rowMoments<TX, kThreads>(xr, dim, eps, scratch);
  if (canVectorizeRows<N>(dim, xr, w, b, yr))
    detail::layerNormRow<N, kThreads>(xr, w, b, yr, dim, m);
  else
    detail::layerNormRow<1, kThreads>(xr, w, b, yr, dim, m);
}

/// The input gradient of layerNormOfRow. With xhat = (x - mean) rstd,
/// g = dy w:
///   dx = rstd (g - mean(g) - xhat mean(g xhat)).
template <int kThreads, typename TDY, typename TX, typename TW, typename TDX>
__device__ __forceinline__ void
layerNormGradOfRow(const TDY *dyr, const TX *xr, const TW *w, TDX *dxr, int dim,
                   float eps, float *scratch) {
  constexpr int N = kRowVectorWidth<TDY, TX, TW, TDX>;
  const detail::RowMoments m =
      detail::rowMoments<TX, kThreads>(xr, dim, eps, scratch);
  const bool vec = canVectorizeRows<N>(dim, xr, dyr, w, dxr);
  float sumG = 0.0f, sumGXhat = 0.0f;
  if (vec)
    detail::layerNormGradSums<N, kThreads>(xr, dyr, w, dim, m, sumG, sumGXhat);
  else
    detail::layerNormGradSums<1, kThreads>(xr, dyr, w, dim, m, sumG, sumGXhat);
  const float meanG =
      blockSum<kThreads>(sumG, scratch) / static_cast<float>(dim);
  const float meanGXhat =
      blockSum<kThreads>(sumGXhat, scratch) / static_cast<float>(dim);
  if (vec)
    detail::layerNormGradRow<N, kThreads>(xr, dyr, w, dxr, dim, m, meanG,
                                          meanGXhat);
  else
    detail::layerNormGradRow<1, kThreads>(xr, dyr, w, dxr, dim, m, meanG,
                                          meanGXhat);
}

/// RMSNorm of every row (rmsNormOfRow). Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void rmsNorm(const T *x, const T *w, T *y,
                                        long long rows, int dim, float eps) {
  __shared__ float scratch[kThreads / 32];
  for (long long row = blockIdx.x; row < rows; row += gridDim.x)
    rmsNormOfRow<kThreads>(x + row * dim, w, y + row * dim, dim, eps, scratch);
}

/// The input gradient of rmsNorm (rmsNormGradOfRow). Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void rmsNormGrad(const T *dy, const T *x, const T *w,
                                            T *dx, long long rows, int dim,
                                            float eps) {
  __shared__ float scratch[kThreads / 32];
  for (long long row = blockIdx.x; row < rows; row += gridDim.x)
    rmsNormGradOfRow<kThreads>(dy + row * dim, x + row * dim, w, dx + row * dim,
                               dim, eps, scratch);
}

/// LayerNorm of every row (layerNormOfRow); `b` may be null. Block per
/// row.
template <typename T, int kThreads>
__device__ __forceinline__ void layerNorm(const T *x, const T *w, const T *b,
                                          T *y, long long rows, int dim,
                                          float eps) {
  __shared__ float scratch[kThreads / 32];
  for (long long row = blockIdx.x; row < rows; row += gridDim.x)
    layerNormOfRow<kThreads>(x + row * dim, w, b, y + row * dim, dim, eps,
                             scratch);
}

/// The input gradient of layerNorm (layerNormGradOfRow). Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void layerNormGrad(const T *dy, const T *x,
                                              const T *w, T *dx, long long rows,
                                              int dim, float eps) {
  __shared__ float scratch[kThreads / 32];
  for (long long row = blockIdx.x; row < rows; row += gridDim.x)
    layerNormGradOfRow<kThreads>(dy + row * dim, x + row * dim, w,
                                 dx + row * dim, dim, eps, scratch);
}

/// rstd[row] = 1 / sqrt(mean(x^2) + eps): the statistics
/// rmsNormWeightGradColumns reads. Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void
rmsRowStats(const T *x, float *rstd, long long rows, int dim, float eps) {
  __shared__ float scratch[kThreads / 32];
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const float inv =
        detail::rmsInverse<T, kThreads>(x + row * dim, dim, eps, scratch);
    if (threadIdx.x == 0)
      rstd[row] = inv;
  }
}

/// mean[row] and rstd[row] = 1 / sqrt(biased variance + eps): the
/// statistics layerNormWeightGradColumns reads. Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void layerRowStats(const T *x, float *mean,
                                              float *rstd, long long rows,
                                              int dim, float eps) {
  __shared__ float scratch[kThreads / 32];
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const detail::RowMoments m =
        detail::rowMoments<T, kThreads>(x + row * dim, dim, eps, scratch);
    if (threadIdx.x == 0) {
      mean[row] = m.mean;
      rstd[row] = m.rstd;
    }
  }
}

/// Stage 1 of the weight gradient of rmsNorm: dw[j] = sum over rows of
/// dy * x * rstd[row], with rstd from rmsRowStats.
template <typename T>
__device__ __forceinline__ void
rmsNormWeightGradPartials(const T *dy, const T *x, const float *rstd,
                          float *partials, long long rows, int dim) {
  const detail::RowChunk chunk = detail::rowChunk(rows);
  for (long long j = detail::firstColumn(); j < dim;
       j += detail::columnStride()) {
    float acc = 0.0f;
    for (long long r = chunk.begin; r < chunk.end; ++r)
      acc += toFloat(dy[r * dim + j]) * toFloat(x[r * dim + j]) * rstd[r];
    partials[blockIdx.y * static_cast<long long>(dim) + j] = acc;
  }
}

/// Stage 1 of the weight gradient of layerNorm: dw[j] = sum over rows of
/// dy * (x - mean[row]) * rstd[row], with the statistics from
/// layerRowStats. The bias gradient is a columnSum of dy.
template <typename T>
__device__ __forceinline__ void
layerNormWeightGradPartials(const T *dy, const T *x, const float *mean,
                            const float *rstd, float *partials, long long rows,
                            int dim) {
  const detail::RowChunk chunk = detail::rowChunk(rows);
  for (long long j = detail::firstColumn(); j < dim;
       j += detail::columnStride()) {
    float acc = 0.0f;
    for (long long r = chunk.begin; r < chunk.end; ++r)
      acc += toFloat(dy[r * dim + j]) *
             ((toFloat(x[r * dim + j]) - mean[r]) * rstd[r]);
    partials[blockIdx.y * static_cast<long long>(dim) + j] = acc;
  }
}

/// Stage 1 of a LayerNorm's weight and bias gradients in one pass over dy
/// (nn-fuse's norm-param-grads): wPartials as layerNormWeightGradPartials,
/// bPartials as columnSumPartials of dy, each summed in the same order.
template <typename T>
__device__ __forceinline__ void
layerNormParamGradPartials(const T *dy, const T *x, const float *mean,
                           const float *rstd, float *wPartials,
                           float *bPartials, long long rows, int dim) {
  const detail::RowChunk chunk = detail::rowChunk(rows);
  for (long long j = detail::firstColumn(); j < dim;
       j += detail::columnStride()) {
    float wAcc = 0.0f, bAcc = 0.0f;
    for (long long r = chunk.begin; r < chunk.end; ++r) {
      const float g = toFloat(dy[r * dim + j]);
      wAcc += g * ((toFloat(x[r * dim + j]) - mean[r]) * rstd[r]);
      bAcc += g;
    }
    const long long at = blockIdx.y * static_cast<long long>(dim) + j;
    wPartials[at] = wAcc;
    bPartials[at] = bAcc;
  }
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_NORMS_CUH
