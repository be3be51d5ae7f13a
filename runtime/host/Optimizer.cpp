//===- Optimizer.cpp - Gradient norm and AdamW ----------------------------===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kiln::rt::host {

using detail::checkSize;
using detail::kMinParallelWork;

namespace {

/// Elements per partial sum of sumOfSquares. The chunks, not the threads,
/// fix the summation order, so the result is the same for any thread count.
constexpr std::int64_t kSumChunk = 1 << 16;

/// What torch.nn.utils.clip_grad_norm_ adds to the norm before dividing.
constexpr double kClipNormEpsilon = 1e-6;

} // namespace

template <typename T> double sumOfSquares(const T *x, std::int64_t n) {
  checkSize("sumOfSquares", "n", n);
  std::int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (std::int64_t c = 0; c < chunks; ++c) {
    // kLanes independent sums, element i in lane i % kLanes, added
    // pairwise at the end: a fixed order that vectorises (one running sum
    // is bound by the latency of its adds).
    constexpr std::int64_t kLanes = 8;
    double lanes[kLanes] = {};
    const std::int64_t begin = c * kSumChunk;
    const std::int64_t end = std::min(n, (c + 1) * kSumChunk);
    std::int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes)
      for (std::int64_t j = 0; j < kLanes; ++j)
        lanes[j] +=
            static_cast<double>(x[i + j]) * static_cast<double>(x[i + j]);
    for (; i < end; ++i)
      lanes[(i - begin) % kLanes] +=
          static_cast<double>(x[i]) * static_cast<double>(x[i]);
    for (std::int64_t width = kLanes / 2; width > 0; width /= 2)
      for (std::int64_t j = 0; j < width; ++j)
        lanes[j] += lanes[j + width];
    partial[c] = lanes[0];
  }
  double total = 0;
  for (double sum : partial)
    total += sum;
  return total;
}

template <typename T>
void adamw(T *param, const T *grad, T *expAvg, T *expAvgSq, std::int64_t n,
           double lr, double step, double gradNorm, double beta1, double beta2,
           double eps, double weightDecay, double maxGradNorm) {
  checkSize("adamw", "n", n);
  if (!(step >= 1))
    throw Error(fmt::format("adamw: step must be at least 1, got {}", step));

  // torch clamps clip_coef at 1 (min propagates a NaN norm, as torch does).
  double clip = 1.0;
  if (maxGradNorm > 0)
    clip = std::min(maxGradNorm / (gradNorm + kClipNormEpsilon), 1.0);

  // The scalars of torch.optim.AdamW's single-tensor step.
  double biasCorrection1 = 1.0 - std::pow(beta1, step);
  double biasCorrection2 = 1.0 - std::pow(beta2, step);
  const T gradScale = static_cast<T>(clip);
  const T decay = static_cast<T>(1.0 - lr * weightDecay);
  const T avgWeight = static_cast<T>(1.0 - beta1);
  const T sqBeta = static_cast<T>(beta2);
  const T sqWeight = static_cast<T>(1.0 - beta2);
  const T stepSize = static_cast<T>(lr / biasCorrection1);
  const T correction2Sqrt = static_cast<T>(std::sqrt(biasCorrection2));
  const T epsT = static_cast<T>(eps);

#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i) {
    T g = grad[i] * gradScale;
    param[i] *= decay;
    expAvg[i] += avgWeight * (g - expAvg[i]);
    expAvgSq[i] = expAvgSq[i] * sqBeta + sqWeight * (g * g);
    T denom = std::sqrt(expAvgSq[i]) / correction2Sqrt + epsT;
    param[i] -= stepSize * (expAvg[i] / denom);
  }
}

template <typename T>
void accumulateGrad(T *acc, const T *grad, std::int64_t n, bool first) {
  checkSize("accumulateGrad", "n", n);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i)
    acc[i] = first ? grad[i] : acc[i] + grad[i];
}

#define KILN_INSTANTIATE(T)                                                    \
  template double sumOfSquares<T>(const T *, std::int64_t);                    \
  template void accumulateGrad<T>(T *, const T *, std::int64_t, bool);         \
  template void adamw<T>(T *, const T *, T *, T *, std::int64_t, double,       \
                         double, double, double, double, double, double,       \
                         double);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

} // namespace kiln::rt::host
