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
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_KILN_DEVICE_CUH
#define KILN_RUNTIME_CUDA_DEVICE_KILN_DEVICE_CUH

#include <cuda_bf16.h>

namespace kiln::dev {

//===----------------------------------------------------------------------===//
// Storage types and conversions
//===----------------------------------------------------------------------===//

__device__ __forceinline__ float toFloat(float x) { return x; }
__device__ __forceinline__ float toFloat(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

/// The value of an FP32 result stored as T: exact for float, rounded to
/// nearest-even for bf16.
template <typename T> __device__ __forceinline__ T fromFloat(float x);
template <> __device__ __forceinline__ float fromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

/// -infinity: the maximum of no values and the log of an empty sum.
__device__ __forceinline__ float negativeInfinity() {
  return -__int_as_float(0x7f800000);
}

//===----------------------------------------------------------------------===//
// 16-byte vector access
//===----------------------------------------------------------------------===//

/// kWidth consecutive elements of T, 16 bytes: one vector load or store.
template <typename T> struct alignas(16) Vec {
  static constexpr int kWidth = 16 / sizeof(T);
  T elems[kWidth];
};

__device__ __forceinline__ bool isAligned16(const void *p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

/// Loads Vec<T> from p, which must be 16-byte aligned.
template <typename T> __device__ __forceinline__ Vec<T> loadVec(const T *p) {
  return *reinterpret_cast<const Vec<T> *>(p);
}

/// Stores Vec<T> at p, which must be 16-byte aligned.
template <typename T>
__device__ __forceinline__ void storeVec(T *p, const Vec<T> &v) {
  *reinterpret_cast<Vec<T> *>(p) = v;
}

/// Whether a row of n elements at p can use Vec<T> accesses.
template <typename T>
__device__ __forceinline__ bool canVectorize(const T *p, long long n) {
  return n % Vec<T>::kWidth == 0 && isAligned16(p);
}

/// Widens N elements at p to FP32: one vector load when N > 1 (p aligned,
/// N == Vec<T>::kWidth), else one scalar load.
template <int N, typename T>
__device__ __forceinline__ void loadFloats(const T *p, float (&out)[N]) {
  if constexpr (N == 1) {
    out[0] = toFloat(p[0]);
  } else {
    static_assert(N == Vec<T>::kWidth, "vector width mismatch");
    Vec<T> v = loadVec(p);
#pragma unroll
    for (int i = 0; i < N; ++i)
      out[i] = toFloat(v.elems[i]);
  }
}

/// Rounds N FP32 values to T and stores them at p (see loadFloats).
template <int N, typename T>
__device__ __forceinline__ void storeFloats(T *p, const float (&in)[N]) {
  if constexpr (N == 1) {
    p[0] = fromFloat<T>(in[0]);
  } else {
    static_assert(N == Vec<T>::kWidth, "vector width mismatch");
    Vec<T> v;
#pragma unroll
    for (int i = 0; i < N; ++i)
      v.elems[i] = fromFloat<T>(in[i]);
    storeVec(p, v);
  }
}

/// The first element of this thread in a pass over a row that reads N
/// elements per access: consecutive threads take consecutive N-element
/// chunks (coalesced), and the pass loops
///   for (j = rowBegin<N>(); j < n; j += kThreads * N).
/// Row passes are function templates over N, called with Vec<T>::kWidth
/// when canVectorize holds for every pointer of the row and with 1
/// otherwise.
template <int N> __device__ __forceinline__ int rowBegin() {
  return static_cast<int>(threadIdx.x) * N;
}

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

//===----------------------------------------------------------------------===//
// Scalar math of elementwise bodies (runtime/host/Activations.cpp)
//===----------------------------------------------------------------------===//

/// GELU's tanh-approximation constants (Hendrycks and Gimpel; GPT-2):
/// sqrt(2 / pi) and the cubic coefficient.
constexpr float kGeluTanhScale = 0.7978845608028654f;
constexpr float kGeluTanhCubic = 0.044715f;
/// 1 / sqrt(2) and 1 / sqrt(2 pi), of the exact GELU and its derivative.
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

__device__ __forceinline__ float sigmoid(float x) {
  return 1.0f / (1.0f + expf(-x));
}

/// x * sigmoid(x) (SiLU, the gate of SwiGLU).
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }

/// SwiGLU: gate * sigmoid(gate) * up.
__device__ __forceinline__ float swiglu(float gate, float up) {
  return silu(gate) * up;
}

/// GELU: exact, 0.5 x (1 + erf(x / sqrt(2))), or with `tanhApprox`
/// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
__device__ __forceinline__ float gelu(float x, bool tanhApprox) {
  if (tanhApprox)
    return 0.5f * x *
           (1.0f + tanhf(kGeluTanhScale * (x + kGeluTanhCubic * x * x * x)));
  return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
}

/// dy * d/dx gelu(x), for the same mode as the forward.
__device__ __forceinline__ float geluGrad(float dy, float x, bool tanhApprox) {
  float derivative;
  if (tanhApprox) {
    float t = tanhf(kGeluTanhScale * (x + kGeluTanhCubic * x * x * x));
    derivative = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) *
                                         kGeluTanhScale *
                                         (1.0f + 3.0f * kGeluTanhCubic * x * x);
  } else {
    // Phi(x) + x phi(x), with Phi and phi the standard normal CDF and density.
    derivative = 0.5f * (1.0f + erff(x * kInvSqrt2)) +
                 x * kInvSqrt2Pi * expf(-0.5f * x * x);
  }
  return dy * derivative;
}

/// The gate gradient of swiglu: dy * up * s * (1 + gate * (1 - s)) with
/// s = sigmoid(gate).
__device__ __forceinline__ float swigluGate(float dy, float gate, float up) {
  float s = sigmoid(gate);
  return dy * up * s * (1.0f + gate * (1.0f - s));
}

/// The up gradient of swiglu: dy * gate * sigmoid(gate).
__device__ __forceinline__ float swigluUp(float dy, float gate) {
  return dy * gate * sigmoid(gate);
}

//===----------------------------------------------------------------------===//
// Fill (grid-stride)
//===----------------------------------------------------------------------===//

/// out[i] = value for i < n.
template <typename T>
__device__ __forceinline__ void fill(T *out, long long n, float value) {
  const T stored = fromFloat<T>(value);
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i =
           static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += stride)
    out[i] = stored;
}

//===----------------------------------------------------------------------===//
// Normalisation over the last dimension (runtime/host/Norms.cpp)
//===----------------------------------------------------------------------===//
//
// Block per row. Row statistics are FP32 block reductions; the per-element
// arithmetic is the host's, in FP32, with the statistics as FP32 values.
// Each pass over a row is a function template over N, the elements per
// access (see rowBegin), called with N = Vec<T>::kWidth or 1.

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

template <int N, int kThreads, typename T>
__device__ __forceinline__ void rmsNormRow(const T *xr, const T *w, T *yr,
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
template <int N, int kThreads, typename T>
__device__ __forceinline__ void rmsNormGradSums(const T *xr, const T *dyr,
                                                const T *w, int dim,
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

template <int N, int kThreads, typename T>
__device__ __forceinline__ void rmsNormGradRow(const T *xr, const T *dyr,
                                               const T *w, T *dxr, int dim,
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

template <int N, int kThreads, typename T>
__device__ __forceinline__ void layerNormRow(const T *xr, const T *w,
                                             const T *b, T *yr, int dim,
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
template <int N, int kThreads, typename T>
__device__ __forceinline__ void
layerNormGradSums(const T *xr, const T *dyr, const T *w, int dim, RowMoments m,
                  float &sumG, float &sumGXhat) {
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

template <int N, int kThreads, typename T>
__device__ __forceinline__ void
layerNormGradRow(const T *xr, const T *dyr, const T *w, T *dxr, int dim,
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

/// RMSNorm (Llama): y = x / sqrt(mean(x^2) + eps) * w per row of `dim`.
/// Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void rmsNorm(const T *x, const T *w, T *y,
                                        long long rows, int dim, float eps) {
  __shared__ float scratch[kThreads / 32];
  constexpr int W = Vec<T>::kWidth;
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const T *xr = x + row * dim;
    T *yr = y + row * dim;
    const float inv = detail::rmsInverse<T, kThreads>(xr, dim, eps, scratch);
    if (canVectorize(xr, dim) && isAligned16(w) && isAligned16(yr))
      detail::rmsNormRow<W, kThreads>(xr, w, yr, dim, inv);
    else
      detail::rmsNormRow<1, kThreads>(xr, w, yr, dim, inv);
  }
}

/// The input gradient of rmsNorm. With r = (mean(x^2) + eps)^(-1/2):
///   dx = r (dy w) - x r^3 sum(dy w x) / dim.
/// Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void rmsNormGrad(const T *dy, const T *x, const T *w,
                                            T *dx, long long rows, int dim,
                                            float eps) {
  __shared__ float scratch[kThreads / 32];
  constexpr int W = Vec<T>::kWidth;
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const T *xr = x + row * dim;
    const T *dyr = dy + row * dim;
    T *dxr = dx + row * dim;
    const bool vec = canVectorize(xr, dim) && isAligned16(dyr) &&
                     isAligned16(w) && isAligned16(dxr);
    float sumSq = 0.0f, dot = 0.0f;
    if (vec)
      detail::rmsNormGradSums<W, kThreads>(xr, dyr, w, dim, sumSq, dot);
    else
      detail::rmsNormGradSums<1, kThreads>(xr, dyr, w, dim, sumSq, dot);
    sumSq = blockSum<kThreads>(sumSq, scratch);
    dot = blockSum<kThreads>(dot, scratch);
    const float inv = __frsqrt_rn(sumSq / static_cast<float>(dim) + eps);
    const float coef = inv * inv * inv * dot / static_cast<float>(dim);
    if (vec)
      detail::rmsNormGradRow<W, kThreads>(xr, dyr, w, dxr, dim, inv, coef);
    else
      detail::rmsNormGradRow<1, kThreads>(xr, dyr, w, dxr, dim, inv, coef);
  }
}

/// LayerNorm (GPT-2): y = (x - mean) / sqrt(var + eps) * w + b per row, with
/// the biased variance; `b` may be null. Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void layerNorm(const T *x, const T *w, const T *b,
                                          T *y, long long rows, int dim,
                                          float eps) {
  __shared__ float scratch[kThreads / 32];
  constexpr int W = Vec<T>::kWidth;
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const T *xr = x + row * dim;
    T *yr = y + row * dim;
    const detail::RowMoments m =
        detail::rowMoments<T, kThreads>(xr, dim, eps, scratch);
    if (canVectorize(xr, dim) && isAligned16(w) && (!b || isAligned16(b)) &&
        isAligned16(yr))
      detail::layerNormRow<W, kThreads>(xr, w, b, yr, dim, m);
    else
      detail::layerNormRow<1, kThreads>(xr, w, b, yr, dim, m);
  }
}

/// The input gradient of layerNorm. With xhat = (x - mean) rstd, g = dy w:
///   dx = rstd (g - mean(g) - xhat mean(g xhat)).
/// Block per row.
template <typename T, int kThreads>
__device__ __forceinline__ void layerNormGrad(const T *dy, const T *x,
                                              const T *w, T *dx, long long rows,
                                              int dim, float eps) {
  __shared__ float scratch[kThreads / 32];
  constexpr int W = Vec<T>::kWidth;
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const T *xr = x + row * dim;
    const T *dyr = dy + row * dim;
    T *dxr = dx + row * dim;
    const detail::RowMoments m =
        detail::rowMoments<T, kThreads>(xr, dim, eps, scratch);
    const bool vec = canVectorize(xr, dim) && isAligned16(dyr) &&
                     isAligned16(w) && isAligned16(dxr);
    float sumG = 0.0f, sumGXhat = 0.0f;
    if (vec)
      detail::layerNormGradSums<W, kThreads>(xr, dyr, w, dim, m, sumG,
                                             sumGXhat);
    else
      detail::layerNormGradSums<1, kThreads>(xr, dyr, w, dim, m, sumG,
                                             sumGXhat);
    const float meanG =
        blockSum<kThreads>(sumG, scratch) / static_cast<float>(dim);
    const float meanGXhat =
        blockSum<kThreads>(sumGXhat, scratch) / static_cast<float>(dim);
    if (vec)
      detail::layerNormGradRow<W, kThreads>(xr, dyr, w, dxr, dim, m, meanG,
                                            meanGXhat);
    else
      detail::layerNormGradRow<1, kThreads>(xr, dyr, w, dxr, dim, m, meanG,
                                            meanGXhat);
  }
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

//===----------------------------------------------------------------------===//
// Rotary position embedding (runtime/host/Rope.cpp)
//===----------------------------------------------------------------------===//

namespace detail {

/// theta^(-2i / headDim), in double as the host's (Hugging Face's inv_freq).
__device__ __forceinline__ double ropeFrequency(double theta, int i,
                                                int headDim) {
  return pow(theta,
             -2.0 * static_cast<double>(i) / static_cast<double>(headDim));
}

} // namespace detail

/// Rotary embedding of x [batch, seq, heads * headDim] in the rotate_half
/// convention: for i < headDim / 2, angle = pos * theta^(-2i / headDim) in
/// double (negated when `inverse`, the transpose and so the gradient),
///   y[i]        = x[i] cos - x[i + headDim/2] sin
///   y[i + hd/2] = x[i + headDim/2] cos + x[i] sin,
/// with cos and sin rounded to FP32. `positions` [batch, seq] may be null
/// (the position is then the index within the sequence). headDim is even;
/// y may alias x (every element is read and written by one thread). Block
/// per token (batch * seq rows); threads split the frequencies and loop
/// over the heads, so each sin/cos is computed once per token.
template <typename T, int kThreads>
__device__ __forceinline__ void rope(const T *x, const int *positions, T *y,
                                     int batch, int seq, int heads, int headDim,
                                     float theta, bool inverse) {
  const long long tokens = static_cast<long long>(batch) * seq;
  const long long width = static_cast<long long>(heads) * headDim;
  const int half = headDim / 2;
  const double thetaD = static_cast<double>(theta);
  // Usually half <= kThreads: each thread's one frequency, computed once.
  const int firstI = threadIdx.x;
  const double firstFreq =
      firstI < half ? detail::ropeFrequency(thetaD, firstI, headDim) : 0.0;
  for (long long t = blockIdx.x; t < tokens; t += gridDim.x) {
    double pos = positions ? static_cast<double>(positions[t])
                           : static_cast<double>(t % seq);
    if (inverse)
      pos = -pos;
    for (int i = firstI; i < half; i += kThreads) {
      const double freq =
          i == firstI ? firstFreq : detail::ropeFrequency(thetaD, i, headDim);
      double sinD, cosD;
      sincos(pos * freq, &sinD, &cosD);
      const float c = static_cast<float>(cosD), s = static_cast<float>(sinD);
      for (int h = 0; h < heads; ++h) {
        const long long base = t * width + static_cast<long long>(h) * headDim;
        const float lo = toFloat(x[base + i]);
        const float hi = toFloat(x[base + i + half]);
        y[base + i] = fromFloat<T>(lo * c - hi * s);
        y[base + i + half] = fromFloat<T>(hi * c + lo * s);
      }
    }
  }
}

//===----------------------------------------------------------------------===//
// Embedding (runtime/host/Embedding.cpp)
//===----------------------------------------------------------------------===//

namespace detail {

/// Records the first bad index of a kernel: *errorFlag = position + 1 if it
/// was 0 (errorFlag may be null).
__device__ __forceinline__ void reportError(int *errorFlag,
                                            long long position) {
  if (errorFlag)
    atomicCAS(errorFlag, 0, static_cast<int>(position + 1));
}

} // namespace detail

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

//===----------------------------------------------------------------------===//
// Cross-entropy (runtime/host/CrossEntropy.cpp)
//===----------------------------------------------------------------------===//

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

//===----------------------------------------------------------------------===//
// Attention (runtime/host/Attention.cpp)
//===----------------------------------------------------------------------===//
//
// Exact and naive: a block owns one row of one head; its warps take the
// keys (or queries) in turn, each lane holding headDim / 32 dimensions
// (d = lane + 32 e), and the warps' partial results are combined in warp
// order through shared memory. The head dimension is the template's
// kHeadDim (any value up to 512; multiples of 32 waste no lanes). q and out
// are [batch, seq, heads * kHeadDim], k and v [batch, seq, kvHeads *
// kHeadDim], lse and delta [batch, heads, seq] (FP32); query head h reads kv
// head h / (heads / kvHeads). Each row's result depends on neither the grid
// nor the other rows: any grid gives the same bits.
//
// A query at flattened token t = b * seq + i of document [begin, end) sees
// the keys [begin, causal ? t + 1 : end). Documents are the batch rows, or
// with cuSeqlens (non-decreasing from 0 to batch * seq) its intervals of the
// flattened token stream. cuSeqlens is not validated here (the host checks
// it); a malformed one cannot make a kernel read out of bounds: a token
// outside every interval sees no key (out = 0, lse = -inf).

namespace detail {

/// The document [begin, end) of flattened token t; begin <= t < end unless
/// cuSeqlens puts t in none (then begin = end = t).
__device__ __forceinline__ void documentOf(long long t, int batch, int seq,
                                           const int *cuSeqlens,
                                           int numCuSeqlens, long long &begin,
                                           long long &end) {
  if (!cuSeqlens) {
    begin = (t / seq) * seq;
    end = begin + seq;
    return;
  }
  // lo = the number of leading entries <= t (upper bound of t).
  int lo = 0, hi = numCuSeqlens;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (cuSeqlens[mid] <= t)
      lo = mid + 1;
    else
      hi = mid;
  }
  // The search saw cuSeqlens[lo - 1] <= t < cuSeqlens[lo] when both exist,
  // sorted or not, so clamping to the token range keeps every read inside.
  if (lo == 0 || lo == numCuSeqlens) {
    begin = end = t;
    return;
  }
  const long long tokens = static_cast<long long>(batch) * seq;
  begin = cuSeqlens[lo - 1] < 0 ? 0 : cuSeqlens[lo - 1];
  end = cuSeqlens[lo] > tokens ? tokens : cuSeqlens[lo];
}

/// The keys flattened token t sees: [begin, last) of its document, up to t
/// itself when causal.
__device__ __forceinline__ void visibleKeys(long long t, int batch, int seq,
                                            bool causal, const int *cuSeqlens,
                                            int numCuSeqlens, long long &begin,
                                            long long &last) {
  long long end;
  documentOf(t, batch, seq, cuSeqlens, numCuSeqlens, begin, end);
  last = causal && t + 1 < end ? t + 1 : end;
}

/// Index into [batch, heads, seq] of flattened token t and head h.
__device__ __forceinline__ long long headRowIndex(long long t, int h, int seq,
                                                  int heads) {
  return ((t / seq) * heads + h) * seq + t % seq;
}

/// Loads this lane's dimensions (lane + 32 e) of a head row as FP32; lanes
/// past kHeadDim get 0.
template <int kHeadDim, typename T>
__device__ __forceinline__ void
loadHeadRow(const T *p, int lane, float (&out)[(kHeadDim + 31) / 32]) {
#pragma unroll
  for (int e = 0; e < (kHeadDim + 31) / 32; ++e) {
    const int d = lane + 32 * e;
    out[e] = (kHeadDim % 32 == 0 || d < kHeadDim) ? toFloat(p[d]) : 0.0f;
  }
}

/// The compile-time checks of the attention templates' parameters.
template <int kHeadDim, int kThreads> struct AttentionShapeCheck {
  static_assert(kThreads % 32 == 0 && kThreads >= 32 && kThreads <= 1024,
                "kThreads must be a multiple of 32 in [32, 1024]");
  static_assert(kHeadDim > 0 && kHeadDim <= 512, "kHeadDim out of range");
  static constexpr bool ok = true;
};

} // namespace detail

/// Exact softmax attention forward: out and lse (the natural log of the
/// softmax denominator of the scaled, masked scores; -inf with out = 0 for a
/// row that sees no key). Grid (seq, heads, batch): a block per query row
/// and head, warps taking the visible keys in turn with an online softmax
/// each, combined in warp order.
template <typename T, int kHeadDim, int kThreads>
__device__ __forceinline__ void
attentionForward(const T *q, const T *k, const T *v, T *out, float *lse,
                 int batch, int seq, int heads, int kvHeads, float scale,
                 bool causal, const int *cuSeqlens, int numCuSeqlens) {
  static_assert(detail::AttentionShapeCheck<kHeadDim, kThreads>::ok);
  constexpr int kWarps = kThreads / 32;
  constexpr int kPerLane = (kHeadDim + 31) / 32;
  static_assert(kWarps * (kHeadDim + 2) * 4 <= 48 * 1024,
                "attentionForward: shared memory over 48 KiB");
  __shared__ float warpMaxes[kWarps], warpSums[kWarps];
  __shared__ float warpAcc[kWarps][kHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const long long kvStride = static_cast<long long>(kvHeads) * kHeadDim;

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int h = blockIdx.y; h < heads; h += gridDim.y)
      for (int i = blockIdx.x; i < seq; i += gridDim.x) {
        const long long t = static_cast<long long>(b) * seq + i;
        const long long kvOffset = static_cast<long long>(h / group) * kHeadDim;
        long long begin, last;
        detail::visibleKeys(t, batch, seq, causal, cuSeqlens, numCuSeqlens,
                            begin, last);

        float qr[kPerLane];
        detail::loadHeadRow<kHeadDim>(q + t * qStride + h * kHeadDim, lane, qr);
        float max = negativeInfinity(), sum = 0.0f, acc[kPerLane];
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          acc[e] = 0.0f;
        for (long long j = begin + warp; j < last; j += kWarps) {
          float kr[kPerLane], vr[kPerLane];
          detail::loadHeadRow<kHeadDim>(k + j * kvStride + kvOffset, lane, kr);
          detail::loadHeadRow<kHeadDim>(v + j * kvStride + kvOffset, lane, vr);
          float partial = 0.0f;
#pragma unroll
          for (int e = 0; e < kPerLane; ++e)
            partial += qr[e] * kr[e];
          const float score = scale * warpSum(partial);
          if (score > max) {
            const float rescale = expf(max - score);
            sum = sum * rescale + 1.0f;
#pragma unroll
            for (int e = 0; e < kPerLane; ++e)
              acc[e] = acc[e] * rescale + vr[e];
            max = score;
          } else {
            const float p = expf(score - max);
            sum += p;
#pragma unroll
            for (int e = 0; e < kPerLane; ++e)
              acc[e] += p * vr[e];
          }
        }

        if (lane == 0) {
          warpMaxes[warp] = max;
          warpSums[warp] = sum;
        }
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          if (kHeadDim % 32 == 0 || lane + 32 * e < kHeadDim)
            warpAcc[warp][lane + 32 * e] = acc[e];
        __syncthreads();
        float rowMax = negativeInfinity();
#pragma unroll
        for (int w = 0; w < kWarps; ++w)
          rowMax = fmaxf(rowMax, warpMaxes[w]);
        float weights[kWarps], denominator = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
          weights[w] = warpSums[w] > 0.0f ? expf(warpMaxes[w] - rowMax) : 0.0f;
          denominator += warpSums[w] * weights[w];
        }
        T *outRow = out + t * qStride + h * kHeadDim;
        for (int d = threadIdx.x; d < kHeadDim; d += kThreads) {
          float o = 0.0f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w)
            o += warpAcc[w][d] * weights[w];
          outRow[d] = fromFloat<T>(denominator > 0.0f ? o / denominator : 0.0f);
        }
        if (threadIdx.x == 0)
          lse[detail::headRowIndex(t, h, seq, heads)] =
              denominator > 0.0f ? rowMax + logf(denominator)
                                 : negativeInfinity();
        __syncthreads(); // the shared partials are free again
      }
}

/// delta[b, h, i] = sum over d of dout * out: the row term of the softmax
/// gradient. Warp per (token, head) row: the warps of the whole grid, in
/// any shape (1-D, or (seq, heads, batch) with 32 threads: a warp per row),
/// stride over the batch * seq * heads rows in (token, head) order. With
/// dqAccum (the FP32 dq accumulator of flashAttentionBackward, laid out as
/// dout) the same warps zero its rows.
template <typename T, int kThreads>
__device__ __forceinline__ void
attentionBackwardPreprocess(const T *dout, const T *out, float *delta,
                            int batch, int seq, int heads, int headDim,
                            float *dqAccum = nullptr) {
  static_assert(kThreads % 32 == 0 && kThreads >= 32 && kThreads <= 1024,
                "kThreads must be a multiple of 32 in [32, 1024]");
  constexpr int kWarps = kThreads / 32;
  const long long rows = static_cast<long long>(batch) * seq * heads;
  const long long block =
      blockIdx.x +
      static_cast<long long>(gridDim.x) *
          (blockIdx.y + static_cast<long long>(gridDim.y) * blockIdx.z);
  const long long blocks =
      static_cast<long long>(gridDim.x) * gridDim.y * gridDim.z;
  const int lane = threadIdx.x % 32;
  for (long long row = block * kWarps + threadIdx.x / 32; row < rows;
       row += blocks * kWarps) {
    const T *doutRow = dout + row * headDim;
    const T *outRow = out + row * headDim;
    float partial = 0.0f;
    for (int d = lane; d < headDim; d += 32)
      partial += toFloat(doutRow[d]) * toFloat(outRow[d]);
    if (dqAccum)
      for (int d = lane; d < headDim; d += 32)
        dqAccum[row * headDim + d] = 0.0f;
    const float total = warpSum(partial);
    if (lane == 0)
      delta[detail::headRowIndex(row / heads, static_cast<int>(row % heads),
                                 seq, heads)] = total;
  }
}

/// dq of attention: for the visible keys j, with P = exp(scale q.k_j - lse)
/// and dS = P (dout.v_j - delta), dq = scale * sum_j dS k_j. Grid
/// (seq, heads, batch): a block per query row and head, warps taking the
/// keys in turn, combined in warp order. Rows with lse = -inf (no visible
/// key) get dq = 0.
template <typename T, int kHeadDim, int kThreads>
__device__ __forceinline__ void
attentionBackwardQuery(const T *dout, const T *q, const T *k, const T *v,
                       const float *lse, const float *delta, T *dq, int batch,
                       int seq, int heads, int kvHeads, float scale,
                       bool causal, const int *cuSeqlens, int numCuSeqlens) {
  static_assert(detail::AttentionShapeCheck<kHeadDim, kThreads>::ok);
  constexpr int kWarps = kThreads / 32;
  constexpr int kPerLane = (kHeadDim + 31) / 32;
  static_assert(kWarps * kHeadDim * 4 <= 48 * 1024,
                "attentionBackwardQuery: shared memory over 48 KiB");
  __shared__ float warpAcc[kWarps][kHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const long long kvStride = static_cast<long long>(kvHeads) * kHeadDim;

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int h = blockIdx.y; h < heads; h += gridDim.y)
      for (int i = blockIdx.x; i < seq; i += gridDim.x) {
        const long long t = static_cast<long long>(b) * seq + i;
        const long long kvOffset = static_cast<long long>(h / group) * kHeadDim;
        long long begin, last;
        detail::visibleKeys(t, batch, seq, causal, cuSeqlens, numCuSeqlens,
                            begin, last);
        const long long rowIndex = detail::headRowIndex(t, h, seq, heads);
        const float rowLse = lse[rowIndex], rowDelta = delta[rowIndex];
        const long long qOffset = t * qStride + h * kHeadDim;

        float qr[kPerLane], dor[kPerLane], acc[kPerLane];
        detail::loadHeadRow<kHeadDim>(q + qOffset, lane, qr);
        detail::loadHeadRow<kHeadDim>(dout + qOffset, lane, dor);
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          acc[e] = 0.0f;
        if (rowLse > negativeInfinity()) {
          for (long long j = begin + warp; j < last; j += kWarps) {
            float kr[kPerLane], vr[kPerLane];
            detail::loadHeadRow<kHeadDim>(k + j * kvStride + kvOffset, lane,
                                          kr);
            detail::loadHeadRow<kHeadDim>(v + j * kvStride + kvOffset, lane,
                                          vr);
            float qk = 0.0f, dp = 0.0f;
#pragma unroll
            for (int e = 0; e < kPerLane; ++e) {
              qk += qr[e] * kr[e];
              dp += dor[e] * vr[e];
            }
            qk = warpSum(qk);
            dp = warpSum(dp);
            const float p = expf(scale * qk - rowLse);
            const float ds = p * (dp - rowDelta);
#pragma unroll
            for (int e = 0; e < kPerLane; ++e)
              acc[e] += ds * kr[e];
          }
        }
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          if (kHeadDim % 32 == 0 || lane + 32 * e < kHeadDim)
            warpAcc[warp][lane + 32 * e] = acc[e];
        __syncthreads();
        for (int d = threadIdx.x; d < kHeadDim; d += kThreads) {
          float total = 0.0f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w)
            total += warpAcc[w][d];
          dq[qOffset + d] = fromFloat<T>(scale * total);
        }
        __syncthreads();
      }
}

/// dk and dv of attention for one key row j and kv head: over the query
/// heads h of the group and the queries t that see j, with P and dS as in
/// attentionBackwardQuery, dk = scale * sum dS q_t and dv = sum P dout_t.
/// Grid (seq, kvHeads, batch): a block per key row and kv head, so each
/// element of dk and dv has one writer; warps take the (head, query) pairs
/// in turn, combined in warp order.
template <typename T, int kHeadDim, int kThreads>
__device__ __forceinline__ void
attentionBackwardKeyValue(const T *dout, const T *q, const T *k, const T *v,
                          const float *lse, const float *delta, T *dk, T *dv,
                          int batch, int seq, int heads, int kvHeads,
                          float scale, bool causal, const int *cuSeqlens,
                          int numCuSeqlens) {
  static_assert(detail::AttentionShapeCheck<kHeadDim, kThreads>::ok);
  constexpr int kWarps = kThreads / 32;
  constexpr int kPerLane = (kHeadDim + 31) / 32;
  static_assert(2 * kWarps * kHeadDim * 4 <= 48 * 1024,
                "attentionBackwardKeyValue: shared memory over 48 KiB");
  __shared__ float warpDk[kWarps][kHeadDim], warpDv[kWarps][kHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const long long kvStride = static_cast<long long>(kvHeads) * kHeadDim;

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int kvh = blockIdx.y; kvh < kvHeads; kvh += gridDim.y)
      for (int i = blockIdx.x; i < seq; i += gridDim.x) {
        const long long j = static_cast<long long>(b) * seq + i;
        const long long kvIndex =
            j * kvStride + static_cast<long long>(kvh) * kHeadDim;
        long long begin, end;
        detail::documentOf(j, batch, seq, cuSeqlens, numCuSeqlens, begin, end);
        // The queries that see key j: [causal ? j : begin, end), or none
        // when j lies in no document.
        const long long first = causal ? j : begin;
        const long long count = begin <= j && j < end ? end - first : 0;

        float kr[kPerLane], vr[kPerLane], dkAcc[kPerLane], dvAcc[kPerLane];
        detail::loadHeadRow<kHeadDim>(k + kvIndex, lane, kr);
        detail::loadHeadRow<kHeadDim>(v + kvIndex, lane, vr);
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          dkAcc[e] = dvAcc[e] = 0.0f;
        for (long long item = warp; item < group * count; item += kWarps) {
          const int h = kvh * group + static_cast<int>(item / count);
          const long long t = first + item % count;
          const long long rowIndex = detail::headRowIndex(t, h, seq, heads);
          const float rowLse = lse[rowIndex];
          if (!(rowLse > negativeInfinity()))
            continue;
          const float rowDelta = delta[rowIndex];
          const long long qOffset =
              t * qStride + static_cast<long long>(h) * kHeadDim;
          float qr[kPerLane], dor[kPerLane];
          detail::loadHeadRow<kHeadDim>(q + qOffset, lane, qr);
          detail::loadHeadRow<kHeadDim>(dout + qOffset, lane, dor);
          float qk = 0.0f, dp = 0.0f;
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) {
            qk += qr[e] * kr[e];
            dp += dor[e] * vr[e];
          }
          qk = warpSum(qk);
          dp = warpSum(dp);
          const float p = expf(scale * qk - rowLse);
          const float ds = p * (dp - rowDelta);
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) {
            dkAcc[e] += ds * qr[e];
            dvAcc[e] += p * dor[e];
          }
        }
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          if (kHeadDim % 32 == 0 || lane + 32 * e < kHeadDim) {
            warpDk[warp][lane + 32 * e] = dkAcc[e];
            warpDv[warp][lane + 32 * e] = dvAcc[e];
          }
        __syncthreads();
        for (int d = threadIdx.x; d < kHeadDim; d += kThreads) {
          float dkTotal = 0.0f, dvTotal = 0.0f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w) {
            dkTotal += warpDk[w][d];
            dvTotal += warpDv[w][d];
          }
          dk[kvIndex + d] = fromFloat<T>(scale * dkTotal);
          dv[kvIndex + d] = fromFloat<T>(dvTotal);
        }
        __syncthreads();
      }
}

//===----------------------------------------------------------------------===//
// FlashAttention on tensor cores (bf16 storage, sm_80 and later)
//===----------------------------------------------------------------------===//
//
// FlashAttention-2 (Dao 2023) on mma.sync.m16n8k16 (BF16 operands, FP32
// accumulators), the kernels tile.flash_attention_fwd/bwd lower to when
// storage is bf16. Same layouts, masking and results as the exact kernels
// above (q, out [batch, seq, heads * headDim]; k, v [batch, seq, kvHeads *
// headDim]; lse, delta [batch, heads, seq]; documents from cuSeqlens), to
// BF16 rounding of the probabilities and dS fed to the tensor cores.
//
//   - Forward: a block owns kBlockQ query rows of one head, a warp 16 of
//     them. Q sits in registers as MMA fragments; K and V tiles of kBlockK
//     keys stream through shared memory with cp.async, kStages deep; each
//     tile is S = Q K^T on the tensor cores, an online softmax in the
//     exponent base 2 (scale * log2 e folded in), then O += P V with P
//     taken straight from the S accumulators. Only the keys some row of the
//     block sees are visited (causal and document tiles are skipped), and
//     a tile every row fully sees skips the masking arithmetic. Causal
//     blocks start with the longest rows.
//   - Backward: a block owns kBlockK keys of one kv head, a warp 16 of
//     them, and loops over the query heads of its GQA group and the query
//     tiles that can see its keys: S^T = K Q^T and dP^T = V dO^T, P^T from
//     the forward's lse, dS^T = P^T (dP^T - delta), then dV += P^T dO and
//     dK += dS^T Q in registers; dS goes through shared memory for
//     dQ += dS K, added with FP32 atomics to a zeroed accumulator
//     (attentionBackwardPreprocess zeroes it, flashAttentionFinishDq scales
//     and rounds it). dq's FP32 sums therefore depend on the order blocks
//     finish: the one result of the device library that is not bit-for-bit
//     reproducible run to run (as in FlashAttention-2).
//
// Shared tiles are rows of kWidth bf16 in 16-byte chunks, chunk c of row r
// stored at c ^ f(r) (swizzle below), so the eight row addresses of an
// ldmatrix fall in eight different bank groups. Head dims and block sizes:
// 16, 32, 64 or 128 (multiples of the 16x16 MMA tile the swizzle can
// permute); more would not fit a thread's registers. Dynamic shared memory
// of flashForwardSharedBytes / flashBackwardSharedBytes bytes.

namespace detail {

#ifndef KILN_DEVICE_EMULATION
// The warp-level instructions. Under the CPU emulation
// (test/Runtime/cuda/device/DeviceEmulation.h) the emulator defines
// functions of the same names and semantics instead.

__device__ __forceinline__ unsigned sharedAddress(const void *p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// d += a * b for one m16n8k16 tile: a 16x16 (row-major fragments), b 16x8
/// (column-major), d 16x8 FP32, in the PTX ISA's fragment layouts.
__device__ __forceinline__ void mmaBf16(float (&d)[4], const unsigned (&a)[4],
                                        unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i;
/// r[i] receives row lane / 4, columns 2 (lane % 4) and 2 (lane % 4) + 1.
__device__ __forceinline__ void loadMatrixX4(unsigned (&r)[4],
                                             const void *row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 "
               "{%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(row)));
}

/// ldmatrix .x4 .trans: as loadMatrixX4 of the transposed matrices.
__device__ __forceinline__ void loadMatrixX4Trans(unsigned (&r)[4],
                                                  const void *row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 "
               "{%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(row)));
}

/// Starts copying 16 bytes from global `src` to shared `dst`, or zeroes
/// `dst` when !valid (src is then not read).
__device__ __forceinline__ void copyAsync16(void *dst, const void *src,
                                            bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :
               : "r"(sharedAddress(dst)), "l"(src), "r"(valid ? 16 : 0));
}

/// Closes the group of copies started since the last commit.
__device__ __forceinline__ void copyAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::);
}

/// Waits until at most kPending committed groups are still in flight.
template <int kPending> __device__ __forceinline__ void copyAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

/// The block's dynamic shared memory, and its size.
__device__ __forceinline__ unsigned char *dynamicSharedMemory() {
  extern __shared__ __align__(128) unsigned char kilnDynamicShared[];
  return kilnDynamicShared;
}
__device__ __forceinline__ unsigned dynamicSharedBytes() {
  unsigned bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(bytes));
  return bytes;
}

/// Stops the kernel with an error (cudaErrorIllegalInstruction).
__device__ __forceinline__ void trap() { __trap(); }
#endif // KILN_DEVICE_EMULATION

/// Whether kWidth bf16 make rows the swizzle can permute.
template <int kWidth>
constexpr bool isFlashWidth =
    kWidth == 16 || kWidth == 32 || kWidth == 64 || kWidth == 128;

/// Element offset of (row, col) in a swizzled shared tile of rows of kWidth
/// bf16: 16-byte chunk c of row r is stored at chunk c ^ ((r / k) % n), with
/// k rows sharing one 128-byte line and n = min(8, chunks per row), so that
/// 8 consecutive rows at one chunk use 8 distinct bank groups.
template <int kWidth> __device__ __forceinline__ int swizzle(int row, int col) {
  static_assert(isFlashWidth<kWidth>, "unsupported tile width");
  constexpr int kChunks = kWidth / 8;
  constexpr int kRowsPerLine = kChunks >= 8 ? 1 : 8 / kChunks;
  constexpr int kPattern = kChunks >= 8 ? 8 : kChunks;
  const int chunk = (col / 8) ^ ((row / kRowsPerLine) % kPattern);
  return row * kWidth + chunk * 8 + col % 8;
}

/// Starts copying rows [first, first + kRows) of a row-major bf16 matrix
/// (row stride `stride` elements) into a swizzled tile; rows outside
/// [lo, hi) become zeros. The block's kThreads threads share the chunks.
template <int kRows, int kWidth, int kThreads>
__device__ __forceinline__ void
loadTileAsync(__nv_bfloat16 *tile, const __nv_bfloat16 *src, long long stride,
              long long first, long long lo, long long hi) {
  constexpr int kChunks = kWidth / 8;
  for (int i = threadIdx.x; i < kRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const long long row = first + r;
    const bool valid = row >= lo && row < hi;
    copyAsync16(tile + swizzle<kWidth>(r, c * 8),
                valid ? src + row * stride + c * 8 : src, valid);
  }
}

/// Starts loading the K and V tiles of keys [first, first + kBlockK);
/// keys outside [lo, hi) become zeros.
template <int kBlockK, int kHeadDim, int kThreads>
__device__ __forceinline__ void
loadKeyValueTiles(__nv_bfloat16 *kTile, __nv_bfloat16 *vTile,
                  const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                  long long stride, long long first, long long lo,
                  long long hi) {
  loadTileAsync<kBlockK, kHeadDim, kThreads>(kTile, k, stride, first, lo, hi);
  loadTileAsync<kBlockK, kHeadDim, kThreads>(vTile, v, stride, first, lo, hi);
}

/// MMA fragments from swizzled tiles of rows of kWidth bf16. Each lane's
/// ldmatrix row address is its offset for the tile's first 16x16 block,
/// computed once: for a block at (row0, col0), multiples of 16, the swizzle
/// pattern is the same and the column moves by XOR, so the offset is
/// row0 * kWidth + (laneOffset ^ col0).
template <int kWidth> struct Fragments {
  int aOffset, bOffset, bTransOffset;

  __device__ __forceinline__ Fragments() {
    const int lane = threadIdx.x % 32;
    aOffset = swizzle<kWidth>(lane % 16, 8 * (lane / 16));
    bOffset = swizzle<kWidth>(lane % 8 + 8 * (lane / 16), 8 * ((lane / 8) % 2));
    bTransOffset =
        swizzle<kWidth>(lane % 8 + 8 * ((lane / 8) % 2), 8 * (lane / 16));
  }

  /// The A fragment of rows [row0, row0 + 16) x columns [col0, col0 + 16).
  __device__ __forceinline__ void
  loadA(unsigned (&a)[4], const __nv_bfloat16 *tile, int row0, int col0) const {
    loadMatrixX4(a, tile + row0 * kWidth + (aOffset ^ col0));
  }

  /// The B fragments (k [k0, k0 + 16)) of the n-tiles n0 (b[0], b[1]) and
  /// n0 + 8 (b[2], b[3]) of a tile that stores B transposed: row n, column
  /// k.
  __device__ __forceinline__ void
  loadBPair(unsigned (&b)[4], const __nv_bfloat16 *tile, int n0, int k0) const {
    loadMatrixX4(b, tile + n0 * kWidth + (bOffset ^ k0));
  }

  /// As loadBPair for a tile that stores B itself: row k, column n.
  __device__ __forceinline__ void loadBPairTrans(unsigned (&b)[4],
                                                 const __nv_bfloat16 *tile,
                                                 int k0, int n0) const {
    loadMatrixX4Trans(b, tile + k0 * kWidth + (bTransOffset ^ n0));
  }
};

/// Two floats rounded to bf16 (nearest-even) in one register, lo first.
__device__ __forceinline__ unsigned packBf16(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return static_cast<unsigned>(__bfloat16_as_ushort(pair.x)) |
         static_cast<unsigned>(__bfloat16_as_ushort(pair.y)) << 16;
}

/// The A fragment of k columns [16 kk, 16 kk + 16) from the accumulators of
/// n-tiles 2 kk (c0) and 2 kk + 1 (c1): a product feeds the next MMA
/// without leaving registers.
__device__ __forceinline__ void
accumulatorsAsA(unsigned (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = packBf16(c0[0], c0[1]);
  a[1] = packBf16(c0[2], c0[3]);
  a[2] = packBf16(c1[0], c1[1]);
  a[3] = packBf16(c1[2], c1[3]);
}

/// x clamped to [0, size]: a key offset from a tile's first key.
__device__ __forceinline__ int clampToTile(long long x, int size) {
  return x < 0 ? 0 : x > size ? size : static_cast<int>(x);
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

} // namespace detail

/// Dynamic shared memory of flashAttentionForward: the Q tile and kStages
/// K and V tiles.
__host__ __device__ constexpr int
flashForwardSharedBytes(int headDim, int blockQ, int blockK, int stages) {
  return (blockQ + 2 * stages * blockK) * headDim * 2;
}

/// Dynamic shared memory of flashAttentionBackward: K, V, Q, dO and dS
/// tiles, then per query row lse, delta (FP32) and the block's keys it sees.
__host__ __device__ constexpr int
flashBackwardSharedBytes(int headDim, int blockQ, int blockK) {
  return (2 * blockK * headDim + 2 * blockQ * headDim + blockQ * blockK) * 2 +
         blockQ * (4 + 4 + 4 + 4);
}

/// Attention forward on tensor cores: out and lse as attentionForward.
/// Launch (ceil(seq / kBlockQ), heads, batch) blocks (any smaller grid is
/// also correct) of kBlockQ / 16 warps with flashForwardSharedBytes bytes of
/// dynamic shared memory. Pointers 16-byte aligned.
template <int kHeadDim, int kBlockQ, int kBlockK, int kStages>
__device__ __forceinline__ void
flashAttentionForward(const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                      const __nv_bfloat16 *v, __nv_bfloat16 *out, float *lse,
                      int batch, int seq, int heads, int kvHeads, float scale,
                      bool causal, const int *cuSeqlens, int numCuSeqlens) {
  using bf16 = __nv_bfloat16;
  static_assert(detail::isFlashWidth<kHeadDim>, "head dim: 16/32/64/128");
  static_assert(kBlockQ % 16 == 0 && kBlockQ >= 16 && kBlockQ <= 128,
                "kBlockQ: a multiple of 16 up to 128 (16 rows per warp)");
  static_assert(kBlockK % 16 == 0 && kBlockK >= 16 && kBlockK <= 128,
                "kBlockK: a multiple of 16 up to 128");
  static_assert(kStages == 1 || kStages == 2, "kStages: 1 or 2");
  constexpr int kThreads = kBlockQ / 16 * 32;
  constexpr int kTileK = kBlockK * kHeadDim;

  // A launch with less shared memory would corrupt memory: stop instead.
  if (detail::dynamicSharedBytes() <
      static_cast<unsigned>(
          flashForwardSharedBytes(kHeadDim, kBlockQ, kBlockK, kStages)))
    detail::trap();
  bf16 *qTile = reinterpret_cast<bf16 *>(detail::dynamicSharedMemory());
  bf16 *kTiles = qTile + kBlockQ * kHeadDim;
  bf16 *vTiles = kTiles + kStages * kTileK;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int quadRow = lane / 4, quadCol = lane % 4;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const long long kvStride = static_cast<long long>(kvHeads) * kHeadDim;
  const float scaleLog2 = scale * detail::kLog2e;
  const int qTiles = (seq + kBlockQ - 1) / kBlockQ;
  const detail::Fragments<kHeadDim> headTiles;

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int h = blockIdx.y; h < heads; h += gridDim.y)
      for (int x = blockIdx.x; x < qTiles; x += gridDim.x) {
        const int tile = causal ? qTiles - 1 - x : x;
        const long long rowBase = static_cast<long long>(b) * seq;
        const long long t0 = rowBase + static_cast<long long>(tile) * kBlockQ;
        const long long tEnd =
            t0 + kBlockQ < rowBase + seq ? t0 + kBlockQ : rowBase + seq;
        const bf16 *qHead = q + static_cast<long long>(h) * kHeadDim;
        const long long kvOffset = static_cast<long long>(h / group) * kHeadDim;

        // This lane's rows (quadRow and quadRow + 8 of its warp's 16) and
        // the keys any row of the block sees: the documents' begins and
        // ends grow with the token, so the first and last rows bound them.
        // Rows past the sequence see no key.
        long long row[2], begin[2] = {0, 0}, last[2] = {0, 0};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          row[r] = t0 + warp * 16 + quadRow + 8 * r;
          if (row[r] < tEnd)
            detail::visibleKeys(row[r], batch, seq, causal, cuSeqlens,
                                numCuSeqlens, begin[r], last[r]);
        }
        long long kLo, unused, kHi, lastBegin;
        detail::visibleKeys(t0, batch, seq, causal, cuSeqlens, numCuSeqlens,
                            kLo, unused);
        detail::visibleKeys(tEnd - 1, batch, seq, causal, cuSeqlens,
                            numCuSeqlens, lastBegin, kHi);
        if (kHi < kLo)
          kHi = kLo;
        const int keyTiles =
            static_cast<int>((kHi - kLo + kBlockK - 1) / kBlockK);

        detail::loadTileAsync<kBlockQ, kHeadDim, kThreads>(
            qTile, qHead, qStride, t0, t0, tEnd);
        if (keyTiles > 0)
          detail::loadKeyValueTiles<kBlockK, kHeadDim, kThreads>(
              kTiles, vTiles, k + kvOffset, v + kvOffset, kvStride, kLo, kLo,
              kHi);
        detail::copyAsyncCommit();
        detail::copyAsyncWait<0>();
        __syncthreads();

        unsigned qFrag[kHeadDim / 16][4];
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk)
          headTiles.loadA(qFrag[kk], qTile, warp * 16, kk * 16);
        float o[kHeadDim / 8][4] = {};
        float rowMax[2] = {negativeInfinity(), negativeInfinity()};
        float rowSum[2] = {0.0f, 0.0f};

        for (int it = 0; it < keyTiles; ++it) {
          const long long j0 = kLo + static_cast<long long>(it) * kBlockK;
          if constexpr (kStages > 1) {
            if (it + 1 < keyTiles)
              detail::loadKeyValueTiles<kBlockK, kHeadDim, kThreads>(
                  kTiles + (it + 1) % kStages * kTileK,
                  vTiles + (it + 1) % kStages * kTileK, k + kvOffset,
                  v + kvOffset, kvStride, j0 + kBlockK, kLo, kHi);
            detail::copyAsyncCommit();
            detail::copyAsyncWait<1>();
          } else if (it > 0) {
            detail::loadKeyValueTiles<kBlockK, kHeadDim, kThreads>(
                kTiles, vTiles, k + kvOffset, v + kvOffset, kvStride, j0, kLo,
                kHi);
            detail::copyAsyncCommit();
            detail::copyAsyncWait<0>();
          }
          __syncthreads();
          const bf16 *kTile = kTiles + (it % kStages) * kTileK;
          const bf16 *vTile = vTiles + (it % kStages) * kTileK;

          // S = Q K^T for this warp's 16 rows and the tile's keys.
          float s[kBlockK / 8][4] = {};
#pragma unroll
          for (int kk = 0; kk < kHeadDim / 16; ++kk)
#pragma unroll
            for (int np = 0; np < kBlockK / 16; ++np) {
              unsigned bFrag[4];
              headTiles.loadBPair(bFrag, kTile, np * 16, kk * 16);
              detail::mmaBf16(s[2 * np], qFrag[kk], bFrag[0], bFrag[1]);
              detail::mmaBf16(s[2 * np + 1], qFrag[kk], bFrag[2], bFrag[3]);
            }

          // Online softmax in base 2; masked scores are -inf. A row that
          // has seen no key keeps max -inf and exponentiates against 0.
          int lo[2], hi[2]; // this tile's visible columns of each row
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            lo[r] = detail::clampToTile(begin[r] - j0, kBlockK);
            hi[r] = detail::clampToTile(last[r] - j0, kBlockK);
          }
          const bool seesAll =
              (lo[0] | lo[1]) == 0 && (hi[0] & hi[1]) == kBlockK;
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            float tileMax = negativeInfinity();
#pragma unroll
            for (int n = 0; n < kBlockK / 8; ++n)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int j = n * 8 + 2 * quadCol + e;
                float &x = s[n][2 * r + e];
                x = seesAll || (j >= lo[r] && j < hi[r]) ? x * scaleLog2
                                                         : negativeInfinity();
                tileMax = fmaxf(tileMax, x);
              }
            // The 4 lanes (lane % 4) holding a row share its maximum.
            const float newMax =
                fmaxf(rowMax[r], laneReduce<4>(tileMax, Max{}));
            const float base = newMax == negativeInfinity() ? 0.0f : newMax;
            const float rescale = exp2f(rowMax[r] - base);
            rowMax[r] = newMax;
            float sum = 0.0f;
#pragma unroll
            for (int n = 0; n < kBlockK / 8; ++n)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                float &x = s[n][2 * r + e];
                x = exp2f(x - base);
                sum += x;
              }
            rowSum[r] = rowSum[r] * rescale + sum;
#pragma unroll
            for (int n = 0; n < kHeadDim / 8; ++n) {
              o[n][2 * r] *= rescale;
              o[n][2 * r + 1] *= rescale;
            }
          }

          // O += P V, P from the S accumulators.
#pragma unroll
          for (int kk = 0; kk < kBlockK / 16; ++kk) {
            unsigned pFrag[4];
            detail::accumulatorsAsA(pFrag, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
            for (int np = 0; np < kHeadDim / 16; ++np) {
              unsigned bFrag[4];
              headTiles.loadBPairTrans(bFrag, vTile, kk * 16, np * 16);
              detail::mmaBf16(o[2 * np], pFrag, bFrag[0], bFrag[1]);
              detail::mmaBf16(o[2 * np + 1], pFrag, bFrag[2], bFrag[3]);
            }
          }
          __syncthreads(); // the stage is free for the next load
        }

#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float sum = laneReduce<4>(rowSum[r], Sum{});
          if (row[r] >= tEnd)
            continue;
          const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
          bf16 *outRow = out + row[r] * qStride + h * kHeadDim;
#pragma unroll
          for (int n = 0; n < kHeadDim / 8; ++n)
            *reinterpret_cast<__nv_bfloat162 *>(outRow + n * 8 + 2 * quadCol) =
                __floats2bfloat162_rn(o[n][2 * r] * inverse,
                                      o[n][2 * r + 1] * inverse);
          if (quadCol == 0)
            lse[detail::headRowIndex(row[r], h, seq, heads)] =
                sum > 0.0f ? rowMax[r] * detail::kLn2 + logf(sum)
                           : negativeInfinity();
        }
        __syncthreads(); // the Q tile is free for the next block's rows
      }
}

/// Attention backward on tensor cores: dk and dv as
/// attentionBackwardKeyValue, and dq (unscaled) added to dqAccum, which
/// attentionBackwardPreprocess zeroed and flashAttentionFinishDq turns into
/// dq. Launch (ceil(seq / kBlockK), kvHeads, batch) blocks (any smaller grid
/// is also correct) of kBlockK / 16 warps with flashBackwardSharedBytes
/// bytes of dynamic shared memory. Pointers 16-byte aligned.
template <int kHeadDim, int kBlockQ, int kBlockK>
__device__ __forceinline__ void
flashAttentionBackward(const __nv_bfloat16 *dout, const __nv_bfloat16 *q,
                       const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                       const float *lse, const float *delta, float *dqAccum,
                       __nv_bfloat16 *dk, __nv_bfloat16 *dv, int batch, int seq,
                       int heads, int kvHeads, float scale, bool causal,
                       const int *cuSeqlens, int numCuSeqlens) {
  using bf16 = __nv_bfloat16;
  static_assert(detail::isFlashWidth<kHeadDim>, "head dim: 16/32/64/128");
  static_assert(detail::isFlashWidth<kBlockK>,
                "kBlockK: 16, 32, 64 or 128 (16 keys per warp)");
  static_assert(kBlockQ % 16 == 0 && kBlockQ >= 16 && kBlockQ <= 128,
                "kBlockQ: a multiple of 16 up to 128");
  constexpr int kWarps = kBlockK / 16, kThreads = kWarps * 32;

  if (detail::dynamicSharedBytes() <
      static_cast<unsigned>(
          flashBackwardSharedBytes(kHeadDim, kBlockQ, kBlockK)))
    detail::trap();
  bf16 *kTile = reinterpret_cast<bf16 *>(detail::dynamicSharedMemory());
  bf16 *vTile = kTile + kBlockK * kHeadDim;
  bf16 *qTile = vTile + kBlockK * kHeadDim;
  bf16 *doTile = qTile + kBlockQ * kHeadDim;
  bf16 *dsTile = doTile + kBlockQ * kHeadDim;
  float *lseTile = reinterpret_cast<float *>(dsTile + kBlockQ * kBlockK);
  float *deltaTile = lseTile + kBlockQ;
  int *loTile = reinterpret_cast<int *>(deltaTile + kBlockQ);
  int *hiTile = loTile + kBlockQ;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int quadRow = lane / 4, quadCol = lane % 4;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const long long kvStride = static_cast<long long>(kvHeads) * kHeadDim;
  const float scaleLog2 = scale * detail::kLog2e;
  const int keyTiles = (seq + kBlockK - 1) / kBlockK;
  const detail::Fragments<kHeadDim> headTiles;
  const detail::Fragments<kBlockK> dsTiles;

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int kvh = blockIdx.y; kvh < kvHeads; kvh += gridDim.y)
      for (int x = blockIdx.x; x < keyTiles; x += gridDim.x) {
        const long long rowBase = static_cast<long long>(b) * seq;
        const long long j0 = rowBase + static_cast<long long>(x) * kBlockK;
        const long long jEnd =
            j0 + kBlockK < rowBase + seq ? j0 + kBlockK : rowBase + seq;
        const long long kvOffset = static_cast<long long>(kvh) * kHeadDim;
        // The queries that see some key of the block: from the first key
        // (causal) or its document's start, to the last key's document end.
        long long firstBegin, firstEnd, lastBegin, lastEnd;
        detail::documentOf(j0, batch, seq, cuSeqlens, numCuSeqlens, firstBegin,
                           firstEnd);
        detail::documentOf(jEnd - 1, batch, seq, cuSeqlens, numCuSeqlens,
                           lastBegin, lastEnd);
        const long long qLo = causal ? j0 : firstBegin;
        const long long qHi = lastEnd > qLo ? lastEnd : qLo;
        // This lane's keys: rows quadRow and quadRow + 8 of its warp's 16.
        const int keyCol[2] = {warp * 16 + quadRow, warp * 16 + quadRow + 8};

        detail::loadKeyValueTiles<kBlockK, kHeadDim, kThreads>(
            kTile, vTile, k + kvOffset, v + kvOffset, kvStride, j0, j0, jEnd);
        detail::copyAsyncCommit();

        float dkAcc[kHeadDim / 8][4] = {}, dvAcc[kHeadDim / 8][4] = {};

        for (int hh = 0; hh < group; ++hh) {
          const int h = kvh * group + hh;
          const long long qOffset = static_cast<long long>(h) * kHeadDim;
          for (long long qt = qLo; qt < qHi; qt += kBlockQ) {
            detail::loadTileAsync<kBlockQ, kHeadDim, kThreads>(
                qTile, q + qOffset, qStride, qt, qt, qHi);
            detail::loadTileAsync<kBlockQ, kHeadDim, kThreads>(
                doTile, dout + qOffset, qStride, qt, qt, qHi);
            detail::copyAsyncCommit();
            for (int i = threadIdx.x; i < kBlockQ; i += kThreads) {
              const long long t = qt + i;
              long long visibleBegin = 0, visibleLast = 0;
              float rowLse = 0.0f, rowDelta = 0.0f;
              if (t < qHi) {
                detail::visibleKeys(t, batch, seq, causal, cuSeqlens,
                                    numCuSeqlens, visibleBegin, visibleLast);
                const long long index = detail::headRowIndex(t, h, seq, heads);
                rowLse = lse[index] * detail::kLog2e;
                rowDelta = delta[index];
              }
              // The block's keys row t sees: [lo, hi) from j0.
              loTile[i] = detail::clampToTile(visibleBegin - j0, kBlockK);
              hiTile[i] = detail::clampToTile(
                  (visibleLast < jEnd ? visibleLast : jEnd) - j0, kBlockK);
              lseTile[i] = rowLse;
              deltaTile[i] = rowDelta;
            }
            detail::copyAsyncWait<0>();
            __syncthreads();

            // 16 queries at a time (so that S and dP take 16 registers per
            // thread whatever the query block): S^T = K Q^T and dP^T =
            // V dO^T for this warp's 16 keys, P^T (0 where masked) and dS^T
            // = P^T (dP^T - delta), then dV += P^T dO and dK += dS^T Q
            // (scaled at the end), and dS (queries x keys) to shared memory
            // for dQ, rounded as dK used it.
#pragma unroll 1
            for (int q0 = 0; q0 < kBlockQ; q0 += 16) {
              float s[2][4] = {}, dp[2][4] = {};
#pragma unroll 2
              for (int kk = 0; kk < kHeadDim / 16; ++kk) {
                unsigned kFrag[4], vFrag[4], bFrag[4];
                headTiles.loadA(kFrag, kTile, warp * 16, kk * 16);
                headTiles.loadBPair(bFrag, qTile, q0, kk * 16);
                detail::mmaBf16(s[0], kFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(s[1], kFrag, bFrag[2], bFrag[3]);
                headTiles.loadA(vFrag, vTile, warp * 16, kk * 16);
                headTiles.loadBPair(bFrag, doTile, q0, kk * 16);
                detail::mmaBf16(dp[0], vFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(dp[1], vFrag, bFrag[2], bFrag[3]);
              }
#pragma unroll
              for (int n = 0; n < 2; ++n)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                  const int c = q0 + n * 8 + 2 * quadCol + e;
#pragma unroll
                  for (int r = 0; r < 2; ++r) {
                    const bool visible =
                        keyCol[r] >= loTile[c] && keyCol[r] < hiTile[c];
                    const float p =
                        visible
                            ? exp2f(s[n][2 * r + e] * scaleLog2 - lseTile[c])
                            : 0.0f;
                    s[n][2 * r + e] = p;
                    dp[n][2 * r + e] = p * (dp[n][2 * r + e] - deltaTile[c]);
                    dsTile[detail::swizzle<kBlockK>(c, keyCol[r])] =
                        __float2bfloat16_rn(dp[n][2 * r + e]);
                  }
                }
              unsigned pFrag[4], dsFrag[4];
              detail::accumulatorsAsA(pFrag, s[0], s[1]);
              detail::accumulatorsAsA(dsFrag, dp[0], dp[1]);
#pragma unroll
              for (int np = 0; np < kHeadDim / 16; ++np) {
                unsigned bFrag[4];
                headTiles.loadBPairTrans(bFrag, doTile, q0, np * 16);
                detail::mmaBf16(dvAcc[2 * np], pFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(dvAcc[2 * np + 1], pFrag, bFrag[2], bFrag[3]);
                headTiles.loadBPairTrans(bFrag, qTile, q0, np * 16);
                detail::mmaBf16(dkAcc[2 * np], dsFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(dkAcc[2 * np + 1], dsFrag, bFrag[2], bFrag[3]);
              }
            }
            __syncthreads();

            // dQ += dS K, 16 queries x 16 dims per warp and step.
            for (int unit = warp; unit < kBlockQ / 16 * (kHeadDim / 16);
                 unit += kWarps) {
              const int rows = unit / (kHeadDim / 16) * 16;
              const int cols = unit % (kHeadDim / 16) * 16;
              float acc[2][4] = {};
#pragma unroll
              for (int kk = 0; kk < kBlockK / 16; ++kk) {
                unsigned aFrag[4], bFrag[4];
                dsTiles.loadA(aFrag, dsTile, rows, kk * 16);
                headTiles.loadBPairTrans(bFrag, kTile, kk * 16, cols);
                detail::mmaBf16(acc[0], aFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(acc[1], aFrag, bFrag[2], bFrag[3]);
              }
#pragma unroll
              for (int r = 0; r < 2; ++r) {
                const long long t = qt + rows + quadRow + 8 * r;
                if (t >= qHi)
                  continue;
                float *dqRow = dqAccum + t * qStride + qOffset + cols;
#pragma unroll
                for (int n = 0; n < 2; ++n)
#pragma unroll
                  for (int e = 0; e < 2; ++e)
                    atomicAdd(dqRow + n * 8 + 2 * quadCol + e,
                              acc[n][2 * r + e]);
              }
            }
            __syncthreads(); // the Q, dO and dS tiles are free again
          }
        }

#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const long long key = j0 + keyCol[r];
          if (key >= jEnd)
            continue;
          bf16 *dkRow = dk + key * kvStride + kvOffset;
          bf16 *dvRow = dv + key * kvStride + kvOffset;
#pragma unroll
          for (int n = 0; n < kHeadDim / 8; ++n) {
            const int col = n * 8 + 2 * quadCol;
            *reinterpret_cast<__nv_bfloat162 *>(dkRow + col) =
                __floats2bfloat162_rn(scale * dkAcc[n][2 * r],
                                      scale * dkAcc[n][2 * r + 1]);
            *reinterpret_cast<__nv_bfloat162 *>(dvRow + col) =
                __floats2bfloat162_rn(dvAcc[n][2 * r], dvAcc[n][2 * r + 1]);
          }
        }
        detail::copyAsyncWait<0>(); // (no query tile: K and V still landing)
        __syncthreads();            // the K and V tiles are free again
      }
}

/// dq = scale * dqAccum, rounded to T: the last step of
/// flashAttentionBackward. Grid-stride over the n elements.
template <typename T>
__device__ __forceinline__ void
flashAttentionFinishDq(const float *dqAccum, T *dq, long long n, float scale) {
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i =
           static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += stride)
    dq[i] = fromFloat<T>(scale * dqAccum[i]);
}

//===----------------------------------------------------------------------===//
// Optimizer (runtime/host/Optimizer.cpp)
//===----------------------------------------------------------------------===//

/// partials[blockIdx.x] = this block's sum of x^2 over its grid-stride
/// share of the n elements: gridDim.x partials, in an order fixed by the
/// launch configuration. Launch once per gradient into disjoint slices of
/// one partials buffer, then finishNorm over all of them.
template <typename T, int kThreads>
__device__ __forceinline__ void squaredNormPartial(const T *x, long long n,
                                                   float *partials) {
  __shared__ float scratch[kThreads / 32];
  constexpr int W = Vec<T>::kWidth;
  const long long thread =
      static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  const long long stride = static_cast<long long>(gridDim.x) * kThreads;
  float sum = 0.0f;
  // The vector part when x is aligned, then the scalar tail.
  const long long vecCount = isAligned16(x) ? n / W : 0;
  for (long long c = thread; c < vecCount; c += stride) {
    float xs[W];
    loadFloats<W>(x + c * W, xs);
#pragma unroll
    for (int i = 0; i < W; ++i)
      sum += xs[i] * xs[i];
  }
  for (long long i = vecCount * W + thread; i < n; i += stride) {
    const float xi = toFloat(x[i]);
    sum += xi * xi;
  }
  const float total = blockSum<kThreads>(sum, scratch);
  if (threadIdx.x == 0)
    partials[blockIdx.x] = total;
}

/// *out = sqrt(sum of partials[0 .. count)): the global gradient norm.
/// Single block, deterministic.
template <int kThreads>
__device__ __forceinline__ void finishNorm(const float *partials, int count,
                                           float *out) {
  __shared__ float scratch[kThreads / 32];
  if (blockIdx.x != 0)
    return;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < count; i += kThreads)
    sum += partials[i];
  const float total = blockSum<kThreads>(sum, scratch);
  if (threadIdx.x == 0)
    *out = sqrtf(total);
}

/// What torch.nn.utils.clip_grad_norm_ adds to the norm before dividing.
constexpr double kClipNormEpsilon = 1e-6;

/// One AdamW step over n FP32 elements in torch's order (see host::adamw):
/// gradients scaled by min(1, maxGradNorm / (*gradNorm + 1e-6)) when
/// maxGradNorm > 0, then
///   param *= 1 - lr * weightDecay
///   expAvg += (1 - beta1) * (g - expAvg)
///   expAvgSq = beta2 * expAvgSq + (1 - beta2) * g^2
///   param -= lr / (1 - beta1^step) * expAvg
///            / (sqrt(expAvgSq) / sqrt(1 - beta2^step) + eps).
/// lr, step (counting from 1) and the gradient norm are read from device
/// memory; the hyperparameters are doubles, as the host's, because the
/// scalars are formed in double and rounded to FP32 once (1 - beta2 from an
/// FP32 beta2 = 0.999 would be off by 1e-5 relative). Grid-stride.
__device__ __forceinline__ void adamw(float *param, const float *grad,
                                      float *expAvg, float *expAvgSq,
                                      long long n, const float *lr,
                                      const float *step, const float *gradNorm,
                                      double beta1, double beta2, double eps,
                                      double weightDecay, double maxGradNorm) {
  const double lrD = *lr, stepD = *step;
  double clip = 1.0;
  if (maxGradNorm > 0) {
    // fmin would drop a NaN norm; torch's min propagates it.
    const double c =
        maxGradNorm / (static_cast<double>(*gradNorm) + kClipNormEpsilon);
    clip = c < 1.0 || c != c ? c : 1.0;
  }
  const float gradScale = static_cast<float>(clip);
  const float decay = static_cast<float>(1.0 - lrD * weightDecay);
  const float avgWeight = static_cast<float>(1.0 - beta1);
  const float sqBeta = static_cast<float>(beta2);
  const float sqWeight = static_cast<float>(1.0 - beta2);
  const float stepSize = static_cast<float>(lrD / (1.0 - pow(beta1, stepD)));
  const float correction2Sqrt =
      static_cast<float>(sqrt(1.0 - pow(beta2, stepD)));
  const float epsF = static_cast<float>(eps);

  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i =
           static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += stride) {
    const float g = grad[i] * gradScale;
    float p = param[i] * decay;
    float m = expAvg[i];
    m += avgWeight * (g - m);
    const float s = expAvgSq[i] * sqBeta + sqWeight * (g * g);
    const float denom = sqrtf(s) / correction2Sqrt + epsF;
    p -= stepSize * (m / denom);
    param[i] = p;
    expAvg[i] = m;
    expAvgSq[i] = s;
  }
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_KILN_DEVICE_CUH
