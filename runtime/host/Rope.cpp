//===- Rope.cpp - Rotary position embeddings (rotate_half convention) -----===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <cmath>
#include <vector>

namespace kiln::rt::host {

using detail::checkSize;
using detail::kMinParallelWork;

template <typename T>
void rope(const T *x, const std::int32_t *positions, T *y, std::int64_t batch,
          std::int64_t seq, std::int64_t heads, std::int64_t headDim,
          double theta, bool inverse) {
  checkSize("rope", "batch", batch);
  checkSize("rope", "seq", seq);
  checkSize("rope", "heads", heads);
  checkSize("rope", "headDim", headDim);
  if (headDim % 2 != 0)
    throw Error(fmt::format("rope: headDim must be even, got {}", headDim));
  if (!(theta > 0))
    throw Error(fmt::format("rope: theta must be positive, got {}", theta));

  std::int64_t half = headDim / 2;
  std::int64_t width = heads * headDim;
  // freq_i = theta^(-2i / headDim), as Hugging Face's inv_freq.
  std::vector<double> freq(half);
  for (std::int64_t i = 0; i < half; ++i)
    freq[i] = std::pow(theta, -2.0 * static_cast<double>(i) /
                                  static_cast<double>(headDim));
  double sign = inverse ? -1.0 : 1.0;

  std::int64_t tokens = batch * seq;
#pragma omp parallel if (tokens * width >= kMinParallelWork)
  {
    std::vector<T> cosines(half), sines(half);
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < tokens; ++t) {
      double pos = positions ? static_cast<double>(positions[t])
                             : static_cast<double>(t % seq);
      for (std::int64_t i = 0; i < half; ++i) {
        double angle = sign * pos * freq[i];
        cosines[i] = static_cast<T>(std::cos(angle));
        sines[i] = static_cast<T>(std::sin(angle));
      }
      for (std::int64_t h = 0; h < heads; ++h) {
        const T *xh = x + t * width + h * headDim;
        T *yh = y + t * width + h * headDim;
        for (std::int64_t i = 0; i < half; ++i) {
          T lo = xh[i], hi = xh[i + half];
          yh[i] = lo * cosines[i] - hi * sines[i];
          yh[i + half] = hi * cosines[i] + lo * sines[i];
        }
      }
    }
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
