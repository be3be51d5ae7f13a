//===- AttentionTest.cpp - Exact attention: GQA, causal, packed documents -===//
//
// The forward kernel (out and lse) against an FP64 reference that masks the
// full score matrix token by token; dq, dk, dv against finite differences in
// FP64; the FP32 backward against the FP64 one; malformed cu_seqlens.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/host/Kernels.h"

#include "KernelTestSupport.h"

#include <gmock/gmock.h>

#include <cmath>
#include <sstream>

using namespace kiln::rt;
using namespace kiln::rt::host;
using namespace kiln::rt::host::testing;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

/// lse is FP32 for every T: one rounding to 2^-24 relative.
constexpr double kLseTolerance = 1e-6;

/// The document of flattened token t: its batch row, or its cu_seqlens
/// interval.
std::int64_t documentOf(const AttentionCase &c, std::int64_t t) {
  if (c.cuSeqlens.empty())
    return t / c.seq;
  std::int64_t doc = 0;
  while (!(c.cuSeqlens[doc] <= t && t < c.cuSeqlens[doc + 1]))
    ++doc;
  return doc;
}

/// Softmax attention over the full [tokens, tokens] score matrix with every
/// masked entry excluded, in FP64.
void referenceAttention(const AttentionCase &c, const std::vector<double> &q,
                        const std::vector<double> &k,
                        const std::vector<double> &v, std::vector<double> &out,
                        std::vector<double> &lse) {
  std::int64_t tokens = c.batch * c.seq, d = c.headDim;
  out.assign(c.qSize(), 0.0);
  lse.assign(c.lseSize(), 0.0);
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t h = 0; h < c.heads; ++h) {
      std::int64_t kvh = h / (c.heads / c.kvHeads);
      std::vector<double> scores(tokens);
      std::vector<bool> visible(tokens);
      double max = -INFINITY;
      for (std::int64_t j = 0; j < tokens; ++j) {
        visible[j] =
            documentOf(c, j) == documentOf(c, t) && (!c.causal || j <= t);
        if (!visible[j])
          continue;
        double score = 0;
        for (std::int64_t e = 0; e < d; ++e)
          score +=
              q[(t * c.heads + h) * d + e] * k[(j * c.kvHeads + kvh) * d + e];
        scores[j] = score * c.scale();
        max = std::max(max, scores[j]);
      }
      double sum = 0;
      for (std::int64_t j = 0; j < tokens; ++j)
        if (visible[j])
          sum += std::exp(scores[j] - max);
      for (std::int64_t j = 0; j < tokens; ++j)
        if (visible[j])
          for (std::int64_t e = 0; e < d; ++e)
            out[(t * c.heads + h) * d + e] += std::exp(scores[j] - max) / sum *
                                              v[(j * c.kvHeads + kvh) * d + e];
      lse[(t / c.seq * c.heads + h) * c.seq + t % c.seq] = max + std::log(sum);
    }
}

template <typename T> void expectForwardMatches(const AttentionCase &c) {
  SCOPED_TRACE(c.describe());
  auto q = randomVector<T>(c.qSize(), -2.0, 2.0);
  auto k = randomVector<T>(c.kvSize(), -2.0, 2.0);
  auto v = randomVector<T>(c.kvSize());
  auto out = poisoned<T>(c.qSize());
  auto lse = poisoned<float>(c.lseSize());
  attentionForward(q.data(), k.data(), v.data(), out.data(), lse.data(),
                   c.batch, c.seq, c.heads, c.kvHeads, c.headDim, c.scale(),
                   c.causal, c.cu(), c.numCu());
  std::vector<double> refOut, refLse;
  referenceAttention(c, toDouble(q), toDouble(k), toDouble(v), refOut, refLse);
  EXPECT_LE(relativeError(out, refOut), kForwardTolerance<T>);
  EXPECT_LE(relativeError(lse, refLse), kLseTolerance);
}

template <typename T> class AttentionTest : public KernelTest {};
TYPED_TEST_SUITE(AttentionTest, KernelTypes, KernelTypeNames);

// Causal and full, GQA ratios 1, 2 and 4, head dims 8 and 16, sequences of
// 1 to 20 tokens, one and two batch rows.
TYPED_TEST(AttentionTest, MatchesReference) {
  for (bool causal : {false, true})
    for (std::int64_t ratio : {1, 2, 4})
      for (std::int64_t kvHeads : {1, 2})
        for (std::int64_t headDim : {8, 16})
          for (std::int64_t seq : {1, 2, 7, 13, 20})
            for (std::int64_t batch : {1, 2})
              expectForwardMatches<TypeParam>(
                  {batch, seq, ratio * kvHeads, kvHeads, headDim, causal, {}});
}

// Packed documents of uneven lengths, a one-token document, an empty one,
// and documents that continue from one batch row into the next (the
// boundaries are in the flattened stream).
TYPED_TEST(AttentionTest, PackedDocumentsMatchReference) {
  const std::vector<std::int32_t> packings[] = {
      {0, 3, 4, 13, 20},        // batch 2 x seq 10: [4, 13) spans rows
      {0, 20},                  // one document over both rows
      {0, 1, 9, 9, 15, 20},     // one-token and empty documents
      {0, 10, 11, 12, 19, 20}}; // row-aligned, then tiny ones
  for (const auto &cu : packings)
    for (bool causal : {false, true})
      for (std::int64_t ratio : {1, 2, 4})
        for (std::int64_t headDim : {8, 16})
          expectForwardMatches<TypeParam>(
              {2, 10, 2 * ratio, 2, headDim, causal, cu});
}

// cu_seqlens at the batch rows means the same as no cu_seqlens, bit for bit.
TYPED_TEST(AttentionTest, RowAlignedDocumentsEqualBatchRows) {
  using T = TypeParam;
  AttentionCase c{3, 7, 4, 2, 8, true, {0, 7, 14, 21}};
  auto q = randomVector<T>(c.qSize());
  auto k = randomVector<T>(c.kvSize());
  auto v = randomVector<T>(c.kvSize());
  auto out1 = poisoned<T>(c.qSize()), out2 = poisoned<T>(c.qSize());
  auto lse1 = poisoned<float>(c.lseSize()), lse2 = poisoned<float>(c.lseSize());
  attentionForward(q.data(), k.data(), v.data(), out1.data(), lse1.data(),
                   c.batch, c.seq, c.heads, c.kvHeads, c.headDim, c.scale(),
                   c.causal, c.cu(), c.numCu());
  attentionForward(q.data(), k.data(), v.data(), out2.data(), lse2.data(),
                   c.batch, c.seq, c.heads, c.kvHeads, c.headDim, c.scale(),
                   c.causal, nullptr, 0);
  EXPECT_EQ(out1, out2);
  EXPECT_EQ(lse1, lse2);
}

/// The cases the gradient checks cover: full and causal, GQA 1, 2 and 4,
/// head dims 8 and 16, packed documents (one across the row boundary).
const std::vector<AttentionCase> kGradCases = {
    {2, 5, 2, 2, 8, false, {}},
    {2, 5, 4, 2, 8, true, {}},
    {1, 9, 4, 1, 8, true, {0, 2, 7, 9}},
    {2, 5, 4, 1, 16, false, {0, 3, 8, 10}},
    {2, 5, 4, 2, 8, true, {0, 1, 6, 10}},
};

class AttentionGradTest : public KernelTest {};

TEST_F(AttentionGradTest, MatchesFiniteDifferences) {
  for (const AttentionCase &c : kGradCases) {
    SCOPED_TRACE(c.describe());
    auto q = randomVector<double>(c.qSize());
    auto k = randomVector<double>(c.kvSize());
    auto v = randomVector<double>(c.kvSize());
    auto r = randomVector<double>(c.qSize()); // L = <r, out>
    auto out = poisoned<double>(c.qSize());
    auto lse = poisoned<float>(c.lseSize());
    auto forward = [&] {
      attentionForward(q.data(), k.data(), v.data(), out.data(), lse.data(),
                       c.batch, c.seq, c.heads, c.kvHeads, c.headDim, c.scale(),
                       c.causal, c.cu(), c.numCu());
      return dot(r, out);
    };
    forward();
    auto dq = poisoned<double>(c.qSize());
    auto dk = poisoned<double>(c.kvSize());
    auto dv = poisoned<double>(c.kvSize());
    attentionBackward(r.data(), q.data(), k.data(), v.data(), out.data(),
                      lse.data(), dq.data(), dk.data(), dv.data(), c.batch,
                      c.seq, c.heads, c.kvHeads, c.headDim, c.scale(), c.causal,
                      c.cu(), c.numCu());
    EXPECT_GRADIENT_MATCHES(dq, q, forward);
    EXPECT_GRADIENT_MATCHES(dk, k, forward);
    EXPECT_GRADIENT_MATCHES(dv, v, forward);
  }
}

// The FP32 backward against the FP64 backward on the same inputs, each with
// its own forward's out and lse.
TEST_F(AttentionGradTest, FloatMatchesDouble) {
  std::vector<AttentionCase> cases = kGradCases;
  cases.push_back({2, 64, 8, 2, 16, true, {0, 40, 41, 100, 128}});
  for (const AttentionCase &c : cases) {
    SCOPED_TRACE(c.describe());
    auto q = randomVector<float>(c.qSize());
    auto k = randomVector<float>(c.kvSize());
    auto v = randomVector<float>(c.kvSize());
    auto dout = randomVector<float>(c.qSize());
    auto qd = toDouble(q), kd = toDouble(k), vd = toDouble(v),
         doutd = toDouble(dout);
    auto run = [&](auto &q, auto &k, auto &v, auto &dout, auto &dq, auto &dk,
                   auto &dv) {
      using T = typename std::decay_t<decltype(q)>::value_type;
      auto out = poisoned<T>(c.qSize());
      auto lse = poisoned<float>(c.lseSize());
      attentionForward(q.data(), k.data(), v.data(), out.data(), lse.data(),
                       c.batch, c.seq, c.heads, c.kvHeads, c.headDim, c.scale(),
                       c.causal, c.cu(), c.numCu());
      attentionBackward(dout.data(), q.data(), k.data(), v.data(), out.data(),
                        lse.data(), dq.data(), dk.data(), dv.data(), c.batch,
                        c.seq, c.heads, c.kvHeads, c.headDim, c.scale(),
                        c.causal, c.cu(), c.numCu());
    };
    auto dq = poisoned<float>(c.qSize());
    auto dk = poisoned<float>(c.kvSize()), dv = poisoned<float>(c.kvSize());
    auto dqd = poisoned<double>(c.qSize());
    auto dkd = poisoned<double>(c.kvSize()), dvd = poisoned<double>(c.kvSize());
    run(q, k, v, dout, dq, dk, dv);
    run(qd, kd, vd, doutd, dqd, dkd, dvd);
    EXPECT_LE(relativeError(dq, dqd), kForwardTolerance<float>);
    EXPECT_LE(relativeError(dk, dkd), kForwardTolerance<float>);
    EXPECT_LE(relativeError(dv, dvd), kForwardTolerance<float>);
  }
}

/// Runs the forward on a batch 2 x seq 10 problem with `cu` as cu_seqlens.
void forwardWith(const std::vector<std::int32_t> &cu) {
  AttentionCase c{2, 10, 2, 1, 8, true, cu};
  std::vector<float> q(c.qSize(), 0.5f), kv(c.kvSize(), 0.5f), out(c.qSize());
  std::vector<float> lse(c.lseSize());
  attentionForward(q.data(), kv.data(), kv.data(), out.data(), lse.data(),
                   c.batch, c.seq, c.heads, c.kvHeads, c.headDim, c.scale(),
                   c.causal, cu.data(), static_cast<std::int64_t>(cu.size()));
}

TEST(AttentionErrorTest, MalformedCuSeqlensThrows) {
  EXPECT_THAT(
      [] {
        forwardWith({0, 12, 9, 20});
      },
      ThrowsMessage<Error>(
          HasSubstr("attentionForward: cu_seqlens[2] = 9 is less than "
                    "cu_seqlens[1] = 12")));
  EXPECT_THAT(
      [] {
        forwardWith({2, 10, 20});
      },
      ThrowsMessage<Error>(HasSubstr("cu_seqlens must start at 0, got "
                                     "cu_seqlens[0] = 2")));
  EXPECT_THAT(
      [] {
        forwardWith({0, 10, 18});
      },
      ThrowsMessage<Error>(HasSubstr("cu_seqlens must end at batch * "
                                     "seq = 20, got cu_seqlens[2] = "
                                     "18")));
  EXPECT_THAT(
      [] {
        forwardWith({0, 25, 20});
      },
      ThrowsMessage<Error>(HasSubstr("cu_seqlens[1] = 25 is outside "
                                     "[0, 20]")));
  EXPECT_THAT(
      [] {
        forwardWith({0, -3, 20});
      },
      ThrowsMessage<Error>(HasSubstr("cu_seqlens[1] = -3 is outside "
                                     "[0, 20]")));
  EXPECT_THAT([] { forwardWith({0}); },
              ThrowsMessage<Error>(HasSubstr("cu_seqlens needs at least 2 "
                                             "entries")));
}

TEST(AttentionErrorTest, BackwardChecksCuSeqlens) {
  AttentionCase c{1, 4, 1, 1, 8, false, {0, 3, 2, 4}};
  std::vector<double> buf(c.qSize(), 0.25);
  std::vector<float> lse(c.lseSize(), 0.0f);
  EXPECT_THAT(
      [&] {
        attentionBackward(buf.data(), buf.data(), buf.data(), buf.data(),
                          buf.data(), lse.data(), buf.data(), buf.data(),
                          buf.data(), c.batch, c.seq, c.heads, c.kvHeads,
                          c.headDim, c.scale(), c.causal, c.cu(), c.numCu());
      },
      ThrowsMessage<Error>(HasSubstr("attentionBackward: cu_seqlens[2] = 2 is "
                                     "less than cu_seqlens[1] = 3")));
}

TEST(AttentionErrorTest, KvHeadsMustDivideHeads) {
  std::vector<float> buf(3 * 8 * 2), lse(3 * 2);
  EXPECT_THAT(
      [&] {
        attentionForward(buf.data(), buf.data(), buf.data(), buf.data(),
                         lse.data(), 1, 2, 3, 2, 8, 1.0, false, nullptr, 0);
      },
      ThrowsMessage<Error>(HasSubstr("expects kvHeads (2) to be positive and "
                                     "to divide heads (3)")));
}

} // namespace
