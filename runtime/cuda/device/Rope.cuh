//===- Rope.cuh - Rotary position embedding --------------------*- CUDA -*-===//
//
// Rotary position embedding (runtime/host/Rope.cpp) in the rotate_half
// convention. Block per token; threads split the frequencies and loop over
// the heads, so each sin/cos is computed once per token, and angles and
// sin/cos are double, as the host's (Hugging Face's inv_freq).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_ROPE_CUH
#define KILN_RUNTIME_CUDA_DEVICE_ROPE_CUH

#include "Common.cuh"

namespace kiln::dev {

namespace detail {

/// theta^(-2i / headDim), in double as the host's (Hugging Face's inv_freq).
__device__ __forceinline__ double ropeFrequency(double theta, int i,
                                                int headDim) {
  return pow(theta,
             -2.0 * static_cast<double>(i) / static_cast<double>(headDim));
}

/// Rotates the heads of one token, in the rotate_half convention, by
/// `pos` (negated already for the inverse): threads split the frequencies
/// and loop over the heads. `firstFreq` is ropeFrequency of this thread's
/// first frequency (threadIdx.x, if under headDim / 2), which a caller
/// running many tokens computes once.
template <int kThreads, typename TX, typename TY>
__device__ __forceinline__ void ropeToken(const TX *xr, TY *yr, double pos,
                                          int heads, int headDim, double theta,
                                          double firstFreq) {
  const int half = headDim / 2;
  const int firstI = threadIdx.x;
  for (int i = firstI; i < half; i += kThreads) {
    const double freq =
        i == firstI ? firstFreq : ropeFrequency(theta, i, headDim);
    double sinD, cosD;
    sincos(pos * freq, &sinD, &cosD);
    const float c = static_cast<float>(cosD), s = static_cast<float>(sinD);
    for (int h = 0; h < heads; ++h) {
      const long long base = static_cast<long long>(h) * headDim;
      const float lo = toFloat(xr[base + i]);
      const float hi = toFloat(xr[base + i + half]);
      yr[base + i] = fromFloat<TY>(lo * c - hi * s);
      yr[base + i + half] = fromFloat<TY>(hi * c + lo * s);
    }
  }
}

} // namespace detail

/// Rotary embedding of one token's row of heads * headDim elements at
/// `position` (see rope). Every thread of the block calls; yr may alias
/// xr.
template <int kThreads, typename TX, typename TY>
__device__ __forceinline__ void
ropeOfRow(const TX *xr, TY *yr, long long position, int heads, int headDim,
          float theta, bool inverse) {
  const double thetaD = static_cast<double>(theta);
  const int firstI = threadIdx.x;
  const double firstFreq = firstI < headDim / 2
                               ? detail::ropeFrequency(thetaD, firstI, headDim)
                               : 0.0;
  double pos = static_cast<double>(position);
  if (inverse)
    pos = -pos;
  detail::ropeToken<kThreads>(xr, yr, pos, heads, headDim, thetaD, firstFreq);
}

/// Rotary embedding of x [batch, seq, heads * headDim] in the rotate_half
/// convention: for i < headDim / 2, angle = pos * theta^(-2i / headDim) in
/// double (negated when `inverse`, the transpose and so the gradient),
///   y[i]        = x[i] cos - x[i + headDim/2] sin
///   y[i + hd/2] = x[i + headDim/2] cos + x[i] sin,
/// with cos and sin rounded to FP32. `positions` [batch, seq] may be null
/// (the position is then the index within the sequence). headDim is even;
/// y may alias x (every element is read and written by one thread). Block
/// per token (batch * seq rows); threads split the frequencies and loop
/// over the heads, so each sin/cos is computed once per token.
template <typename T, int kThreads>
__device__ __forceinline__ void rope(const T *x, const int *positions, T *y,
                                     int batch, int seq, int heads, int headDim,
                                     float theta, bool inverse) {
  const long long tokens = static_cast<long long>(batch) * seq;
  const long long width = static_cast<long long>(heads) * headDim;
  const int half = headDim / 2;
  const double thetaD = static_cast<double>(theta);
  // Usually half <= kThreads: each thread's one frequency, computed once.
  const int firstI = threadIdx.x;
  const double firstFreq =
      firstI < half ? detail::ropeFrequency(thetaD, firstI, headDim) : 0.0;
  for (long long t = blockIdx.x; t < tokens; t += gridDim.x) {
    double pos = positions ? static_cast<double>(positions[t])
                           : static_cast<double>(t % seq);
    if (inverse)
      pos = -pos;
    detail::ropeToken<kThreads>(x + t * width, y + t * width, pos, heads,
                                headDim, thetaD, firstFreq);
  }
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_ROPE_CUH
