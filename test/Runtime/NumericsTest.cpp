//===- NumericsTest.cpp - BF16/FP8 conversions against references ---------===//
//
// The references here are independent of the implementation: they enumerate
// every value of the narrow format and pick the nearest one by comparing
// distances in double precision.
//
//===----------------------------------------------------------------------===//

#include "runtime/Numerics.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace kiln::rt;

namespace kiln::rt {
/// Names test parameters in ctest's listing.
void PrintTo(Fp8Format format, std::ostream *os) {
  *os << (format == Fp8Format::E4M3 ? "E4M3" : "E5M2");
}
} // namespace kiln::rt

namespace {

/// Every finite non-negative value of an FP8 format with its code, ascending.
std::vector<std::pair<double, std::uint8_t>> finiteFp8Values(Fp8Format f) {
  std::vector<std::pair<double, std::uint8_t>> values;
  for (int code = 0; code < 0x80; ++code) {
    float v = fp8ToFloat(static_cast<std::uint8_t>(code), f);
    if (std::isfinite(v))
      values.emplace_back(v, static_cast<std::uint8_t>(code));
  }
  return values;
}

/// Nearest-even rounding by exhaustive search with saturation: the reference
/// `floatToFp8` must agree with.
std::uint8_t referenceFp8(float x, Fp8Format f) {
  auto values = finiteFp8Values(f);
  double a = std::fabs(static_cast<double>(x));
  std::uint8_t best = values.back().second; // saturate above the range
  if (a <= values.back().first) {
    double bestDistance = std::numeric_limits<double>::infinity();
    for (auto [v, code] : values) {
      double d = std::fabs(v - a);
      if (d < bestDistance || (d == bestDistance && (code & 1) == 0)) {
        bestDistance = d;
        best = code;
      }
    }
  }
  return best | (std::signbit(x) ? 0x80 : 0x00);
}

TEST(Bf16, EveryBf16ValueRoundTrips) {
  for (std::uint32_t bits = 0; bits <= 0xffff; ++bits) {
    float v = bf16ToFloat(static_cast<std::uint16_t>(bits));
    if (std::isnan(v)) {
      EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(v))));
      continue;
    }
    ASSERT_EQ(floatToBf16(v), bits) << "value " << v;
  }
}

TEST(Bf16, TiesRoundToEven) {
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: the even neighbour is 1.
  EXPECT_EQ(roundToBf16(1.0f + std::ldexp(1.0f, -8)), 1.0f);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  EXPECT_EQ(roundToBf16(1.0f + 3 * std::ldexp(1.0f, -8)),
            1.0f + std::ldexp(1.0f, -6));
  // Just above a tie rounds up.
  EXPECT_EQ(roundToBf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)),
            1.0f + std::ldexp(1.0f, -7));
}

TEST(Bf16, RandomFloatsRoundToNearest) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> dist;
  for (int i = 0; i < 200000; ++i) {
    float x = std::bit_cast<float>(dist(rng));
    if (!std::isfinite(x))
      continue;
    std::uint16_t down =
        static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(x) >> 16);
    double lo = bf16ToFloat(down);
    double hi = bf16ToFloat(static_cast<std::uint16_t>(down + 1));
    if (std::isinf(hi)) // IEEE rounds as if the exponent range were unbounded
      hi = std::copysign(std::ldexp(1.0, 128), x);
    double dLo = std::fabs(x - lo), dHi = std::fabs(hi - x);
    std::uint16_t expected =
        dLo < dHi || (dLo == dHi && (down & 1) == 0) ? down : down + 1;
    ASSERT_EQ(floatToBf16(x), expected) << "x = " << x;
  }
}

TEST(Bf16, OverflowAndNaN) {
  EXPECT_TRUE(std::isinf(roundToBf16(std::numeric_limits<float>::max())));
  EXPECT_TRUE(std::isnan(roundToBf16(std::nanf(""))));
  EXPECT_EQ(roundToBf16(-0.0f), 0.0f);
  EXPECT_TRUE(std::signbit(roundToBf16(-0.0f)));
}

class Fp8 : public ::testing::TestWithParam<Fp8Format> {};

// Every FP16 bit pattern widens as the compiler's own _Float16 does (its
// conversion is the hardware's or libgcc's, not Kiln's); known values by
// hand where the compiler has no _Float16.
TEST(Half, EveryValueWidensExactly) {
  EXPECT_EQ(halfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(halfToFloat(0xc000), -2.0f);
  EXPECT_EQ(halfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(halfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(halfToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(halfToFloat(0x7e00)));
  EXPECT_TRUE(std::signbit(halfToFloat(0x8000)));
#ifdef __FLT16_MAX__
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    float expected = static_cast<float>(
        std::bit_cast<_Float16>(static_cast<uint16_t>(bits)));
    float got = halfToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(expected))
      EXPECT_TRUE(std::isnan(got)) << bits;
    else
      EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(expected))
          << bits;
  }
#endif
}

TEST_P(Fp8, KnownValues) {
  Fp8Format f = GetParam();
  if (f == Fp8Format::E4M3) {
    EXPECT_EQ(fp8MaxFinite(f), 448.0f);
    EXPECT_EQ(fp8ToFloat(0x01, f), std::ldexp(1.0f, -9)); // min subnormal
    EXPECT_EQ(fp8ToFloat(0x08, f), std::ldexp(1.0f, -6)); // min normal
    EXPECT_EQ(fp8ToFloat(0x38, f), 1.0f);
    EXPECT_TRUE(std::isnan(fp8ToFloat(0x7f, f)));
  } else {
    EXPECT_EQ(fp8MaxFinite(f), 57344.0f);
    EXPECT_EQ(fp8ToFloat(0x01, f), std::ldexp(1.0f, -16));
    EXPECT_EQ(fp8ToFloat(0x04, f), std::ldexp(1.0f, -14));
    EXPECT_EQ(fp8ToFloat(0x3c, f), 1.0f);
    EXPECT_TRUE(std::isinf(fp8ToFloat(0x7c, f)));
    EXPECT_TRUE(std::isnan(fp8ToFloat(0x7d, f)));
  }
  EXPECT_EQ(fp8ToFloat(0x80, f), 0.0f);
  EXPECT_TRUE(std::signbit(fp8ToFloat(0x80, f)));
}

TEST_P(Fp8, EveryFiniteCodeRoundTrips) {
  Fp8Format f = GetParam();
  for (int code = 0; code < 256; ++code) {
    float v = fp8ToFloat(static_cast<std::uint8_t>(code), f);
    if (std::isfinite(v)) {
      EXPECT_EQ(floatToFp8(v, f), code) << "code " << code;
    }
  }
}

TEST_P(Fp8, MidpointsRoundToEvenAndNeighboursToNearest) {
  Fp8Format f = GetParam();
  auto values = finiteFp8Values(f);
  for (size_t i = 0; i + 1 < values.size(); ++i) {
    auto [lo, loCode] = values[i];
    auto [hi, hiCode] = values[i + 1];
    float mid = static_cast<float>((lo + hi) / 2); // exact in FP32
    std::uint8_t even = (loCode & 1) == 0 ? loCode : hiCode;
    EXPECT_EQ(floatToFp8(mid, f), even) << "between " << lo << " and " << hi;
    EXPECT_EQ(floatToFp8(std::nextafter(mid, 0.0f), f), loCode);
    EXPECT_EQ(floatToFp8(std::nextafter(mid, INFINITY), f), hiCode);
    EXPECT_EQ(floatToFp8(-mid, f), even | 0x80);
  }
}

TEST_P(Fp8, SaturatesAndKeepsNaN) {
  Fp8Format f = GetParam();
  std::uint8_t maxCode = floatToFp8(fp8MaxFinite(f), f);
  EXPECT_EQ(floatToFp8(1e30f, f), maxCode);
  EXPECT_EQ(floatToFp8(INFINITY, f), maxCode);
  EXPECT_EQ(floatToFp8(-INFINITY, f), maxCode | 0x80);
  EXPECT_TRUE(std::isnan(fp8ToFloat(floatToFp8(NAN, f), f)));
}

TEST_P(Fp8, RandomFloatsMatchExhaustiveReference) {
  Fp8Format f = GetParam();
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> scale(-20, 18);
  for (int i = 0; i < 20000; ++i) {
    float x = std::ldexp(normal(rng), scale(rng));
    ASSERT_EQ(floatToFp8(x, f), referenceFp8(x, f)) << "x = " << x;
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp8,
                         ::testing::Values(Fp8Format::E4M3, Fp8Format::E5M2),
                         [](const auto &info) {
                           return info.param == Fp8Format::E4M3 ? "E4M3"
                                                                : "E5M2";
                         });

} // namespace
