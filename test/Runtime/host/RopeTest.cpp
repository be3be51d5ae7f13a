//===- RopeTest.cpp - Rotary position embeddings --------------------------===//
//
// The forward rotation against FP64 loops written from the Hugging Face
// Llama formula (rotate_half), with and without explicit positions; the
// inverse as the transpose (<y, rope(x)> = <rope^-1(y), x>) and as the
// gradient (finite differences). (The rotation from a ropeTable that the
// attention applies on load is checked against rope in FlashAttentionTest.)
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/host/Kernels.h"

#include "KernelTestSupport.h"

#include <gmock/gmock.h>

#include <cmath>

using namespace kiln::rt;
using namespace kiln::rt::host;
using namespace kiln::rt::host::testing;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

struct RopeShape {
  std::int64_t batch, seq, heads, headDim;
};

/// q_embed = q * cos + rotate_half(q) * sin, with
/// rotate_half(x) = cat(-x[h/2:], x[:h/2]) and cos, sin of
/// cat(freqs, freqs) (transformers' apply_rotary_pos_emb), element by element.
/// The frequencies are theta^(-2i/headDim) evaluated as the kernel does:
/// with positions up to 4096 a different rounding of them alone would move
/// FP64 results by up to ~1e-12.
std::vector<double> referenceRope(const std::vector<double> &x,
                                  const std::vector<std::int32_t> *positions,
                                  RopeShape s, double theta, bool inverse) {
  std::int64_t half = s.headDim / 2;
  std::vector<double> y(x.size());
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t t = 0; t < s.seq; ++t) {
      double pos = positions ? (*positions)[b * s.seq + t] : t;
      for (std::int64_t h = 0; h < s.heads; ++h) {
        const double *xh = &x[((b * s.seq + t) * s.heads + h) * s.headDim];
        double *yh = &y[((b * s.seq + t) * s.heads + h) * s.headDim];
        for (std::int64_t d = 0; d < s.headDim; ++d) {
          std::int64_t i = d % half;
          double freq = std::pow(theta, -2.0 * i / s.headDim);
          double angle = (inverse ? -1.0 : 1.0) * pos * freq;
          double rotated = d < half ? -xh[d + half] : xh[d - half];
          yh[d] = xh[d] * std::cos(angle) + rotated * std::sin(angle);
        }
      }
    }
  return y;
}

const RopeShape kShapes[] = {
    {1, 1, 1, 2}, {2, 5, 3, 8}, {1, 13, 2, 16}, {3, 7, 4, 64}};

template <typename T> class RopeTest : public KernelTest {};
TYPED_TEST_SUITE(RopeTest, KernelTypes, KernelTypeNames);

TYPED_TEST(RopeTest, MatchesReference) {
  using T = TypeParam;
  for (RopeShape s : kShapes)
    for (bool withPositions : {false, true})
      for (bool inverse : {false, true})
        for (double theta : {10000.0, 500000.0}) {
          SCOPED_TRACE(::testing::Message()
                       << s.batch << "x" << s.seq << "x" << s.heads << "x"
                       << s.headDim << " positions " << withPositions
                       << " inverse " << inverse << " theta " << theta);
          std::int64_t size = s.batch * s.seq * s.heads * s.headDim;
          auto x = randomVector<T>(size);
          // Positions as a packed batch or a resumed sequence has them.
          auto positions = randomIds(s.batch * s.seq, 4096);
          auto y = poisoned<T>(size);
          rope(x.data(), withPositions ? positions.data() : nullptr, y.data(),
               s.batch, s.seq, s.heads, s.headDim, theta, inverse);
          EXPECT_LE(relativeError(
                        y, referenceRope(toDouble(x),
                                         withPositions ? &positions : nullptr,
                                         s, theta, inverse)),
                    kForwardTolerance<T>);
        }
}

// y may alias x.
TYPED_TEST(RopeTest, InPlace) {
  using T = TypeParam;
  RopeShape s{2, 5, 3, 8};
  std::int64_t size = s.batch * s.seq * s.heads * s.headDim;
  auto x = randomVector<T>(size);
  auto y = poisoned<T>(size);
  rope(x.data(), nullptr, y.data(), s.batch, s.seq, s.heads, s.headDim, 10000.0,
       false);
  rope(x.data(), nullptr, x.data(), s.batch, s.seq, s.heads, s.headDim, 10000.0,
       false);
  EXPECT_EQ(x, y);
}

class RopeGradTest : public KernelTest {};

// The inverse rotation is the transpose: <y1, rope(x)> = <rope^-1(y1), x>.
TEST_F(RopeGradTest, InverseIsTranspose) {
  RopeShape s{2, 6, 3, 16};
  std::int64_t size = s.batch * s.seq * s.heads * s.headDim;
  auto x = randomVector<double>(size);
  auto y1 = randomVector<double>(size);
  auto positions = randomIds(s.batch * s.seq, 2048);
  auto ropeX = poisoned<double>(size);
  auto inverseY1 = poisoned<double>(size);
  rope(x.data(), positions.data(), ropeX.data(), s.batch, s.seq, s.heads,
       s.headDim, 10000.0, false);
  rope(y1.data(), positions.data(), inverseY1.data(), s.batch, s.seq, s.heads,
       s.headDim, 10000.0, true);
  double lhs = dot(y1, ropeX), rhs = dot(inverseY1, x);
  EXPECT_NEAR(lhs, rhs, 1e-12 * std::abs(lhs));
}

// The gradient of rope is the inverse rope of the output gradient, and the
// other way round.
TEST_F(RopeGradTest, MatchesFiniteDifferences) {
  RopeShape s{2, 5, 2, 8};
  std::int64_t size = s.batch * s.seq * s.heads * s.headDim;
  for (bool inverse : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "inverse " << inverse);
    auto x = randomVector<double>(size);
    auto r = randomVector<double>(size);
    auto y = poisoned<double>(size);
    auto loss = [&] {
      rope(x.data(), nullptr, y.data(), s.batch, s.seq, s.heads, s.headDim,
           10000.0, inverse);
      return dot(r, y);
    };
    auto dx = poisoned<double>(size);
    rope(r.data(), nullptr, dx.data(), s.batch, s.seq, s.heads, s.headDim,
         10000.0, !inverse);
    EXPECT_GRADIENT_MATCHES(dx, x, loss);
  }
}

TEST(RopeTableTest, BadArgumentsThrow) {
  std::vector<float> table(12);
  EXPECT_THAT(
      [&] { ropeTable(nullptr, table.data(), 1, 2, 3, 10000.0); },
      ThrowsMessage<Error>(HasSubstr("rope_table: headDim must be even")));
  EXPECT_THAT(
      [&] { ropeTable(nullptr, table.data(), 1, 2, 4, 0.0); },
      ThrowsMessage<Error>(HasSubstr("rope_table: theta must be positive")));
}

TEST(RopeErrorTest, OddHeadDimThrows) {
  std::vector<float> x(6), y(6);
  EXPECT_THAT(
      [&] { rope(x.data(), nullptr, y.data(), 1, 2, 1, 3, 10000.0, false); },
      ThrowsMessage<Error>(HasSubstr("rope: headDim must be even, got 3")));
}

} // namespace
