//===- Activations.cpp - SwiGLU and GELU, forward and gradients -----------===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <cmath>
#include <numbers>

namespace kiln::rt::host {

using detail::checkSize;
using detail::kMinParallelWork;

namespace {

/// The constant of GELU's tanh approximation (Hendrycks and Gimpel; GPT-2).
constexpr double kGeluTanhCubic = 0.044715;

template <typename T> T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

/// gelu(x) and its derivative for one element, in T.
template <typename T> T geluValue(T x, bool tanhApprox) {
  if (tanhApprox) {
    const T k = static_cast<T>(std::sqrt(2.0 / std::numbers::pi));
    const T c = static_cast<T>(kGeluTanhCubic);
    return T(0.5) * x * (T(1) + std::tanh(k * (x + c * x * x * x)));
  }
  const T invSqrt2 = static_cast<T>(1.0 / std::numbers::sqrt2);
  return T(0.5) * x * (T(1) + std::erf(x * invSqrt2));
}

template <typename T> T geluDerivative(T x, bool tanhApprox) {
  if (tanhApprox) {
    const T k = static_cast<T>(std::sqrt(2.0 / std::numbers::pi));
    const T c = static_cast<T>(kGeluTanhCubic);
    T t = std::tanh(k * (x + c * x * x * x));
    return T(0.5) * (T(1) + t) +
           T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * c * x * x);
  }
  // Phi(x) + x phi(x), with Phi and phi the standard normal CDF and density.
  const T invSqrt2 = static_cast<T>(1.0 / std::numbers::sqrt2);
  const T invSqrt2Pi = static_cast<T>(1.0 / std::sqrt(2.0 * std::numbers::pi));
  return T(0.5) * (T(1) + std::erf(x * invSqrt2)) +
         x * invSqrt2Pi * std::exp(T(-0.5) * x * x);
}

} // namespace

template <typename T>
void swiglu(const T *gate, const T *up, T *y, std::int64_t n) {
  checkSize("swiglu", "n", n);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i)
    y[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

template <typename T>
void swigluGrad(const T *dy, const T *gate, const T *up, T *dgate, T *dup,
                std::int64_t n) {
  checkSize("swigluGrad", "n", n);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i) {
    T g = gate[i];
    T s = sigmoid(g);
    dgate[i] = dy[i] * up[i] * s * (T(1) + g * (T(1) - s));
    dup[i] = dy[i] * g * s;
  }
}

template <typename T>
void gelu(const T *x, T *y, std::int64_t n, bool tanhApprox) {
  checkSize("gelu", "n", n);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i)
    y[i] = geluValue(x[i], tanhApprox);
}

template <typename T>
void geluGrad(const T *dy, const T *x, T *dx, std::int64_t n, bool tanhApprox) {
  checkSize("geluGrad", "n", n);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (std::int64_t i = 0; i < n; ++i)
    dx[i] = dy[i] * geluDerivative(x[i], tanhApprox);
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
