//===- LinearCrossEntropyTest.cpp - The chunked LM head and loss ---------===//
//
// linearCrossEntropy (nn-fuse's linear-cross-entropy group on the host)
// against the unfused composition it replaces: gemm to the logits,
// crossEntropy, crossEntropyGrad, then the input gradient dx = dlogits w
// and the weight gradient dw = dlogits^T x. Every row is computed by the
// unfused kernels' row functions; the GEMMs see chunks of rows (OpenBLAS
// may block those differently) and dw is summed chunk by chunk, another
// order, so results agree to the GEMMs' rounding, and bitwise with one
// chunk. With a rounding function (the BF16 step's
// storage of the logits and their gradient) it matches the unfused
// kernels fed the rounded values. Bad targets throw before any output is
// written.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/Numerics.h"
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

constexpr std::int64_t kIgnoreIndex = -100;

/// Rounds to BF16 in place: the BF16 step's storage.
void roundBf16(float *data, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    data[i] = roundToBf16(data[i]);
}
void roundNothing(double *, std::int64_t) {}

/// The unfused composition's loss, dx and dw.
template <typename T> struct Unfused {
  double loss;
  std::vector<T> dx, dw;
};

template <typename T>
Unfused<T> unfused(const std::vector<T> &x, const std::vector<T> &w,
                   const std::vector<std::int32_t> &targets, double dloss,
                   std::int64_t rows, std::int64_t hidden, std::int64_t vocab,
                   void (*roundLogits)(T *, std::int64_t),
                   void (*roundGrad)(T *, std::int64_t)) {
  auto logits = poisoned<T>(rows * vocab);
  gemm<T>(x.data(), w.data(), logits.data(), 1, rows, vocab, hidden, false,
          true, nullptr, false);
  if (roundLogits)
    roundLogits(logits.data(), rows * vocab);
  Unfused<T> result;
  result.loss =
      crossEntropy<T>(logits.data(), targets.data(), rows, vocab, kIgnoreIndex);
  auto dlogits = poisoned<T>(rows * vocab);
  crossEntropyGrad<T>(dloss, logits.data(), targets.data(), dlogits.data(),
                      rows, vocab, kIgnoreIndex);
  if (roundGrad)
    roundGrad(dlogits.data(), rows * vocab);
  result.dx = poisoned<T>(rows * hidden);
  gemm<T>(dlogits.data(), w.data(), result.dx.data(), 1, rows, hidden, vocab,
          false, false, nullptr, false);
  result.dw = poisoned<T>(vocab * hidden);
  gemm<T>(dlogits.data(), x.data(), result.dw.data(), 1, vocab, hidden, rows,
          true, false, nullptr, false);
  return result;
}

/// Targets with every fourth row (from row 2) ignored.
std::vector<std::int32_t> someIgnored(std::int64_t rows, std::int64_t vocab) {
  auto targets = randomIds(rows, vocab);
  for (std::int64_t r = 2; r < rows; r += 4)
    targets[r] = kIgnoreIndex;
  return targets;
}

template <typename T> class LinearCrossEntropyTest : public KernelTest {};
TYPED_TEST_SUITE(LinearCrossEntropyTest, KernelTypes, KernelTypeNames);

/// Every chunk size, a partial last chunk included, against the unfused
/// kernels.
TYPED_TEST(LinearCrossEntropyTest, MatchesTheUnfusedComposition) {
  using T = TypeParam;
  const std::int64_t rows = 37, hidden = 24, vocab = 301;
  auto x = randomVector<T>(rows * hidden, -2, 2);
  auto w = randomVector<T>(vocab * hidden, -1, 1);
  auto targets = someIgnored(rows, vocab);
  const double dloss = 0.625;
  Unfused<T> ref =
      unfused<T>(x, w, targets, dloss, rows, hidden, vocab, nullptr, nullptr);
  for (std::int64_t chunk : {1, 5, 16, 36, 37}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    auto scratch = poisoned<T>(chunk * vocab);
    auto dx = poisoned<T>(rows * hidden), dw = poisoned<T>(vocab * hidden);
    double loss = linearCrossEntropy<T>(
        x.data(), w.data(), targets.data(), dloss, scratch.data(), dx.data(),
        dw.data(), rows, hidden, vocab, chunk, kIgnoreIndex, nullptr, nullptr);
    EXPECT_LE(std::abs(loss - ref.loss), kForwardTolerance<T> * ref.loss);
    EXPECT_LE(relativeError(dx, ref.dx), kForwardTolerance<T>);
    EXPECT_LE(relativeError(dw, ref.dw), kForwardTolerance<T>);
    if (chunk == rows) { // one chunk: the unfused kernels' calls
      EXPECT_EQ(loss, ref.loss);
      EXPECT_EQ(dx, ref.dx);
      EXPECT_EQ(dw, ref.dw);
    }
  }
}

/// The BF16 step: the logits and their gradient rounded where the unfused
/// step stores them, the rest FP32; with FP32 logits (fp32_logits) only the
/// gradient the BF16 GEMMs read.
TEST(LinearCrossEntropyBf16Test, RoundsWhereTheUnfusedStepStores) {
  seedFromTestName();
  const std::int64_t rows = 20, hidden = 16, vocab = 130;
  auto x = randomVector<float>(rows * hidden, -2, 2);
  auto w = randomVector<float>(vocab * hidden, -1, 1);
  roundBf16(x.data(), x.size());
  roundBf16(w.data(), w.size());
  auto targets = someIgnored(rows, vocab);
  for (bool fp32Logits : {false, true}) {
    SCOPED_TRACE(fp32Logits ? "fp32 logits" : "bf16 logits");
    auto roundLogits = fp32Logits ? nullptr : roundBf16;
    Unfused<float> ref = unfused<float>(x, w, targets, 1.0, rows, hidden, vocab,
                                        roundLogits, roundBf16);
    auto scratch = poisoned<float>(8 * vocab);
    auto dx = poisoned<float>(rows * hidden),
         dw = poisoned<float>(vocab * hidden);
    double loss = linearCrossEntropy<float>(
        x.data(), w.data(), targets.data(), 1.0, scratch.data(), dx.data(),
        dw.data(), rows, hidden, vocab, 8, kIgnoreIndex, roundLogits,
        roundBf16);
    EXPECT_LE(std::abs(loss - ref.loss), kForwardTolerance<float> * ref.loss);
    EXPECT_LE(relativeError(dx, ref.dx), kForwardTolerance<float>);
    EXPECT_LE(relativeError(dw, ref.dw), kForwardTolerance<float>);
  }
}

/// Every row ignored: zero loss, zero gradients.
TEST(LinearCrossEntropyEdgeTest, AllIgnoredGivesZeros) {
  seedFromTestName();
  const std::int64_t rows = 6, hidden = 4, vocab = 9;
  auto x = randomVector<double>(rows * hidden);
  auto w = randomVector<double>(vocab * hidden);
  std::vector<std::int32_t> targets(rows, kIgnoreIndex);
  auto scratch = poisoned<double>(4 * vocab);
  auto dx = poisoned<double>(rows * hidden),
       dw = poisoned<double>(vocab * hidden);
  double loss = linearCrossEntropy<double>(
      x.data(), w.data(), targets.data(), 1.0, scratch.data(), dx.data(),
      dw.data(), rows, hidden, vocab, 4, kIgnoreIndex, roundNothing,
      roundNothing);
  EXPECT_EQ(loss, 0.0);
  EXPECT_EQ(dx, std::vector<double>(rows * hidden, 0.0));
  EXPECT_EQ(dw, std::vector<double>(vocab * hidden, 0.0));
}

TEST(LinearCrossEntropyEdgeTest, BadTargetThrowsBeforeWriting) {
  seedFromTestName();
  const std::int64_t rows = 3, hidden = 4, vocab = 5;
  auto x = randomVector<float>(rows * hidden);
  auto w = randomVector<float>(vocab * hidden);
  std::vector<std::int32_t> targets = {0, 5, 1};
  auto scratch = poisoned<float>(rows * vocab);
  auto dx = poisoned<float>(rows * hidden),
       dw = poisoned<float>(vocab * hidden);
  EXPECT_THAT(
      [&] {
        linearCrossEntropy<float>(
            x.data(), w.data(), targets.data(), 1.0, scratch.data(), dx.data(),
            dw.data(), rows, hidden, vocab, 2, kIgnoreIndex, nullptr, nullptr);
      },
      ThrowsMessage<Error>(HasSubstr("target 5 at row 1 is outside the "
                                     "vocabulary")));
  EXPECT_TRUE(std::isnan(dx[0]));
  EXPECT_THAT(
      [&] {
        linearCrossEntropy<float>(
            x.data(), w.data(), targets.data(), 1.0, scratch.data(), dx.data(),
            dw.data(), rows, hidden, vocab, 0, kIgnoreIndex, nullptr, nullptr);
      },
      ThrowsMessage<Error>(HasSubstr("chunkRows must be positive, got 0")));
}

} // namespace
