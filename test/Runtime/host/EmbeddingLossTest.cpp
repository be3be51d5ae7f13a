//===- EmbeddingLossTest.cpp - Embedding, cross-entropy, tied weights -----===//
//
// Lookup and scatter-add against loops; the loss against an FP64 reference
// with ignored rows; its gradient against finite differences; a tied table
// (embedding and lm_head sharing one weight, as GPT-2) whose two gradient
// contributions together match finite differences of the whole model; and
// the errors bad token ids and targets raise.
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

/// Hugging Face's (and torch's) default ignore_index.
constexpr std::int64_t kIgnoreIndex = -100;

/// Targets for `rows` rows with every third row (from row 1) ignored.
std::vector<std::int32_t> targetsWithIgnored(std::int64_t rows,
                                             std::int64_t vocab) {
  auto targets = randomIds(rows, vocab);
  for (std::int64_t r = 1; r < rows; r += 3)
    targets[r] = kIgnoreIndex;
  return targets;
}

double referenceCrossEntropy(const std::vector<double> &logits,
                             const std::vector<std::int32_t> &targets,
                             std::int64_t rows, std::int64_t vocab) {
  double total = 0;
  std::int64_t count = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (targets[r] == kIgnoreIndex)
      continue;
    double sum = 0;
    for (std::int64_t j = 0; j < vocab; ++j)
      sum += std::exp(logits[r * vocab + j]);
    total += std::log(sum) - logits[r * vocab + targets[r]];
    ++count;
  }
  return count ? total / count : 0.0;
}

template <typename T> class EmbeddingLossTest : public KernelTest {};
TYPED_TEST_SUITE(EmbeddingLossTest, KernelTypes, KernelTypeNames);

TYPED_TEST(EmbeddingLossTest, EmbeddingCopiesRows) {
  using T = TypeParam;
  for (auto [numIds, vocab, dim] :
       {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 1, 1},
        {9, 5, 7},
        {300, 50, 64}}) {
    auto table = randomVector<T>(vocab * dim);
    auto ids = randomIds(numIds, vocab);
    auto y = poisoned<T>(numIds * dim);
    embedding(table.data(), ids.data(), y.data(), numIds, vocab, dim);
    std::vector<T> ref;
    for (std::int32_t id : ids)
      ref.insert(ref.end(), table.begin() + id * dim,
                 table.begin() + (id + 1) * dim);
    EXPECT_EQ(y, ref);
  }
}

// Repeated ids add up; rows no id names become zero.
TYPED_TEST(EmbeddingLossTest, EmbeddingGradScatterAdds) {
  using T = TypeParam;
  for (auto [numIds, vocab, dim] :
       {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 1, 1},
        {9, 5, 7},
        {40, 200, 3},
        {400, 60, 96}}) {
    auto dy = randomVector<T>(numIds * dim);
    auto ids = randomIds(numIds, vocab);
    auto dtable = poisoned<T>(vocab * dim);
    embeddingGrad(dy.data(), ids.data(), dtable.data(), numIds, vocab, dim);
    std::vector<double> ref(vocab * dim, 0.0);
    for (std::int64_t i = 0; i < numIds; ++i)
      for (std::int64_t d = 0; d < dim; ++d)
        ref[ids[i] * dim + d] += dy[i * dim + d];
    EXPECT_LE(relativeError(dtable, ref), kForwardTolerance<T>)
        << numIds << " ids, vocab " << vocab << ", dim " << dim;
  }
}

TYPED_TEST(EmbeddingLossTest, CrossEntropyMatchesReference) {
  using T = TypeParam;
  for (auto [rows, vocab] : {std::pair<std::int64_t, std::int64_t>{1, 1},
                             {1, 7},
                             {10, 13},
                             {64, 1000}}) {
    // Spread logits: a softmax far from uniform.
    auto logits = randomVector<T>(rows * vocab, -8.0, 8.0);
    auto targets = targetsWithIgnored(rows, vocab);
    double loss =
        crossEntropy(logits.data(), targets.data(), rows, vocab, kIgnoreIndex);
    double ref = referenceCrossEntropy(toDouble(logits), targets, rows, vocab);
    EXPECT_NEAR(loss, ref, kForwardTolerance<T> * std::abs(ref))
        << rows << "x" << vocab;
  }
}

TYPED_TEST(EmbeddingLossTest, CrossEntropyOfIgnoredRowsIsZero) {
  using T = TypeParam;
  auto logits = randomVector<T>(3 * 5);
  std::vector<std::int32_t> targets(3, kIgnoreIndex);
  EXPECT_EQ(crossEntropy(logits.data(), targets.data(), 3, 5, kIgnoreIndex),
            0.0);
  auto dlogits = poisoned<T>(3 * 5);
  crossEntropyGrad(1.0, logits.data(), targets.data(), dlogits.data(), 3, 5,
                   kIgnoreIndex);
  EXPECT_EQ(dlogits, std::vector<T>(3 * 5, T(0)));
}

class LossGradTest : public KernelTest {};

// dloss = 0.7 scales the gradient; ignored rows get none.
TEST_F(LossGradTest, CrossEntropyMatchesFiniteDifferences) {
  std::int64_t rows = 7, vocab = 11;
  auto logits = randomVector<double>(rows * vocab, -3.0, 3.0);
  auto targets = targetsWithIgnored(rows, vocab);
  double dloss = 0.7;
  auto loss = [&] {
    return dloss * crossEntropy(logits.data(), targets.data(), rows, vocab,
                                kIgnoreIndex);
  };
  auto dlogits = poisoned<double>(rows * vocab);
  crossEntropyGrad(dloss, logits.data(), targets.data(), dlogits.data(), rows,
                   vocab, kIgnoreIndex);
  EXPECT_GRADIENT_MATCHES(dlogits, logits, loss);
  for (std::int64_t j = 0; j < vocab; ++j)
    EXPECT_EQ(dlogits[1 * vocab + j], 0.0) << "ignored row 1";
}

TEST_F(LossGradTest, CrossEntropyFloatMatchesDouble) {
  std::int64_t rows = 64, vocab = 1000;
  auto logits = randomVector<float>(rows * vocab, -8.0, 8.0);
  auto targets = targetsWithIgnored(rows, vocab);
  auto logitsd = toDouble(logits);
  auto dlogits = poisoned<float>(rows * vocab);
  auto dlogitsd = poisoned<double>(rows * vocab);
  crossEntropyGrad(1.0, logits.data(), targets.data(), dlogits.data(), rows,
                   vocab, kIgnoreIndex);
  crossEntropyGrad(1.0, logitsd.data(), targets.data(), dlogitsd.data(), rows,
                   vocab, kIgnoreIndex);
  EXPECT_LE(relativeError(dlogits, dlogitsd), kForwardTolerance<float>);
}

// GPT-2 ties wte to lm_head: logits = embedding(table, ids) table^T. The
// table's gradient is embeddingGrad(dh) plus the lm_head weight gradient
// dlogits^T h (added with gemm's accumulate); together they must match
// finite differences of the loss of the composed model.
TEST_F(LossGradTest, TiedEmbeddingMatchesFiniteDifferences) {
  std::int64_t vocab = 11, dim = 6, tokens = 9;
  auto table = randomVector<double>(vocab * dim);
  std::vector<std::int32_t> ids = {3, 7, 3, 0, 10, 7, 7, 2, 5}; // repeats
  auto targets = targetsWithIgnored(tokens, vocab);
  auto h = poisoned<double>(tokens * dim);
  auto logits = poisoned<double>(tokens * vocab);
  auto loss = [&] {
    embedding(table.data(), ids.data(), h.data(), tokens, vocab, dim);
    gemm(h.data(), table.data(), logits.data(), 1, tokens, vocab, dim, false,
         true, (const double *)nullptr, false);
    return crossEntropy(logits.data(), targets.data(), tokens, vocab,
                        kIgnoreIndex);
  };
  loss();

  auto dlogits = poisoned<double>(tokens * vocab);
  crossEntropyGrad(1.0, logits.data(), targets.data(), dlogits.data(), tokens,
                   vocab, kIgnoreIndex);
  auto dh = poisoned<double>(tokens * dim);
  gemm(dlogits.data(), table.data(), dh.data(), 1, tokens, dim, vocab, false,
       false, (const double *)nullptr, false);
  auto dtable = poisoned<double>(vocab * dim);
  embeddingGrad(dh.data(), ids.data(), dtable.data(), tokens, vocab, dim);
  gemm(dlogits.data(), h.data(), dtable.data(), 1, vocab, dim, tokens, true,
       false, (const double *)nullptr, true);
  EXPECT_GRADIENT_MATCHES(dtable, table, loss);
}

TEST(EmbeddingErrorTest, TokenIdOutsideVocabularyThrows) {
  std::int64_t vocab = 50257;
  std::vector<float> table(vocab, 1.0f), y(16);
  std::vector<std::int32_t> ids(16, 42);
  ids[12] = 70000;
  EXPECT_THAT(
      [&] { embedding(table.data(), ids.data(), y.data(), 16, vocab, 1); },
      ThrowsMessage<Error>(HasSubstr("token id 70000 at position 12 is outside "
                                     "the vocabulary (vocab_size 50257)")));
  EXPECT_THAT(
      [&] { embeddingGrad(y.data(), ids.data(), table.data(), 16, vocab, 1); },
      ThrowsMessage<Error>(HasSubstr("token id 70000 at position 12")));
  ids[12] = 42;
  ids[3] = -1;
  EXPECT_THAT(
      [&] { embedding(table.data(), ids.data(), y.data(), 16, vocab, 1); },
      ThrowsMessage<Error>(HasSubstr("token id -1 at position 3 is outside the "
                                     "vocabulary (vocab_size 50257)")));
}

TEST(CrossEntropyErrorTest, TargetOutsideVocabularyThrows) {
  std::vector<double> logits(5 * 100, 0.5), dlogits(5 * 100);
  std::vector<std::int32_t> targets = {4, kIgnoreIndex, 99, 100, 0};
  EXPECT_THAT(
      [&] {
        crossEntropy(logits.data(), targets.data(), 5, 100, kIgnoreIndex);
      },
      ThrowsMessage<Error>(HasSubstr(
          "crossEntropy: target 100 at row 3 is outside the vocabulary "
          "(vocab_size 100) and is not ignore_index (-100)")));
  EXPECT_THAT(
      [&] {
        crossEntropyGrad(1.0, logits.data(), targets.data(), dlogits.data(), 5,
                         100, kIgnoreIndex);
      },
      ThrowsMessage<Error>(HasSubstr("crossEntropyGrad: target 100 at row 3")));
  // -100 is only ignored while it is the ignore_index.
  EXPECT_THAT([&] { crossEntropy(logits.data(), targets.data(), 3, 100, -1); },
              ThrowsMessage<Error>(HasSubstr("target -100 at row 1")));
}

} // namespace
