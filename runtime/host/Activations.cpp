//===- Activations.cpp - SwiGLU and GELU, forward and gradients -----------===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"
#include "runtime/host/RowKernels.h"

namespace kiln::rt::host {

using detail::checkSize;
using detail::kMinParallelWork;

template <typename T>
void swiglu(const T *gate, const T *up, T *y, std::int64_t n) {
  checkSize("swiglu", "n", n);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i)
    y[i] = row::swiglu(gate[i], up[i]);
}

template <typename T>
void swigluGrad(const T *dy, const T *gate, const T *up, T *dgate, T *dup,
                std::int64_t n) {
  checkSize("swigluGrad", "n", n);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i) {
    dgate[i] = row::swigluGate(dy[i], gate[i], up[i]);
    dup[i] = row::swigluUp(dy[i], gate[i]);
  }
}

template <typename T>
void gelu(const T *x, T *y, std::int64_t n, bool tanhApprox) {
  checkSize("gelu", "n", n);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i)
    y[i] = row::gelu(x[i], tanhApprox);
}

template <typename T>
void geluGrad(const T *dy, const T *x, T *dx, std::int64_t n, bool tanhApprox) {
  checkSize("geluGrad", "n", n);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i)
    dx[i] = dy[i] * row::geluDerivative(x[i], tanhApprox);
}

#define KILN_INSTANTIATE(T)                                                    \
  template void swiglu<T>(const T *, const T *, T *, std::int64_t);            \
  template void swigluGrad<T>(const T *, const T *, const T *, T *, T *,       \
                              std::int64_t);                                   \
  template void gelu<T>(const T *, T *, std::int64_t, bool);                   \
  template void geluGrad<T>(const T *, const T *, T *, std::int64_t, bool);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

} // namespace kiln::rt::host
