//===- Norms.cpp - RMSNorm and LayerNorm, forward and gradients -----------===//
//
// Each row is RowKernels.h's; the weight gradients reduce columns.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"
#include "runtime/host/RowKernels.h"

#include <array>
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

} // namespace

template <typename T>
void rmsNorm(const T *x, const T *w, T *y, std::int64_t rows, std::int64_t dim,
             double eps) {
  checkNormArgs("rmsNorm", rows, dim, eps);
  if (dim == 0)
    return;
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
  for (std::int64_t r = 0; r < rows; ++r)
    row::rmsNorm(x + r * dim, w, y + r * dim, dim, eps);
}

template <typename T>
void rmsNormGrad(const T *dy, const T *x, const T *w, T *dx, std::int64_t rows,
                 std::int64_t dim, double eps) {
  checkNormArgs("rmsNormGrad", rows, dim, eps);
  if (dim == 0)
    return;
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
  for (std::int64_t r = 0; r < rows; ++r)
    row::rmsNormGrad(dy + r * dim, x + r * dim, w, dx + r * dim, dim, eps);
}

template <typename T>
void rmsNormWeightGrad(const T *dy, const T *x, T *dw, std::int64_t rows,
                       std::int64_t dim, double eps) {
  checkNormArgs("rmsNormWeightGrad", rows, dim, eps);
  std::vector<double> inv(rows);
  if (dim > 0) {
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
    for (std::int64_t r = 0; r < rows; ++r)
      inv[r] = row::rmsInverse(x + r * dim, dim, eps);
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
  for (std::int64_t r = 0; r < rows; ++r)
    row::layerNorm(x + r * dim, w, b, y + r * dim, dim, eps);
}

template <typename T>
void layerNormGrad(const T *dy, const T *x, const T *w, T *dx,
                   std::int64_t rows, std::int64_t dim, double eps) {
  checkNormArgs("layerNormGrad", rows, dim, eps);
  if (dim == 0)
    return;
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
  for (std::int64_t r = 0; r < rows; ++r)
    row::layerNormGrad(dy + r * dim, x + r * dim, w, dx + r * dim, dim, eps);
}

/// Every row's mean and reciprocal standard deviation (LayerNorm's).
template <typename T>
std::vector<row::Moments> rowMoments(const T *x, std::int64_t rows,
                                     std::int64_t dim, double eps) {
  std::vector<row::Moments> moments(rows);
  if (dim > 0) {
#pragma omp parallel for schedule(static) if (rows * dim >= kMinParallelWork)
    for (std::int64_t r = 0; r < rows; ++r)
      moments[r] = row::moments(x + r * dim, dim, eps);
  }
  return moments;
}

template <typename T>
void layerNormWeightGrad(const T *dy, const T *x, T *dw, std::int64_t rows,
                         std::int64_t dim, double eps) {
  checkNormArgs("layerNormWeightGrad", rows, dim, eps);
  std::vector<row::Moments> moments = rowMoments(x, rows, dim, eps);
  detail::reduceColumns(rows, dim, dw, [&](std::int64_t r, std::int64_t j) {
    double xhat = (static_cast<double>(x[r * dim + j]) - moments[r].mean) *
                  moments[r].rstd;
    return static_cast<double>(dy[r * dim + j]) * xhat;
  });
}

template <typename T>
void layerNormParamGrad(const T *dy, const T *x, T *dw, T *db,
                        std::int64_t rows, std::int64_t dim, double eps) {
  checkNormArgs("layerNormParamGrad", rows, dim, eps);
  std::vector<row::Moments> moments = rowMoments(x, rows, dim, eps);
  detail::reduceColumnSums<2>(
      rows, dim, std::array<T *, 2>{dw, db},
      [&](std::int64_t r, std::int64_t j) {
        double xhat = (static_cast<double>(x[r * dim + j]) - moments[r].mean) *
                      moments[r].rstd;
        double g = static_cast<double>(dy[r * dim + j]);
        return std::array<double, 2>{g * xhat, g};
      });
}

#define KILN_INSTANTIATE(T)                                                    \
  template void layerNormParamGrad<T>(const T *, const T *, T *, T *,          \
                                      std::int64_t, std::int64_t, double);     \
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
