//===- Optimizer.cuh - Gradient norm and AdamW -----------------*- CUDA -*-===//
//
// The optimizer step (runtime/host/Optimizer.cpp): the global gradient
// norm in two stages (per-gradient block partials, then one block that adds
// them in order), so that clipping is deterministic, and AdamW in torch's
// order with its hyperparameters in double, rounded to FP32 once.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_OPTIMIZER_CUH
#define KILN_RUNTIME_CUDA_DEVICE_OPTIMIZER_CUH

#include "Common.cuh"
#include "Reductions.cuh"

namespace kiln::dev {

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
/// Single block, deterministic. Without kSqrt, *out = the sum: ZeRO-1's
/// rank-local sum of squares, which the runtime sums over the ranks before
/// sqrtInPlace.
template <int kThreads, bool kSqrt = true>
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
    *out = kSqrt ? sqrtf(total) : total;
}

/// *x = sqrt(*x): the norm from the sum of squares over the ranks.
__device__ __forceinline__ void sqrtInPlace(float *x) {
  if (blockIdx.x == 0 && threadIdx.x == 0)
    *x = sqrtf(*x);
}

/// ZeRO-1's split of n elements among `shards` ranks (plan::shardOf): rank
/// `rank` owns the `count` elements from `offset`, shards of ceil(n /
/// shards) elements, the last ones shorter or empty.
struct Shard {
  long long offset, count;
};
__device__ __forceinline__ Shard shardOf(long long n, long long shards,
                                         long long rank) {
  const long long stride = (n + shards - 1) / shards;
  const long long offset = stride * rank < n ? stride * rank : n;
  const long long end = offset + stride < n ? offset + stride : n;
  return Shard{offset, end - offset};
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
/// FP32 beta2 = 0.999 would be off by 1e-5 relative). Grid-stride. A
/// non-null `copy` gets the new parameter rounded to BF16: the compute copy
/// the next step's BF16 GEMMs read.
__device__ __forceinline__ void
adamw(float *param, const float *grad, float *expAvg, float *expAvgSq,
      long long n, const float *lr, const float *step, const float *gradNorm,
      double beta1, double beta2, double eps, double weightDecay,
      double maxGradNorm, __nv_bfloat16 *copy = nullptr) {
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
    if (copy)
      copy[i] = __float2bfloat16_rn(p);
  }
}

/// ZeRO-1's AdamW on this rank's shard of a parameter of n elements: the
/// gradient whole (reduce-scattered: only the shard holds the sum), the
/// moments of the shard, the master whole or (`paramIsShard`, BF16
/// training's sharded masters) the shard alone.
__device__ __forceinline__ void
adamwShard(float *param, const float *grad, float *expAvg, float *expAvgSq,
           long long n, long long shards, long long rank, bool paramIsShard,
           const float *lr, const float *step, const float *gradNorm,
           double beta1, double beta2, double eps, double weightDecay,
           double maxGradNorm) {
  const Shard shard = shardOf(n, shards, rank);
  adamw(param + (paramIsShard ? 0 : shard.offset), grad + shard.offset, expAvg,
        expAvgSq, shard.count, lr, step, gradNorm, beta1, beta2, eps,
        weightDecay, maxGradNorm);
}

/// acc = (first ? 0 : acc) + grad over n FP32 elements, in place: the
/// gradient accumulation of one micro-batch (see host::accumulateGrad).
/// Grid-stride.
__device__ __forceinline__ void accumulateGrad(float *acc, const float *grad,
                                               long long n, bool first) {
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i =
           static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += stride)
    acc[i] = first ? grad[i] : acc[i] + grad[i];
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_OPTIMIZER_CUH
