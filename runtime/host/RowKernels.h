//===- RowKernels.h - One row of the host's row-wise kernels ----*- C++ -*-===//
//
// The per-row (and per-element) arithmetic of the norms, RoPE and the
// activations, shared by the whole-tensor kernels (Norms.cpp, Rope.cpp,
// Activations.cpp) and by fused regions, which run every op of a region on
// one row before the next (FusedRegion.cpp). One definition is what makes a
// fused step compute bit for bit what the unfused step computes.
//
// Row statistics are computed in double; the per-element arithmetic runs in
// T with the statistics rounded to T, as a GPU kernel keeps them in
// registers.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_HOST_ROWKERNELS_H
#define KILN_RUNTIME_HOST_ROWKERNELS_H

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

namespace kiln::rt::host::row {

/// 1 / sqrt(mean(x^2) + eps) over one row.
template <typename T>
double rmsInverse(const T *x, std::int64_t dim, double eps) {
  double sumSq = 0;
  for (std::int64_t j = 0; j < dim; ++j)
    sumSq += static_cast<double>(x[j]) * static_cast<double>(x[j]);
  return 1.0 / std::sqrt(sumSq / static_cast<double>(dim) + eps);
}

/// The mean and 1 / sqrt(biased variance + eps) of one row (two passes).
struct Moments {
  double mean;
  double rstd;
};

template <typename T>
Moments moments(const T *x, std::int64_t dim, double eps) {
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

/// y = x r w, r = (mean(x^2) + eps)^(-1/2). `y` may be `x`.
template <typename T>
void rmsNorm(const T *x, const T *w, T *y, std::int64_t dim, double eps) {
  T inv = static_cast<T>(rmsInverse(x, dim, eps));
  for (std::int64_t j = 0; j < dim; ++j)
    y[j] = x[j] * inv * w[j];
}

/// dx = r (dy w) - x r^3 sum(dy w x) / dim. `dx` may be `dy`.
template <typename T>
void rmsNormGrad(const T *dy, const T *x, const T *w, T *dx, std::int64_t dim,
                 double eps) {
  double inv = rmsInverse(x, dim, eps);
  double dot = 0;
  for (std::int64_t j = 0; j < dim; ++j)
    dot += static_cast<double>(dy[j]) * static_cast<double>(w[j]) *
           static_cast<double>(x[j]);
  T scale = static_cast<T>(inv);
  T coef = static_cast<T>(inv * inv * inv * dot / static_cast<double>(dim));
  for (std::int64_t j = 0; j < dim; ++j)
    dx[j] = scale * dy[j] * w[j] - coef * x[j];
}

/// y = (x - mean) rstd w (+ b). `y` may be `x`.
template <typename T>
void layerNorm(const T *x, const T *w, const T *b, T *y, std::int64_t dim,
               double eps) {
  Moments m = moments(x, dim, eps);
  T mean = static_cast<T>(m.mean);
  T rstd = static_cast<T>(m.rstd);
  for (std::int64_t j = 0; j < dim; ++j) {
    T normed = (x[j] - mean) * rstd * w[j];
    y[j] = b ? normed + b[j] : normed;
  }
}

/// With xhat = (x - mean) rstd and g = dy w:
///   dx = rstd (g - mean(g) - xhat mean(g xhat)). `dx` may be `dy`.
template <typename T>
void layerNormGrad(const T *dy, const T *x, const T *w, T *dx, std::int64_t dim,
                   double eps) {
  Moments m = moments(x, dim, eps);
  double sumG = 0, sumGXhat = 0;
  for (std::int64_t j = 0; j < dim; ++j) {
    double g = static_cast<double>(dy[j]) * static_cast<double>(w[j]);
    double xhat = (static_cast<double>(x[j]) - m.mean) * m.rstd;
    sumG += g;
    sumGXhat += g * xhat;
  }
  T mean = static_cast<T>(m.mean);
  T rstd = static_cast<T>(m.rstd);
  T meanG = static_cast<T>(sumG / static_cast<double>(dim));
  T meanGXhat = static_cast<T>(sumGXhat / static_cast<double>(dim));
  for (std::int64_t j = 0; j < dim; ++j) {
    T xhat = (x[j] - mean) * rstd;
    dx[j] = rstd * (dy[j] * w[j] - meanG - xhat * meanGXhat);
  }
}

/// freq_i = theta^(-2i / headDim) for i < headDim / 2, as Hugging Face's
/// inv_freq.
inline std::vector<double> ropeFrequencies(double theta, std::int64_t headDim) {
  std::vector<double> freq(headDim / 2);
  for (std::int64_t i = 0; i < headDim / 2; ++i)
    freq[i] = std::pow(theta, -2.0 * static_cast<double>(i) /
                                  static_cast<double>(headDim));
  return freq;
}

/// The cosine and sine of pos * freq_i (in double), rounded to T: the
/// factors of one token's rotation.
template <typename T>
void ropeFactors(const std::vector<double> &freq, double pos, T *cosines,
                 T *sines) {
  for (std::size_t i = 0; i < freq.size(); ++i) {
    double angle = pos * freq[i];
    cosines[i] = static_cast<T>(std::cos(angle));
    sines[i] = static_cast<T>(std::sin(angle));
  }
}

/// One pair (x[i], x[i + headDim / 2]) rotated by (c, s).
template <typename T> void rotatePair(T lo, T hi, T c, T s, T &yLo, T &yHi) {
  yLo = lo * c - hi * s;
  yHi = hi * c + lo * s;
}

/// Rotates the heads of one token (rotate_half convention) by the factors
/// of ropeFactors. `y` may be `x`.
template <typename T>
void rotateHeads(const T *x, const T *cosines, const T *sines, T *y,
                 std::int64_t heads, std::int64_t headDim) {
  const std::int64_t half = headDim / 2;
  for (std::int64_t h = 0; h < heads; ++h) {
    const T *xh = x + h * headDim;
    T *yh = y + h * headDim;
    for (std::int64_t i = 0; i < half; ++i)
      rotatePair(xh[i], xh[i + half], cosines[i], sines[i], yh[i],
                 yh[i + half]);
  }
}

/// Rotates one head row in place by a ropeTable row (cosines, then sines;
/// the sines negated for the inverse): rotateHeads with the table's
/// factors.
template <typename T>
void rotateByTableRow(T *x, const float *tableRow, std::int64_t headDim,
                      bool inverse) {
  const std::int64_t half = headDim / 2;
  for (std::int64_t i = 0; i < half; ++i) {
    T c = static_cast<T>(tableRow[i]);
    T s = static_cast<T>(inverse ? -tableRow[half + i] : tableRow[half + i]);
    rotatePair(x[i], x[i + half], c, s, x[i], x[i + half]);
  }
}

/// Rotates the heads of one token (rotate_half convention) by angles
/// pos * theta^(-2i / headDim), negated when `inverse`. One object per
/// thread: it keeps the token's cosines and sines.
template <typename T> class Rope {
public:
  Rope(std::int64_t heads, std::int64_t headDim, double theta, bool inverse)
      : heads(heads), headDim(headDim), sign(inverse ? -1.0 : 1.0),
        freq(ropeFrequencies(theta, headDim)), cosines(headDim / 2),
        sines(headDim / 2) {}

  /// `y` may be `x`.
  void operator()(const T *x, double pos, T *y) {
    ropeFactors(freq, sign * pos, cosines.data(), sines.data());
    rotateHeads(x, cosines.data(), sines.data(), y, heads, headDim);
  }

private:
  std::int64_t heads, headDim;
  double sign;
  std::vector<double> freq;
  std::vector<T> cosines, sines;
};

/// The constant of GELU's tanh approximation (Hendrycks and Gimpel; GPT-2).
inline constexpr double kGeluTanhCubic = 0.044715;

template <typename T> T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

template <typename T> T swiglu(T gate, T up) {
  return gate * sigmoid(gate) * up;
}

/// d/dgate and d/dup of swiglu, times dy.
template <typename T> T swigluGate(T dy, T gate, T up) {
  T s = sigmoid(gate);
  return dy * up * s * (T(1) + gate * (T(1) - s));
}
template <typename T> T swigluUp(T dy, T gate) {
  return dy * gate * sigmoid(gate);
}

template <typename T> T gelu(T x, bool tanhApprox) {
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

} // namespace kiln::rt::host::row

#endif // KILN_RUNTIME_HOST_ROWKERNELS_H
