//===- Numerics.cpp - BF16 and FP8 rounding emulation ---------------------===//

#include "runtime/Numerics.h"

#include <bit>
#include <cmath>

namespace kiln::rt {

std::uint16_t floatToBf16(float value) {
  std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  if (std::isnan(value))
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u); // quiet NaN
  // Add half an ULP of BF16, minus one when the kept part is even, so that
  // exact ties round to the even neighbour.
  std::uint32_t roundingBias = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + roundingBias) >> 16);
}

float bf16ToFloat(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

float halfToFloat(std::uint16_t bits) {
  std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  std::uint32_t exponent = (bits >> 10) & 0x1fu;
  std::uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) // infinity or NaN
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) { // zero or subnormal: mantissa x 2^-24
    float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) |
                              (mantissa << 13));
}

namespace {
/// The parameters of one FP8 format.
struct Fp8Layout {
  int mantissaBits;
  int exponentBias;
  std::uint8_t maxFiniteCode; // magnitude bits of the largest finite value
  std::uint8_t nanCode;       // magnitude bits of the canonical NaN
};

constexpr Fp8Layout layoutOf(Fp8Format format) {
  return format == Fp8Format::E4M3 ? Fp8Layout{3, 7, 0x7e, 0x7f}
                                   : Fp8Layout{2, 15, 0x7b, 0x7f};
}
} // namespace

float fp8MaxFinite(Fp8Format format) {
  return fp8ToFloat(layoutOf(format).maxFiniteCode, format);
}

std::uint8_t floatToFp8(float value, Fp8Format format) {
  const Fp8Layout layout = layoutOf(format);
  const std::uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  if (std::isnan(value))
    return sign | layout.nanCode;
  const double magnitude = std::fabs(static_cast<double>(value));
  if (std::isinf(magnitude))
    return sign | layout.maxFiniteCode;

  // The encoding of non-negative values is monotonic and continuous across the
  // subnormal/normal boundary and across binades: the code of a value is
  // (biased exponent << mantissaBits) + mantissa, and a mantissa that rounds
  // up to 2^mantissaBits carries into the exponent field. So round the
  // significand to an integer number of quanta and add it to the binade base.
  const int minNormalExponent = 1 - layout.exponentBias;
  int exponent = std::ilogb(magnitude == 0.0 ? 1.0 : magnitude);
  if (magnitude == 0.0 || exponent < minNormalExponent)
    exponent = minNormalExponent; // subnormal range shares the lowest quantum
  const double quantum = std::ldexp(1.0, exponent - layout.mantissaBits);
  const double quanta = std::nearbyint(magnitude / quantum); // ties to even
  const bool subnormal = magnitude < std::ldexp(1.0, minNormalExponent);
  const double binadeBase =
      subnormal ? 0.0
                : static_cast<double>(exponent + layout.exponentBias - 1) *
                      std::ldexp(1.0, layout.mantissaBits);
  const double code = binadeBase + quanta;
  if (code >= layout.maxFiniteCode)
    return sign | layout.maxFiniteCode;
  return sign | static_cast<std::uint8_t>(code);
}

float fp8ToFloat(std::uint8_t bits, Fp8Format format) {
  const Fp8Layout layout = layoutOf(format);
  const bool negative = bits & 0x80;
  const int magnitudeBits = bits & 0x7f;
  const int exponentField = magnitudeBits >> layout.mantissaBits;
  const int mantissa = magnitudeBits & ((1 << layout.mantissaBits) - 1);
  float magnitude;
  if (format == Fp8Format::E4M3 && magnitudeBits == layout.nanCode) {
    magnitude = NAN;
  } else if (format == Fp8Format::E5M2 && exponentField == 31) {
    magnitude = mantissa == 0 ? INFINITY : NAN;
  } else if (exponentField == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa),
                           1 - layout.exponentBias - layout.mantissaBits);
  } else {
    magnitude =
        std::ldexp(static_cast<float>(mantissa + (1 << layout.mantissaBits)),
                   exponentField - layout.exponentBias - layout.mantissaBits);
  }
  return negative ? -magnitude : magnitude;
}

} // namespace kiln::rt
