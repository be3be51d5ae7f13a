//===- RandomTest.cpp - The portable generator ----------------------------===//
//
// A run must be reproducible from its seed on any machine and continue the
// same stream after a resume. The golden values pin the exact bits: they were
// checked against an independent Python transcription of splitmix64,
// xoshiro256** and the polar method, and changing them breaks every saved
// generator state.
//
//===----------------------------------------------------------------------===//

#include "runtime/train/Random.h"

#include "../io/IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

using namespace kiln::rt;
using namespace kiln::rt::testing;
using ::testing::HasSubstr;

namespace {

/// The next `n` raw words of `rng`.
std::vector<std::uint64_t> words(Rng &rng, int n) {
  std::vector<std::uint64_t> out;
  for (int i = 0; i < n; ++i)
    out.push_back(rng.next());
  return out;
}

TEST(RandomTest, SeedsThroughSplitMix64) {
  // splitmix64's first outputs from 0, as published with the algorithm.
  EXPECT_EQ(Rng(0).state(), "xoshiro256** e220a8397b1dcdaf 6e789e6aa1b965f4 "
                            "06c45d188009454f f88bb8a8724c81ec");
}

TEST(RandomTest, GoldenValues) {
  Rng zero(0);
  EXPECT_EQ(words(zero, 3),
            (std::vector<std::uint64_t>{0x99ec5f36cb75f2b4, 0xbf6e1f784956452a,
                                        0x1a5f849d4933e6e0}));
  Rng rng(42);
  EXPECT_EQ(rng.uniform(), 0x1.5780b2e0c2ecp-4);
  EXPECT_EQ(rng.uniform(), 0x1.84136619b444ep-2);
  EXPECT_EQ(rng.uniform(), 0x1.5c2ea66473c93p-1);
  EXPECT_EQ(rng.normal(), 0x1.df16ccfa4d2a1p-1);
  EXPECT_EQ(rng.normal(), 0x1.856dd7819a9ebp-1);
  EXPECT_EQ(rng.normal(), 0x1.2d86b0cc26b44p-1);
}

TEST(RandomTest, SameSeedSameSequence) {
  Rng a(1234), b(1234);
  EXPECT_EQ(words(a, 1000), words(b, 1000));
  for (int i = 0; i < 1000; ++i)
    ASSERT_EQ(a.normal(), b.normal()) << "draw " << i;
}

TEST(RandomTest, DifferentSeedsDiffer) {
  Rng a(1), b(2);
  std::vector<std::uint64_t> first = words(a, 100), second = words(b, 100);
  for (int i = 0; i < 100; ++i)
    EXPECT_NE(first[i], second[i]) << "word " << i;
}

TEST(RandomTest, UniformIsInUnitInterval) {
  Rng rng(7);
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
}

TEST(RandomTest, StateRoundTripContinuesIdentically) {
  Rng rng(99);
  words(rng, 5);
  rng.normal(); // leaves the second draw of the pair for the next call
  std::string state = rng.state();
  EXPECT_EQ(std::count(state.begin(), state.end(), ' '), 5) << state;
  Rng restored = Rng::fromState(state);
  EXPECT_EQ(restored, rng);
  EXPECT_EQ(restored.state(), state);
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(restored.normal(), rng.normal()) << "draw " << i;
    ASSERT_EQ(restored.next(), rng.next()) << "word " << i;
  }

  rng.normal(); // the pair is used up again
  state = rng.state();
  EXPECT_EQ(std::count(state.begin(), state.end(), ' '), 4) << state;
  restored = Rng::fromState(state);
  EXPECT_EQ(restored, rng);
  EXPECT_EQ(words(restored, 10), words(rng, 10));
}

TEST(RandomTest, NormalHasUnitMoments) {
  Rng rng(2024);
  constexpr int kDraws = 100000;
  double sum = 0, sumSquares = 0;
  for (int i = 0; i < kDraws; ++i) {
    double x = rng.normal();
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sumSquares += x * x;
  }
  double mean = sum / kDraws;
  double std = std::sqrt(sumSquares / kDraws - mean * mean);
  // Standard errors are 0.0032 (mean) and 0.0022 (std); allow about 4.
  EXPECT_NEAR(mean, 0.0, 0.013);
  EXPECT_NEAR(std, 1.0, 0.01);
}

TEST(RandomTest, FillNormalScalesNormalDraws) {
  Rng a(5), b(5);
  std::vector<float> out(101, -1.0f);
  fillNormal(a, out.data(), static_cast<std::int64_t>(out.size()), 3.0, 0.02);
  for (std::size_t i = 0; i < out.size(); ++i)
    ASSERT_EQ(out[i], static_cast<float>(3.0 + 0.02 * b.normal())) << i;
  EXPECT_EQ(a, b);
  fillNormal(a, nullptr, 0, 0, 1);
  EXPECT_EQ(a, b);
  EXPECT_THAT(errorMessage([&] { fillNormal(a, out.data(), -1, 0, 1); }),
              HasSubstr("negative count -1"));
}

TEST(RandomTest, MalformedStateThrows) {
  std::string words4 = "0123456789abcdef 0123456789abcdef 0123456789abcdef "
                       "0123456789abcdef";
  struct Case {
    std::string state;
    std::string message;
  } cases[] = {
      {"", "expected it to start with 'xoshiro256**'"},
      {"mt19937 " + words4, "expected it to start with 'xoshiro256**'"},
      {"xoshiro256** 0123456789abcdef 0123456789abcdef", "got 2 words"},
      {"xoshiro256** " + words4 + " 0 0", "got 6 words"},
      {"xoshiro256** 0123456789abcdeg 0123456789abcdef 0123456789abcdef "
       "0123456789abcdef",
       "word 1 ('0123456789abcdeg') is not 16 hex digits"},
      {"xoshiro256** 0123456789abcdef 123456789abcdef 0123456789abcdef "
       "0123456789abcdef",
       "word 2 ('123456789abcdef') is not 16 hex digits"},
      {"xoshiro256** 0123456789abcdef 0123456789abcdef 0123456789abcdef "
       "-123456789abcdef",
       "word 4"},
      {"xoshiro256** 0000000000000000 0000000000000000 0000000000000000 "
       "0000000000000000",
       "all zero"},
      {"xoshiro256** " + words4 + " 7ff8000000000000", "is not finite"},
      {"xoshiro256** " + words4 + " 3ff", "kept normal draw ('3ff')"},
  };
  for (const Case &c : cases) {
    std::string message = errorMessage([&] { Rng::fromState(c.state); });
    EXPECT_THAT(message, HasSubstr("malformed random-generator state"))
        << c.state;
    EXPECT_THAT(message, HasSubstr(c.message)) << c.state;
  }
  // Upper-case digits and extra blanks are accepted.
  EXPECT_EQ(Rng::fromState("  xoshiro256**  E220A8397B1DCDAF 6e789e6aa1b965f4"
                           "\t06c45d188009454f f88bb8a8724c81ec\n"),
            Rng(0));
}

TEST(RandomTest, PortableLogMatchesStdLog) {
  // Within three ulp of glibc's log (which is within one of the truth).
  constexpr double kTolerance = 3 * 0x1.0p-52;
  EXPECT_EQ(portableLog(1.0), 0.0);
  EXPECT_EQ(portableLog(0.0), -INFINITY);
  EXPECT_TRUE(std::isnan(portableLog(-1.0)));
  double values[] = {1e-300, 4.9e-324,  1e-10,     0.1,     0.5, 0.70710678,
                     0.7072, 0.999999,  1 + 1e-12, 1.41421, 2.0, 3.0,
                     10.0,   12345.678, 1e100,     1.7e308};
  for (double x : values)
    EXPECT_NEAR(portableLog(x), std::log(x), kTolerance * std::abs(std::log(x)))
        << x;
  Rng rng(3);
  for (int i = 0; i < 10000; ++i) {
    double x = rng.uniform() + 1e-300;
    ASSERT_NEAR(portableLog(x), std::log(x), kTolerance * std::abs(std::log(x)))
        << x;
  }
}

} // namespace
