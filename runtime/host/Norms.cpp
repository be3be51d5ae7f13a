//===- Norms.cpp - RMSNorm and LayerNorm, forward and gradients -----------===//
//
// Row statistics are computed in double; the per-element arithmetic runs in T
// with the statistics rounded to T, as a GPU kernel keeps them in registers.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <cmath>
#include <vector>

namespace kiln::rt::host {

using detail::checkSize;
using detail::kMinParallelWork;

namespace {

/// Checks the sizes every norm kernel takes.
void checkNormArgs(const char *kernel, std::int64_t rows, std::int64_t dim,
                   double eps) {
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "dim", dim);
  if (!(eps >= 0))
    throw Error(
        fmt::format("{}: eps must be non-negative, got {}", kernel, eps));
}

/// 1 / sqrt(mean(x^2) + eps) over one row.
template <typename T>
double rmsInverse(const T *x, std::int64_t dim, double eps) {
  double sumSq = 0;
  for (std::int64_t j = 0; j < dim; ++j)
    sumSq += static_cast<double>(x[j]) * static_cast<double>(x[j]);
  return 1.0 / std::sqrt(sumSq / static_cast<double>(dim) + eps);
}

/// The mean and 1 / sqrt(biased variance + eps) of one row (two passes).
struct RowMoments {
  double mean;
  double rstd;
};

template <typename T>
RowMoments rowMoments(const T *x, std::int64_t dim, double eps) {
  double sum = 0;
  for (std::int64_t j = 0; j < dim; ++j)
    sum += static_cast<double>(x[j]);
  double mean = sum / static_cast<double>(dim);
  double sumSq = 0;
  for (std::int64_t j = 0; j < dim; ++j) {
    double d = static_cast<double>(x[j]) - mean;
    sumSq += d * d;
  }
  return {mean, 1.0 / std::sqrt(sumSq / static_cast<double>(dim) + eps)};
}

} // namespace

template <typename T>
void rmsNorm(const T *x, const T *w, T *y, std::int64_t rows, std::int64_t dim,
             double eps) {
  checkNormArgs("rmsNorm", rows, dim, eps);
  if (dim == 0)
    return;
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
  for (std::int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * dim;
    T *yr = y + r * dim;
    T inv = static_cast<T>(rmsInverse(xr, dim, eps));
    for (std::int64_t j = 0; j < dim; ++j)
      yr[j] = xr[j] * inv * w[j];
  }
}

template <typename T>
void rmsNormGrad(const T *dy, const T *x, const T *w, T *dx, std::int64_t rows,
                 std::int64_t dim, double eps) {
  checkNormArgs("rmsNormGrad", rows, dim, eps);
  if (dim == 0)
    return;
    // With y = x r w and r = (mean(x^2) + eps)^(-1/2):
    //   dx = r (dy w) - x r^3 sum(dy w x) / dim.
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
  for (std::int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * dim;
    const T *dyr = dy + r * dim;
    T *dxr = dx + r * dim;
    double inv = rmsInverse(xr, dim, eps);
    double dot = 0;
    for (std::int64_t j = 0; j < dim; ++j)
      dot += static_cast<double>(dyr[j]) * static_cast<double>(w[j]) *
             static_cast<double>(xr[j]);
    T scale = static_cast<T>(inv);
    T coef = static_cast<T>(inv * inv * inv * dot / static_cast<double>(dim));
    for (std::int64_t j = 0; j < dim; ++j)
      dxr[j] = scale * dyr[j] * w[j] - coef * xr[j];
  }
}

template <typename T>
void rmsNormWeightGrad(const T *dy, const T *x, T *dw, std::int64_t rows,
                       std::int64_t dim, double eps) {
  checkNormArgs("rmsNormWeightGrad", rows, dim, eps);
  std::vector<double> inv(rows);
  if (dim > 0) {
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
    for (std::int64_t r = 0; r < rows; ++r)
      inv[r] = rmsInverse(x + r * dim, dim, eps);
  }
  detail::reduceColumns(rows, dim, dw, [&](std::int64_t r, std::int64_t j) {
    return static_cast<double>(dy[r * dim + j]) *
           static_cast<double>(x[r * dim + j]) * inv[r];
  });
}

template <typename T>
void layerNorm(const T *x, const T *w, const T *b, T *y, std::int64_t rows,
               std::int64_t dim, double eps) {
  checkNormArgs("layerNorm", rows, dim, eps);
  if (dim == 0)
    return;
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
  for (std::int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * dim;
    T *yr = y + r * dim;
    RowMoments moments = rowMoments(xr, dim, eps);
    T mean = static_cast<T>(moments.mean);
    T rstd = static_cast<T>(moments.rstd);
    for (std::int64_t j = 0; j < dim; ++j) {
      T normed = (xr[j] - mean) * rstd * w[j];
      yr[j] = b ? normed + b[j] : normed;
    }
  }
}

template <typename T>
void layerNormGrad(const T *dy, const T *x, const T *w, T *dx,
                   std::int64_t rows, std::int64_t dim, double eps) {
  checkNormArgs("layerNormGrad", rows, dim, eps);
  if (dim == 0)
    return;
    // With xhat = (x - mean) rstd and g = dy w:
    //   dx = rstd (g - mean(g) - xhat mean(g xhat)).
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
  for (std::int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * dim;
    const T *dyr = dy + r * dim;
    T *dxr = dx + r * dim;
    RowMoments moments = rowMoments(xr, dim, eps);
    double sumG = 0, sumGXhat = 0;
    for (std::int64_t j = 0; j < dim; ++j) {
      double g = static_cast<double>(dyr[j]) * static_cast<double>(w[j]);
      double xhat = (static_cast<double>(xr[j]) - moments.mean) * moments.rstd;
      sumG += g;
      sumGXhat += g * xhat;
    }
    T mean = static_cast<T>(moments.mean);
    T rstd = static_cast<T>(moments.rstd);
    T meanG = static_cast<T>(sumG / static_cast<double>(dim));
    T meanGXhat = static_cast<T>(sumGXhat / static_cast<double>(dim));
    for (std::int64_t j = 0; j < dim; ++j) {
      T xhat = (xr[j] - mean) * rstd;
      dxr[j] = rstd * (dyr[j] * w[j] - meanG - xhat * meanGXhat);
    }
  }
}

template <typename T>
void layerNormWeightGrad(const T *dy, const T *x, T *dw, std::int64_t rows,
                         std::int64_t dim, double eps) {
  checkNormArgs("layerNormWeightGrad", rows, dim, eps);
  std::vector<RowMoments> moments(rows);
  if (dim > 0) {
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
    for (std::int64_t r = 0; r < rows; ++r)
      moments[r] = rowMoments(x + r * dim, dim, eps);
  }
  detail::reduceColumns(rows, dim, dw, [&](std::int64_t r, std::int64_t j) {
    double xhat = (static_cast<double>(x[r * dim + j]) - moments[r].mean) *
                  moments[r].rstd;
    return static_cast<double>(dy[r * dim + j]) * xhat;
  });
}

#define KILN_INSTANTIATE(T)                                                    \
  template void rmsNorm<T>(const T *, const T *, T *, std::int64_t,            \
                           std::int64_t, double);                              \
  template void rmsNormGrad<T>(const T *, const T *, const T *, T *,           \
                               std::int64_t, std::int64_t, double);            \
  template void rmsNormWeightGrad<T>(const T *, const T *, T *, std::int64_t,  \
                                     std::int64_t, double);                    \
  template void layerNorm<T>(const T *, const T *, const T *, T *,             \
                             std::int64_t, std::int64_t, double);              \
  template void layerNormGrad<T>(const T *, const T *, const T *, T *,         \
                                 std::int64_t, std::int64_t, double);          \
  template void layerNormWeightGrad<T>(const T *, const T *, T *,              \
                                       std::int64_t, std::int64_t, double);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

} // namespace kiln::rt::host
