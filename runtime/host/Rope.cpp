//===- Rope.cpp - Rotary position embeddings (rotate_half convention) -----===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"
#include "runtime/host/RowKernels.h"

namespace kiln::rt::host {

using detail::checkSize;
using detail::kMinParallelWork;

namespace {

/// The shape and angle base rope and ropeTable share.
void checkRope(const char *kernel, std::int64_t batch, std::int64_t seq,
               std::int64_t headDim, double theta) {
  checkSize(kernel, "batch", batch);
  checkSize(kernel, "seq", seq);
  checkSize(kernel, "headDim", headDim);
  if (headDim % 2 != 0)
    throw Error(
        fmt::format("{}: headDim must be even, got {}", kernel, headDim));
  if (!(theta > 0))
    throw Error(
        fmt::format("{}: theta must be positive, got {}", kernel, theta));
}

/// Token t's position: positions[t], or its index within the sequence.
double positionOf(const std::int32_t *positions, std::int64_t t,
                  std::int64_t seq) {
  return positions ? static_cast<double>(positions[t])
                   : static_cast<double>(t % seq);
}

} // namespace

template <typename T>
void rope(const T *x, const std::int32_t *positions, T *y, std::int64_t batch,
          std::int64_t seq, std::int64_t heads, std::int64_t headDim,
          double theta, bool inverse) {
  checkSize("rope", "heads", heads);
  checkRope("rope", batch, seq, headDim, theta);

  std::int64_t width = heads * headDim;
  std::int64_t tokens = batch * seq;
  const row::Rope<T> rotation(heads, headDim, theta, inverse);
#pragma omp parallel if (tokens * width >= kMinParallelWork)
  {
    row::Rope<T> rotate = rotation; // the token's cosines and sines
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < tokens; ++t) {
      rotate(x + t * width, positionOf(positions, t, seq), y + t * width);
    }
  }
}

void ropeTable(const std::int32_t *positions, float *table, std::int64_t batch,
               std::int64_t seq, std::int64_t headDim, double theta) {
  checkRope("rope_table", batch, seq, headDim, theta);
  const std::vector<double> freq = row::ropeFrequencies(theta, headDim);
  const std::int64_t tokens = batch * seq, half = headDim / 2;
#pragma omp parallel for schedule(static) if (tokens * half >= kMinParallelWork)
  for (std::int64_t t = 0; t < tokens; ++t) {
    float *row = table + t * headDim;
    row::ropeFactors(freq, positionOf(positions, t, seq), row, row + half);
  }
}

#define KILN_INSTANTIATE(T)                                                    \
  template void rope<T>(const T *, const std::int32_t *, T *, std::int64_t,    \
                        std::int64_t, std::int64_t, std::int64_t, double,      \
                        bool);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

} // namespace kiln::rt::host
