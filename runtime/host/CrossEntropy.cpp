//===- CrossEntropy.cpp - Mean token cross-entropy and its gradient -------===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

namespace kiln::rt::host {

using detail::checkSize;
using detail::kMinParallelWork;

namespace {

/// Checks the sizes and every target; returns the number of rows that count.
std::int64_t countTargets(const char *kernel, const std::int32_t *targets,
                          std::int64_t rows, std::int64_t vocab,
                          std::int64_t ignoreIndex) {
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "vocab", vocab);
  std::int64_t count = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignoreIndex)
      continue;
    if (targets[r] < 0 || targets[r] >= vocab)
      throw Error(fmt::format("{}: target {} at row {} is outside the "
                              "vocabulary (vocab_size {}) and is not "
                              "ignore_index ({})",
                              kernel, targets[r], r, vocab, ignoreIndex));
    ++count;
  }
  return count;
}

/// The maximum, sum(exp(x - max)) and its log of one row, in double; each
/// exp(x - max) also into `exps` when given (the softmax's numerators).
struct RowLogSumExp {
  double max;
  double sum;
  double logSum;
};

template <typename T>
RowLogSumExp rowLogSumExp(const T *row, std::int64_t vocab,
                          double *exps = nullptr) {
  double max = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < vocab; ++j)
    max = std::max(max, static_cast<double>(row[j]));
  double sum = 0;
  for (std::int64_t j = 0; j < vocab; ++j) {
    double e = std::exp(static_cast<double>(row[j]) - max);
    if (exps)
      exps[j] = e;
    sum += e;
  }
  return {max, sum, std::log(sum)};
}

/// One row's loss (log-sum-exp minus the target's logit) and its gradient
/// scale * (softmax - onehot) into `grad`, which may be `row` itself (each
/// element is read before it is written).
template <typename T>
double rowCrossEntropyGrad(const T *row, std::int32_t target, double scale,
                           T *grad, std::int64_t vocab) {
  // The log-sum-exp's exponentials, kept for the softmax: one exp per logit
  // instead of two.
  thread_local std::vector<double> exps;
  exps.resize(vocab);
  RowLogSumExp lse = rowLogSumExp(row, vocab, exps.data());
  double loss = lse.max + lse.logSum - static_cast<double>(row[target]);
  for (std::int64_t j = 0; j < vocab; ++j) {
    double p = exps[j] / lse.sum;
    double onehot = j == target ? 1.0 : 0.0;
    grad[j] = static_cast<T>(scale * (p - onehot));
  }
  return loss;
}

} // namespace

template <typename T>
double crossEntropy(const T *logits, const std::int32_t *targets,
                    std::int64_t rows, std::int64_t vocab,
                    std::int64_t ignoreIndex) {
  std::int64_t count =
      countTargets("crossEntropy", targets, rows, vocab, ignoreIndex);
  if (count == 0)
    return 0.0;
  std::vector<double> losses(rows, 0.0);
#pragma omp parallel for schedule(static) if (rows * vocab >= kMinParallelWork)
  for (std::int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignoreIndex)
      continue;
    const T *row = logits + r * vocab;
    RowLogSumExp lse = rowLogSumExp(row, vocab);
    losses[r] = lse.max + lse.logSum - static_cast<double>(row[targets[r]]);
  }
  // Summed in row order on one thread: the same for any number of threads.
  double total = 0;
  for (double loss : losses)
    total += loss;
  return total / static_cast<double>(count);
}

template <typename T>
void crossEntropyGrad(double dloss, const T *logits,
                      const std::int32_t *targets, T *dlogits,
                      std::int64_t rows, std::int64_t vocab,
                      std::int64_t ignoreIndex) {
  std::int64_t count =
      countTargets("crossEntropyGrad", targets, rows, vocab, ignoreIndex);
  double scale = count > 0 ? dloss / static_cast<double>(count) : 0.0;
#pragma omp parallel for schedule(static) if (rows * vocab >= kMinParallelWork)
  for (std::int64_t r = 0; r < rows; ++r) {
    const T *row = logits + r * vocab;
    T *grad = dlogits + r * vocab;
    if (targets[r] == ignoreIndex) {
      std::fill(grad, grad + vocab, T(0));
      continue;
    }
    rowCrossEntropyGrad(row, targets[r], scale, grad, vocab);
  }
}

template <typename T>
double
linearCrossEntropy(const T *x, const T *w, const std::int32_t *targets,
                   double dloss, T *scratch, T *dx, T *dw, std::int64_t rows,
                   std::int64_t hidden, std::int64_t vocab,
                   std::int64_t chunkRows, std::int64_t ignoreIndex,
                   void (*roundLogits)(T *, std::int64_t),
                   void (*roundGrad)(T *, std::int64_t), double *gemmSeconds) {
  const char *kernel = "linearCrossEntropy";
  // The GEMMs' share of the time, for KILN_PROFILE.
  auto timed = [&](auto &&run) {
    auto start = std::chrono::steady_clock::now();
    run();
    if (gemmSeconds)
      *gemmSeconds += std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count();
  };
  checkSize(kernel, "hidden", hidden);
  if (chunkRows < 1)
    throw Error(fmt::format("{}: chunkRows must be positive, got {}", kernel,
                            chunkRows));
  std::int64_t count = countTargets(kernel, targets, rows, vocab, ignoreIndex);
  double scale = count > 0 ? dloss / static_cast<double>(count) : 0.0;
  std::vector<double> losses(rows, 0.0);
  for (std::int64_t begin = 0; begin < rows; begin += chunkRows) {
    std::int64_t n = std::min(chunkRows, rows - begin);
    const T *xChunk = x + begin * hidden;
    timed([&] {
      gemm<T>(xChunk, w, scratch, 1, n, vocab, hidden, /*transA=*/false,
              /*transB=*/true, nullptr, /*accumulate=*/false);
    });
    if (roundLogits)
      roundLogits(scratch, n * vocab);
      // Each row as crossEntropy and crossEntropyGrad compute it, the
      // gradient over the logits in place.
#pragma omp parallel for schedule(static) if (n * vocab >= kMinParallelWork)
    for (std::int64_t i = 0; i < n; ++i) {
      std::int64_t r = begin + i;
      T *row = scratch + i * vocab;
      if (targets[r] == ignoreIndex) {
        std::fill(row, row + vocab, T(0));
        continue;
      }
      losses[r] = rowCrossEntropyGrad(row, targets[r], scale, row, vocab);
    }
    if (!dx && !dw)
      continue; // the loss alone
    if (roundGrad)
      roundGrad(scratch, n * vocab);
    timed([&] {
      gemm<T>(scratch, w, dx + begin * hidden, 1, n, hidden, vocab,
              /*transA=*/false, /*transB=*/false, nullptr,
              /*accumulate=*/false);
      gemm<T>(scratch, xChunk, dw, 1, vocab, hidden, n, /*transA=*/true,
              /*transB=*/false, nullptr, /*accumulate=*/begin > 0);
    });
  }
  if (count == 0)
    return 0.0;
  double total = 0;
  for (double loss : losses)
    total += loss;
  return total / static_cast<double>(count);
}

#define KILN_INSTANTIATE(T)                                                    \
  template double linearCrossEntropy<T>(                                       \
      const T *, const T *, const std::int32_t *, double, T *, T *, T *,       \
      std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,    \
      void (*)(T *, std::int64_t), void (*)(T *, std::int64_t), double *);     \
  template double crossEntropy<T>(const T *, const std::int32_t *,             \
                                  std::int64_t, std::int64_t, std::int64_t);   \
  template void crossEntropyGrad<T>(double, const T *, const std::int32_t *,   \
                                    T *, std::int64_t, std::int64_t,           \
                                    std::int64_t);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

} // namespace kiln::rt::host
