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

/// One pair of a rotation by (c, s): lo c - hi s and hi c + lo s, every
/// product and sum rounded on its own (no fused multiply-add), as the host
/// computes them, so that the device and the host agree bit for bit given
/// the same factors.
__device__ __forceinline__ float rotatedLow(float lo, float hi, float c,
                                            float s) {
  return __fsub_rn(__fmul_rn(lo, c), __fmul_rn(hi, s));
}
__device__ __forceinline__ float rotatedHigh(float lo, float hi, float c,
                                             float s) {
  return __fadd_rn(__fmul_rn(hi, c), __fmul_rn(lo, s));
}

/// A pair (element i and i + half of a head) rotated in place by a
/// ropeTable row's factors for frequency i; the inverse negates the sine.
__device__ __forceinline__ void rotatePairByTable(float &low, float &high,
                                                  const float *tableRow, int i,
                                                  int half, bool inverse) {
  const float c = tableRow[i];
  const float s = inverse ? -tableRow[half + i] : tableRow[half + i];
  const float lo = low, hi = high;
  low = rotatedLow(lo, hi, c, s);
  high = rotatedHigh(lo, hi, c, s);
}

/// Element d of a head rotated by a ropeTable row (cosines, then sines):
/// `self` is element d, `partner` element d +- headDim / 2; the inverse
/// rotates by the negated angles (the sines negated).
__device__ __forceinline__ float rotatedByTable(float self, float partner,
                                                const float *tableRow, int d,
                                                int headDim, bool inverse) {
  const int half = headDim / 2, i = d < half ? d : d - half;
  const float c = tableRow[i];
  const float s = inverse ? -tableRow[half + i] : tableRow[half + i];
  return d < half ? rotatedLow(self, partner, c, s)
                  : rotatedHigh(partner, self, c, s);
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
      yr[base + i] = fromFloat<TY>(rotatedLow(lo, hi, c, s));
      yr[base + i + half] = fromFloat<TY>(rotatedHigh(lo, hi, c, s));
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

/// The factors of rope as a table [batch, seq, headDim] (runtime/host's
/// ropeTable): row t holds cos(pos * theta^(-2i / headDim)) for i <
/// headDim / 2, then the sines, computed in double as rope computes them and
/// rounded to FP32; `positions` as for rope. Block per token; threads split
/// the frequencies.
template <int kThreads>
__device__ __forceinline__ void ropeTable(const int *positions, float *table,
                                          int batch, int seq, int headDim,
                                          float theta) {
  const long long tokens = static_cast<long long>(batch) * seq;
  const int half = headDim / 2;
  const double thetaD = static_cast<double>(theta);
  for (long long t = blockIdx.x; t < tokens; t += gridDim.x) {
    const double pos = positions ? static_cast<double>(positions[t])
                                 : static_cast<double>(t % seq);
    float *row = table + t * headDim;
    for (int i = threadIdx.x; i < half; i += kThreads) {
      double sinD, cosD;
      sincos(pos * detail::ropeFrequency(thetaD, i, headDim), &sinD, &cosD);
      row[i] = static_cast<float>(cosD);
      row[half + i] = static_cast<float>(sinD);
    }
  }
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_ROPE_CUH
