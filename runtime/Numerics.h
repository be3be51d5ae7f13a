//===- Numerics.h - BF16 and FP8 rounding emulation -------------*- C++ -*-===//
//
// Bit-exact conversions between FP32 and the narrow formats Kiln trains in.
// The host backend uses them so that a plan run on the CPU rounds exactly as
// the GPU's conversion instructions do (cvt.rn.bf16.f32 and
// cvt.rn.satfinite.e4m3x2.f32 / e5m2x2.f32).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_NUMERICS_H
#define KILN_RUNTIME_NUMERICS_H

#include <cstdint>

namespace kiln::rt {

/// Rounds an FP32 value to BF16, nearest with ties to even. Overflow gives
/// infinity (as cvt.rn.bf16.f32 does); NaN stays a quiet NaN.
std::uint16_t floatToBf16(float value);

/// Widens a BF16 bit pattern to FP32 (exact).
float bf16ToFloat(std::uint16_t bits);

/// Widens an IEEE half (FP16) bit pattern to FP32 (exact: subnormals,
/// infinities and NaN included).
float halfToFloat(std::uint16_t bits);

/// Rounds through BF16 and back: the value a BF16 tensor would hold.
inline float roundToBf16(float value) {
  return bf16ToFloat(floatToBf16(value));
}

/// The two FP8 formats of the OCP FP8 specification that Hopper supports.
enum class Fp8Format {
  E4M3, ///< 4 exponent bits, 3 mantissa bits, no infinity, max 448.
  E5M2, ///< 5 exponent bits, 2 mantissa bits, IEEE-like, max 57344.
};

/// The largest finite magnitude of `format` (448 or 57344).
float fp8MaxFinite(Fp8Format format);

/// Rounds an FP32 value to FP8, nearest with ties to even, saturating: values
/// (and infinities) beyond the largest finite magnitude become that magnitude
/// with their sign; NaN becomes NaN.
std::uint8_t floatToFp8(float value, Fp8Format format);

/// Widens an FP8 bit pattern to FP32 (exact).
float fp8ToFloat(std::uint8_t bits, Fp8Format format);

} // namespace kiln::rt

#endif // KILN_RUNTIME_NUMERICS_H
