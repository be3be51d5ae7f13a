//===- FlashAttentionTest.cpp - Tiled attention against FP64 references ---===//
//
// flashAttentionForward (out, lse) and flashAttentionBackward (dq, dk, dv)
// against plain-loop FP64 references over sequence lengths around the block
// sizes, head dims 64 and 128, GQA ratios 1, 4 and 8, causal and full
// attention, packed documents and four block shapes; agreement with the
// reference kernels attentionForward / attentionBackward; the number of
// tiles causality skips; bitwise determinism over thread counts; and that
// the kernels' memory does not grow with seq^2.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/Numerics.h"
#include "runtime/host/Kernels.h"

#include "KernelTestSupport.h"

#include <gmock/gmock.h>
#include <omp.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>

using namespace kiln::rt;
using namespace kiln::rt::host;
using namespace kiln::rt::host::testing;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

/// out against the FP64 reference, max |got - ref| / max |ref|. FP64 differs
/// from the reference only in summation order; FP32 rounds the scores, the
/// exponentials and the tile accumulators to 2^-24 over up to 200 keys.
template <typename T>
constexpr double kFlashForwardTolerance =
    std::is_same_v<T, float> ? 2e-5 : 1e-10;

/// dq, dk, dv against the FP64 reference: FP32 sums up to 200 queries times
/// 8 heads of products that each carry a few roundings.
template <typename T>
constexpr double kFlashGradTolerance = std::is_same_v<T, float> ? 1e-4 : 1e-10;

/// lse is FP32 for every T: one rounding to 2^-24 relative.
constexpr double kLseTolerance = 1e-6;

/// The block shapes every accuracy test runs: square, tall, wide and small
/// (many tiles, many partial ones).
const FlashBlocks kBlockShapes[] = {{64, 64}, {32, 128}, {128, 32}, {16, 16}};

std::string describe(FlashBlocks blocks) {
  return "blocks " + std::to_string(blocks.blockQ) + "x" +
         std::to_string(blocks.blockK);
}

/// The keys flattened token t sees: [begin, end) of its document (its batch
/// row, or its cu_seqlens interval), cut after t when causal.
std::pair<std::int64_t, std::int64_t> visibleKeys(const AttentionCase &c,
                                                  std::int64_t t) {
  std::int64_t begin = t / c.seq * c.seq, end = begin + c.seq;
  if (!c.cuSeqlens.empty()) {
    std::size_t doc = 0;
    while (!(c.cuSeqlens[doc] <= t && t < c.cuSeqlens[doc + 1]))
      ++doc;
    begin = c.cuSeqlens[doc];
    end = c.cuSeqlens[doc + 1];
  }
  return {begin, c.causal ? t + 1 : end};
}

/// Inputs drawn in FP32, so that the same values serve both dtypes and one
/// FP64 reference checks both.
struct FlashInputs {
  std::vector<float> q, k, v, dout;

  explicit FlashInputs(const AttentionCase &c)
      : q(randomVector<float>(c.qSize(), -2.0, 2.0)),
        k(randomVector<float>(c.kvSize(), -2.0, 2.0)),
        v(randomVector<float>(c.kvSize())),
        dout(randomVector<float>(c.qSize())) {}
};

/// Softmax attention in FP64, one query row at a time over its visible keys.
void referenceForward(const AttentionCase &c, const FlashInputs &in,
                      std::vector<double> &out, std::vector<double> &lse) {
  std::int64_t d = c.headDim, group = c.heads / c.kvHeads;
  out.assign(c.qSize(), 0.0);
  lse.assign(c.lseSize(), 0.0);
  std::vector<double> scores(c.tokens());
  for (std::int64_t t = 0; t < c.tokens(); ++t)
    for (std::int64_t h = 0; h < c.heads; ++h) {
      auto [begin, end] = visibleKeys(c, t);
      const float *qt = &in.q[(t * c.heads + h) * d];
      double max = -INFINITY;
      for (std::int64_t j = begin; j < end; ++j) {
        const float *kj = &in.k[(j * c.kvHeads + h / group) * d];
        double score = 0;
        for (std::int64_t e = 0; e < d; ++e)
          score += double(qt[e]) * double(kj[e]);
        scores[j] = c.scale() * score;
        max = std::max(max, scores[j]);
      }
      double sum = 0;
      for (std::int64_t j = begin; j < end; ++j)
        sum += std::exp(scores[j] - max);
      double *ot = &out[(t * c.heads + h) * d];
      for (std::int64_t j = begin; j < end; ++j) {
        double p = std::exp(scores[j] - max) / sum;
        const float *vj = &in.v[(j * c.kvHeads + h / group) * d];
        for (std::int64_t e = 0; e < d; ++e)
          ot[e] += p * double(vj[e]);
      }
      lse[c.lseIndex(t, h)] = max + std::log(sum);
    }
}

/// attentionBackward's definition in FP64, from the given out and lse:
/// P = exp(scale q.k - lse), dS = P (dout.v - dout.out), dq = scale dS k,
/// dk = scale dS^T q, dv = P^T dout.
void referenceBackward(const AttentionCase &c, const FlashInputs &in,
                       const std::vector<float> &out,
                       const std::vector<float> &lse, std::vector<double> &dq,
                       std::vector<double> &dk, std::vector<double> &dv) {
  std::int64_t d = c.headDim, group = c.heads / c.kvHeads;
  dq.assign(c.qSize(), 0.0);
  dk.assign(c.kvSize(), 0.0);
  dv.assign(c.kvSize(), 0.0);
  for (std::int64_t t = 0; t < c.tokens(); ++t)
    for (std::int64_t h = 0; h < c.heads; ++h) {
      auto [begin, end] = visibleKeys(c, t);
      std::int64_t qIndex = (t * c.heads + h) * d;
      double rowDot = 0;
      for (std::int64_t e = 0; e < d; ++e)
        rowDot += double(in.dout[qIndex + e]) * double(out[qIndex + e]);
      for (std::int64_t j = begin; j < end; ++j) {
        std::int64_t kvIndex = (j * c.kvHeads + h / group) * d;
        double score = 0, dp = 0;
        for (std::int64_t e = 0; e < d; ++e) {
          score += double(in.q[qIndex + e]) * double(in.k[kvIndex + e]);
          dp += double(in.dout[qIndex + e]) * double(in.v[kvIndex + e]);
        }
        double p = std::exp(c.scale() * score - double(lse[c.lseIndex(t, h)]));
        double ds = c.scale() * p * (dp - rowDot);
        for (std::int64_t e = 0; e < d; ++e) {
          dq[qIndex + e] += ds * double(in.k[kvIndex + e]);
          dk[kvIndex + e] += ds * double(in.q[qIndex + e]);
          dv[kvIndex + e] += p * double(in.dout[qIndex + e]);
        }
      }
    }
}

template <typename T> std::vector<T> as(const std::vector<float> &values) {
  return std::vector<T>(values.begin(), values.end());
}

template <typename T> const char *typeName() {
  return std::is_same_v<T, float> ? "float" : "double";
}

/// The references of one case: the forward's, and the backward's from the
/// reference out and lse rounded to FP32 (exact in both dtypes).
struct FlashReference {
  std::vector<double> out, lse, dq, dk, dv;
  std::vector<float> roundedOut, roundedLse;

  FlashReference(const AttentionCase &c, const FlashInputs &in) {
    referenceForward(c, in, out, lse);
    roundedOut.assign(out.begin(), out.end());
    roundedLse.assign(lse.begin(), lse.end());
    referenceBackward(c, in, roundedOut, roundedLse, dq, dk, dv);
  }
};

/// Runs both flash kernels in T with `blocks` on poisoned outputs and
/// expects them to match the references.
template <typename T>
void expectFlashMatches(const AttentionCase &c, const FlashInputs &in,
                        const FlashReference &ref, FlashBlocks blocks) {
  SCOPED_TRACE(std::string(typeName<T>()) + " " + describe(blocks));
  auto q = as<T>(in.q), k = as<T>(in.k), v = as<T>(in.v);
  auto out = poisoned<T>(c.qSize());
  auto lse = poisoned<float>(c.lseSize());
  flashAttentionForward(q.data(), k.data(), v.data(), out.data(), lse.data(),
                        c.batch, c.seq, c.heads, c.kvHeads, c.headDim,
                        c.scale(), c.causal, c.cu(), c.numCu(), blocks);
  EXPECT_LE(relativeError(out, ref.out), kFlashForwardTolerance<T>);
  EXPECT_LE(relativeError(lse, ref.lse), kLseTolerance);

  auto dout = as<T>(in.dout), refOut = as<T>(ref.roundedOut);
  auto dq = poisoned<T>(c.qSize());
  auto dk = poisoned<T>(c.kvSize()), dv = poisoned<T>(c.kvSize());
  flashAttentionBackward(dout.data(), q.data(), k.data(), v.data(),
                         refOut.data(), ref.roundedLse.data(), dq.data(),
                         dk.data(), dv.data(), c.batch, c.seq, c.heads,
                         c.kvHeads, c.headDim, c.scale(), c.causal, c.cu(),
                         c.numCu(), blocks);
  EXPECT_LE(relativeError(dq, ref.dq), kFlashGradTolerance<T>) << "dq";
  EXPECT_LE(relativeError(dk, ref.dk), kFlashGradTolerance<T>) << "dk";
  EXPECT_LE(relativeError(dv, ref.dv), kFlashGradTolerance<T>) << "dv";
}

/// One reference, checked against both dtypes and every block shape.
void expectFlashMatchesForAllBlocks(const AttentionCase &c) {
  SCOPED_TRACE(c.describe());
  FlashInputs in(c);
  FlashReference ref(c, in);
  for (FlashBlocks blocks : kBlockShapes) {
    expectFlashMatches<float>(c, in, ref, blocks);
    expectFlashMatches<double>(c, in, ref, blocks);
  }
}

//===----------------------------------------------------------------------===//
// Accuracy over the grid
//===----------------------------------------------------------------------===//

/// (seq, headDim, GQA ratio, causal); 8 query heads, so kvHeads 8, 2 or 1.
using GridPoint = std::tuple<std::int64_t, std::int64_t, std::int64_t, bool>;

class FlashGridTest : public KernelTest,
                      public ::testing::WithParamInterface<GridPoint> {};

// Sequences shorter than, equal to and just past one and two blocks, for
// every block shape, both dtypes, forward and backward.
TEST_P(FlashGridTest, MatchesReference) {
  auto [seq, headDim, ratio, causal] = GetParam();
  constexpr std::int64_t heads = 8;
  expectFlashMatchesForAllBlocks(
      {1, seq, heads, heads / ratio, headDim, causal, {}});
}

/// "seq65_hd128_gqa4_causal".
std::string gridPointName(const ::testing::TestParamInfo<GridPoint> &info) {
  auto [seq, headDim, ratio, causal] = info.param;
  std::ostringstream name;
  name << "seq" << seq << "_hd" << headDim << "_gqa" << ratio
       << (causal ? "_causal" : "_full");
  return name.str();
}

INSTANTIATE_TEST_SUITE_P(
    Flash, FlashGridTest,
    ::testing::Combine(::testing::Values(1, 7, 63, 64, 65, 127, 128, 200),
                       ::testing::Values(64, 128), ::testing::Values(1, 4, 8),
                       ::testing::Bool()),
    gridPointName);

class FlashAttentionTest : public KernelTest {};

// Packed documents in batch 2 x seq 100: one-token documents at the start
// and in the middle, an empty one, and [40, 130) continuing from row 0 into
// row 1; one document over both rows; plain batch rows.
TEST_F(FlashAttentionTest, PackedDocumentsMatchReference) {
  const std::vector<std::int32_t> packings[] = {
      {0, 1, 40, 130, 130, 131, 200}, // spans rows; lengths 1 and 0
      {0, 200},                       // one document over both rows
      {}};                            // no cu_seqlens: the batch rows
  for (const auto &cu : packings)
    for (bool causal : {false, true})
      for (auto [heads, kvHeads] : {std::pair{4, 4}, {8, 2}, {8, 1}})
        expectFlashMatchesForAllBlocks(
            {2, 100, heads, kvHeads, 64, causal, cu});
}

// cu_seqlens at the batch rows means the same as no cu_seqlens, bit for bit.
TEST_F(FlashAttentionTest, RowAlignedDocumentsEqualBatchRows) {
  AttentionCase c{3, 70, 4, 2, 64, true, {0, 70, 140, 210}};
  FlashInputs in(c);
  auto run = [&](const std::int32_t *cu, std::int64_t numCu) {
    auto out = poisoned<float>(c.qSize());
    auto lse = poisoned<float>(c.lseSize());
    flashAttentionForward(in.q.data(), in.k.data(), in.v.data(), out.data(),
                          lse.data(), c.batch, c.seq, c.heads, c.kvHeads,
                          c.headDim, c.scale(), c.causal, cu, numCu, {32, 32});
    auto grads = poisoned<float>(c.qSize() + 2 * c.kvSize());
    flashAttentionBackward(
        in.dout.data(), in.q.data(), in.k.data(), in.v.data(), out.data(),
        lse.data(), grads.data(), grads.data() + c.qSize(),
        grads.data() + c.qSize() + c.kvSize(), c.batch, c.seq, c.heads,
        c.kvHeads, c.headDim, c.scale(), c.causal, cu, numCu, {32, 32});
    grads.insert(grads.end(), out.begin(), out.end());
    grads.insert(grads.end(), lse.begin(), lse.end());
    return grads;
  };
  EXPECT_EQ(run(c.cu(), c.numCu()), run(nullptr, 0));
}

//===----------------------------------------------------------------------===//
// Agreement with the reference kernels
//===----------------------------------------------------------------------===//

/// Runs the naive and the flash kernels on the same inputs in T. The
/// backwards both start from the naive forward's out and lse.
template <typename T>
void expectAgreesWithNaive(const AttentionCase &c, FlashBlocks blocks) {
  SCOPED_TRACE(c.describe() + " " + typeName<T>() + " " + describe(blocks));
  FlashInputs in(c);
  auto q = as<T>(in.q), k = as<T>(in.k), v = as<T>(in.v), dout = as<T>(in.dout);
  auto forward = [&](auto kernel) {
    auto out = poisoned<T>(c.qSize());
    auto lse = poisoned<float>(c.lseSize());
    kernel(out.data(), lse.data());
    return std::pair{out, lse};
  };
  auto [naiveOut, naiveLse] = forward([&](T *out, float *lse) {
    attentionForward(q.data(), k.data(), v.data(), out, lse, c.batch, c.seq,
                     c.heads, c.kvHeads, c.headDim, c.scale(), c.causal, c.cu(),
                     c.numCu());
  });
  auto [flashOut, flashLse] = forward([&](T *out, float *lse) {
    flashAttentionForward(q.data(), k.data(), v.data(), out, lse, c.batch,
                          c.seq, c.heads, c.kvHeads, c.headDim, c.scale(),
                          c.causal, c.cu(), c.numCu(), blocks);
  });
  EXPECT_LE(relativeError(flashOut, naiveOut), kFlashForwardTolerance<T>);
  EXPECT_LE(relativeError(flashLse, naiveLse), kLseTolerance);

  auto backward = [&](auto kernel) {
    auto grads = poisoned<T>(c.qSize() + 2 * c.kvSize());
    T *dq = grads.data(), *dk = dq + c.qSize(), *dv = dk + c.kvSize();
    kernel(dq, dk, dv);
    return std::tuple{std::vector<T>(dq, dk), std::vector<T>(dk, dv),
                      std::vector<T>(dv, dv + c.kvSize())};
  };
  auto [naiveDq, naiveDk, naiveDv] = backward([&](T *dq, T *dk, T *dv) {
    attentionBackward(dout.data(), q.data(), k.data(), v.data(),
                      naiveOut.data(), naiveLse.data(), dq, dk, dv, c.batch,
                      c.seq, c.heads, c.kvHeads, c.headDim, c.scale(), c.causal,
                      c.cu(), c.numCu());
  });
  auto [flashDq, flashDk, flashDv] = backward([&](T *dq, T *dk, T *dv) {
    flashAttentionBackward(dout.data(), q.data(), k.data(), v.data(),
                           naiveOut.data(), naiveLse.data(), dq, dk, dv,
                           c.batch, c.seq, c.heads, c.kvHeads, c.headDim,
                           c.scale(), c.causal, c.cu(), c.numCu(), blocks);
  });
  EXPECT_LE(relativeError(flashDq, naiveDq), kFlashGradTolerance<T>) << "dq";
  EXPECT_LE(relativeError(flashDk, naiveDk), kFlashGradTolerance<T>) << "dk";
  EXPECT_LE(relativeError(flashDv, naiveDv), kFlashGradTolerance<T>) << "dv";
}

template <typename T> class FlashAgreementTest : public KernelTest {};
TYPED_TEST_SUITE(FlashAgreementTest, KernelTypes, KernelTypeNames);

TYPED_TEST(FlashAgreementTest, MatchesAttentionKernels) {
  const AttentionCase cases[] = {
      {2, 100, 8, 2, 64, true, {}},
      {2, 100, 4, 4, 128, false, {}},
      {2, 100, 8, 1, 64, true, {0, 1, 37, 150, 151, 200}},
      {1, 257, 4, 2, 64, false, {0, 64, 65, 257}},
  };
  for (const AttentionCase &c : cases)
    for (FlashBlocks blocks : kBlockShapes)
      expectAgreesWithNaive<TypeParam>(c, blocks);
}

//===----------------------------------------------------------------------===//
// Causal tile skipping
//===----------------------------------------------------------------------===//

/// Score tiles of one head that causality hides entirely, by enumeration:
/// the key tile [ks, ..) is skipped for the query tile [qs, qe) of the same
/// document when ks >= qe (every key after every query).
std::int64_t countHiddenTiles(const std::vector<std::int64_t> &bounds,
                              FlashBlocks blocks) {
  std::int64_t hidden = 0;
  for (std::size_t doc = 0; doc + 1 < bounds.size(); ++doc)
    for (std::int64_t qs = bounds[doc]; qs < bounds[doc + 1];
         qs += blocks.blockQ)
      for (std::int64_t ks = bounds[doc]; ks < bounds[doc + 1];
           ks += blocks.blockK)
        hidden += ks >= std::min(qs + blocks.blockQ, bounds[doc + 1]);
  return hidden;
}

/// Runs forward and backward of `c` with `blocks` and returns the skipped
/// tiles each reported.
std::pair<std::int64_t, std::int64_t> skippedTiles(const AttentionCase &c,
                                                   FlashBlocks blocks) {
  FlashInputs in(c);
  auto out = poisoned<float>(c.qSize());
  auto lse = poisoned<float>(c.lseSize());
  flashAttentionForward(in.q.data(), in.k.data(), in.v.data(), out.data(),
                        lse.data(), c.batch, c.seq, c.heads, c.kvHeads,
                        c.headDim, c.scale(), c.causal, c.cu(), c.numCu(),
                        blocks);
  std::int64_t forward = lastSkippedTiles();
  auto grads = poisoned<float>(c.qSize() + 2 * c.kvSize());
  flashAttentionBackward(
      in.dout.data(), in.q.data(), in.k.data(), in.v.data(), out.data(),
      lse.data(), grads.data(), grads.data() + c.qSize(),
      grads.data() + c.qSize() + c.kvSize(), c.batch, c.seq, c.heads, c.kvHeads,
      c.headDim, c.scale(), c.causal, c.cu(), c.numCu(), blocks);
  return {forward, lastSkippedTiles()};
}

// seq 256 in blocks of 64: of the 4 x 4 tiles per head and row, the 6 above
// the diagonal are never computed; the backward skips them in both passes.
TEST_F(FlashAttentionTest, CausalSkipsTilesAboveTheDiagonal) {
  AttentionCase c{2, 256, 4, 2, 16, true, {}};
  auto [forward, backward] = skippedTiles(c, {64, 64});
  EXPECT_EQ(forward, 6 * c.heads * c.batch);
  EXPECT_EQ(backward, 2 * forward);

  c.causal = false;
  auto [fullForward, fullBackward] = skippedTiles(c, {64, 64});
  EXPECT_EQ(fullForward, 0);
  EXPECT_EQ(fullBackward, 0);
}

// Uneven blocks and packed documents: the count matches enumeration.
TEST_F(FlashAttentionTest, SkippedTilesMatchEnumeration) {
  AttentionCase c{2, 150, 2, 1, 16, true, {0, 1, 70, 230, 230, 231, 300}};
  std::vector<std::int64_t> bounds(c.cuSeqlens.begin(), c.cuSeqlens.end());
  for (FlashBlocks blocks : kBlockShapes) {
    SCOPED_TRACE(describe(blocks));
    std::int64_t expected = c.heads * countHiddenTiles(bounds, blocks);
    auto [forward, backward] = skippedTiles(c, blocks);
    EXPECT_EQ(forward, expected);
    EXPECT_EQ(backward, 2 * expected);
  }
  // (32, 128): the first 128-key tile covers four query tiles.
  EXPECT_EQ(countHiddenTiles({0, 256}, {32, 128}), 4);
  EXPECT_EQ(countHiddenTiles({0, 256}, {64, 64}), 6);
}

//===----------------------------------------------------------------------===//
// Determinism and memory
//===----------------------------------------------------------------------===//

// Every output has one writer and one summation order: 1, 2 and 3 threads
// give the same bits.
TEST_F(FlashAttentionTest, SameBitsForAnyThreadCount) {
  AttentionCase c{2, 100, 4, 2, 64, true, {0, 30, 31, 130, 200}};
  FlashInputs in(c);
  auto run = [&] {
    auto out = poisoned<float>(c.qSize());
    auto lse = poisoned<float>(c.lseSize());
    auto grads = poisoned<float>(c.qSize() + 2 * c.kvSize());
    flashAttentionForward(in.q.data(), in.k.data(), in.v.data(), out.data(),
                          lse.data(), c.batch, c.seq, c.heads, c.kvHeads,
                          c.headDim, c.scale(), c.causal, c.cu(), c.numCu(),
                          {32, 16});
    flashAttentionBackward(
        in.dout.data(), in.q.data(), in.k.data(), in.v.data(), out.data(),
        lse.data(), grads.data(), grads.data() + c.qSize(),
        grads.data() + c.qSize() + c.kvSize(), c.batch, c.seq, c.heads,
        c.kvHeads, c.headDim, c.scale(), c.causal, c.cu(), c.numCu(), {32, 16});
    grads.insert(grads.end(), out.begin(), out.end());
    grads.insert(grads.end(), lse.begin(), lse.end());
    return grads;
  };
  int savedThreads = omp_get_max_threads();
  omp_set_num_threads(1);
  auto single = run();
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    EXPECT_TRUE(run() == single) << threads << " threads";
  }
  omp_set_num_threads(savedThreads);
}

// Row-strided q, k and v (views of a packed [tokens, q | k | v] tensor, as
// GPT-2's QKV GEMM writes it) and dq, dk, dv written into a packed gradient
// give the bits the contiguous tensors give: only the addressing changes.
TEST_F(FlashAttentionTest, RowStridedViewsGiveTheContiguousBits) {
  AttentionCase c{2, 40, 4, 2, 64, true, {}};
  FlashInputs in(c);
  std::int64_t tokens = c.batch * c.seq, qWidth = c.heads * c.headDim,
               kvWidth = c.kvHeads * c.headDim, pitch = qWidth + 2 * kvWidth;
  // The parts side by side in each row (poison overwritten everywhere).
  auto pack = [&](const std::vector<float> &q, const std::vector<float> &k,
                  const std::vector<float> &v) {
    auto packed = poisoned<float>(tokens * pitch);
    for (std::int64_t t = 0; t < tokens; ++t) {
      std::copy_n(q.data() + t * qWidth, qWidth, packed.data() + t * pitch);
      std::copy_n(k.data() + t * kvWidth, kvWidth,
                  packed.data() + t * pitch + qWidth);
      std::copy_n(v.data() + t * kvWidth, kvWidth,
                  packed.data() + t * pitch + qWidth + kvWidth);
    }
    return packed;
  };
  std::vector<float> qkv = pack(in.q, in.k, in.v);
  const float *q = qkv.data(), *k = q + qWidth, *v = k + kvWidth;
  RowStrides strides{pitch, pitch, pitch, pitch, pitch, pitch};

  auto out = poisoned<float>(c.qSize()), outStrided = out;
  auto lse = poisoned<float>(c.lseSize()), lseStrided = lse;
  flashAttentionForward(in.q.data(), in.k.data(), in.v.data(), out.data(),
                        lse.data(), c.batch, c.seq, c.heads, c.kvHeads,
                        c.headDim, c.scale(), c.causal, nullptr, 0, {16, 16});
  flashAttentionForward(q, k, v, outStrided.data(), lseStrided.data(), c.batch,
                        c.seq, c.heads, c.kvHeads, c.headDim, c.scale(),
                        c.causal, nullptr, 0, {16, 16}, strides);
  EXPECT_TRUE(out == outStrided);
  EXPECT_TRUE(lse == lseStrided);

  auto dq = poisoned<float>(c.qSize()), dk = poisoned<float>(c.kvSize()),
       dv = poisoned<float>(c.kvSize());
  flashAttentionBackward(in.dout.data(), in.q.data(), in.k.data(), in.v.data(),
                         out.data(), lse.data(), dq.data(), dk.data(),
                         dv.data(), c.batch, c.seq, c.heads, c.kvHeads,
                         c.headDim, c.scale(), c.causal, nullptr, 0, {16, 16});
  auto dqkv = poisoned<float>(tokens * pitch);
  flashAttentionBackward(in.dout.data(), q, k, v, out.data(), lse.data(),
                         dqkv.data(), dqkv.data() + qWidth,
                         dqkv.data() + qWidth + kvWidth, c.batch, c.seq,
                         c.heads, c.kvHeads, c.headDim, c.scale(), c.causal,
                         nullptr, 0, {16, 16}, strides);
  EXPECT_TRUE(dqkv == pack(dq, dk, dv));
}

// rope-attention: Q and K rotated by a ropeTable as the tiles load (and
// rounded, for a BF16 step), dq and dk rotated back as they are stored, give
// the bits of the RoPE kernel, the flash kernels on its output (rounded as a
// BF16 tensor stores it) and the inverse RoPE of their gradients, with
// positions and with strided Q and K.
TEST_F(FlashAttentionTest, RopeOnLoadGivesTheRopeKernelsBits) {
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16 rounding" : "fp32");
    AttentionCase c{2, 40, 4, 2, 32, true, {}};
    FlashInputs in(c);
    const std::int64_t tokens = c.batch * c.seq;
    const double theta = 500000.0;
    auto positions = randomIds(tokens, 3000);
    auto table = poisoned<float>(tokens * c.headDim);
    ropeTable(positions.data(), table.data(), c.batch, c.seq, c.headDim, theta);
    auto rotated = [&](const std::vector<float> &x, std::int64_t heads,
                       bool inverse, bool round) {
      auto y = poisoned<float>(x.size());
      rope(x.data(), positions.data(), y.data(), c.batch, c.seq, heads,
           c.headDim, theta, inverse);
      if (round)
        for (float &e : y)
          e = roundToBf16(e);
      return y;
    };
    auto qr = rotated(in.q, c.heads, false, bf16),
         kr = rotated(in.k, c.kvHeads, false, bf16);
    RopeOnLoad onLoad{table.data(), bf16 ? &roundToBf16 : nullptr};
    FlashBlocks blocks{16, 8};

    auto out = poisoned<float>(c.qSize()), outFused = out;
    auto lse = poisoned<float>(c.lseSize()), lseFused = lse;
    flashAttentionForward(qr.data(), kr.data(), in.v.data(), out.data(),
                          lse.data(), c.batch, c.seq, c.heads, c.kvHeads,
                          c.headDim, c.scale(), c.causal, nullptr, 0, blocks);
    flashAttentionForward(in.q.data(), in.k.data(), in.v.data(),
                          outFused.data(), lseFused.data(), c.batch, c.seq,
                          c.heads, c.kvHeads, c.headDim, c.scale(), c.causal,
                          nullptr, 0, blocks, {}, onLoad);
    EXPECT_TRUE(out == outFused);
    EXPECT_TRUE(lse == lseFused);

    auto dqr = poisoned<float>(c.qSize()), dkr = poisoned<float>(c.kvSize()),
         dv = poisoned<float>(c.kvSize());
    flashAttentionBackward(in.dout.data(), qr.data(), kr.data(), in.v.data(),
                           out.data(), lse.data(), dqr.data(), dkr.data(),
                           dv.data(), c.batch, c.seq, c.heads, c.kvHeads,
                           c.headDim, c.scale(), c.causal, nullptr, 0, blocks);
    auto dq = poisoned<float>(c.qSize()), dk = poisoned<float>(c.kvSize()),
         dvFused = poisoned<float>(c.kvSize());
    flashAttentionBackward(in.dout.data(), in.q.data(), in.k.data(),
                           in.v.data(), out.data(), lse.data(), dq.data(),
                           dk.data(), dvFused.data(), c.batch, c.seq, c.heads,
                           c.kvHeads, c.headDim, c.scale(), c.causal, nullptr,
                           0, blocks, {}, onLoad);
    EXPECT_TRUE(dv == dvFused);
    EXPECT_TRUE(dq == rotated(dqr, c.heads, true, false));
    EXPECT_TRUE(dk == rotated(dkr, c.kvHeads, true, false));
  }
}

/// A field of /proc/self/status in bytes ("VmHWM", "VmRSS"); -1 if absent.
std::int64_t procStatusBytes(const std::string &field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind(field + ":", 0) == 0)
      return std::stoll(line.substr(field.size() + 1)) * 1024;
  return -1;
}

/// Measures the peak resident memory a piece of code adds: Linux resets
/// VmHWM (the peak) to the current resident size on "5" to clear_refs.
class PeakMemoryProbe {
public:
  /// Whether this kernel supports resetting the peak.
  bool reset() {
    std::ofstream clearRefs("/proc/self/clear_refs");
    clearRefs << "5" << std::flush;
    if (!clearRefs)
      return false;
    baseline = procStatusBytes("VmRSS");
    return baseline >= 0 && procStatusBytes("VmHWM") <= baseline + (1 << 20);
  }
  std::int64_t growth() const { return procStatusBytes("VmHWM") - baseline; }

private:
  std::int64_t baseline = 0;
};

// The kernels keep only their per-thread tiles (flashWorkspaceBytes, which
// has no seq argument) and O(seq) bookkeeping: at seq 4096 the peak grows
// far less than one seq x seq score matrix (64 MiB in FP32).
TEST_F(FlashAttentionTest, MemoryDoesNotGrowWithSeqSquared) {
  EXPECT_EQ(flashWorkspaceBytes(64, {64, 64}),
            flashWorkspaceBytes(64, {64, 64}, sizeof(float)));
  EXPECT_EQ(flashWorkspaceBytes(64, {64, 64}, sizeof(double)),
            2 * flashWorkspaceBytes(64, {64, 64}));
  EXPECT_LT(flashWorkspaceBytes(128, {128, 128}), 1 << 20);

  AttentionCase c{1, 4096, 1, 1, 64, true, {}};
  std::int64_t scoreMatrixBytes = c.seq * c.seq * sizeof(float);
  constexpr std::int64_t kAllowedGrowth = 16 << 20;
  FlashInputs in(c);
  std::vector<float> out(c.qSize(), 1.0f), lse(c.lseSize(), 1.0f),
      grads(c.qSize() + 2 * c.kvSize(), 1.0f); // touched before measuring
  PeakMemoryProbe probe;
  if (!probe.reset())
    GTEST_SKIP() << "this kernel cannot reset the peak resident size";
  {
    // The probe sees a seq x seq buffer when there is one.
    std::vector<float> scores(c.seq * c.seq, 1.0f);
    EXPECT_GE(probe.growth(), scoreMatrixBytes);
  }
  ASSERT_TRUE(probe.reset());
  flashAttentionForward(in.q.data(), in.k.data(), in.v.data(), out.data(),
                        lse.data(), c.batch, c.seq, c.heads, c.kvHeads,
                        c.headDim, c.scale(), c.causal, c.cu(), c.numCu(),
                        FlashBlocks{});
  flashAttentionBackward(
      in.dout.data(), in.q.data(), in.k.data(), in.v.data(), out.data(),
      lse.data(), grads.data(), grads.data() + c.qSize(),
      grads.data() + c.qSize() + c.kvSize(), c.batch, c.seq, c.heads, c.kvHeads,
      c.headDim, c.scale(), c.causal, c.cu(), c.numCu(), FlashBlocks{});
  EXPECT_LT(probe.growth(), kAllowedGrowth);
  EXPECT_TRUE(std::isfinite(grads[0]) && std::isfinite(out.back()));
}

//===----------------------------------------------------------------------===//
// Errors
//===----------------------------------------------------------------------===//

TEST(FlashAttentionErrorTest, BadArgumentsThrow) {
  std::vector<float> buf(2 * 10 * 2 * 8, 0.5f), lse(2 * 2 * 10);
  auto forward = [&](std::vector<std::int32_t> cu, FlashBlocks blocks,
                     std::int64_t kvHeads = 1) {
    flashAttentionForward(buf.data(), buf.data(), buf.data(), buf.data(),
                          lse.data(), 2, 10, 2, kvHeads, 8, 1.0, true,
                          cu.empty() ? nullptr : cu.data(),
                          static_cast<std::int64_t>(cu.size()), blocks);
  };
  EXPECT_THAT(
      [&] {
        forward({0, 12, 9, 20}, {});
      },
      ThrowsMessage<Error>(
          HasSubstr("flashAttentionForward: cu_seqlens[2] = 9 is less than "
                    "cu_seqlens[1] = 12")));
  EXPECT_THAT(
      [&] {
        forward({0, 10, 18}, {});
      },
      ThrowsMessage<Error>(HasSubstr("cu_seqlens must end at batch * "
                                     "seq = 20, got cu_seqlens[2] = "
                                     "18")));
  EXPECT_THAT(
      [&] {
        forward({}, {0, 64});
      },
      ThrowsMessage<Error>(
          HasSubstr("flashAttentionForward: expects positive block sizes, got "
                    "blockQ 0 and blockK 64")));
  EXPECT_THAT([&] { forward({}, {}, 3); },
              ThrowsMessage<Error>(HasSubstr("expects kvHeads (3) to be "
                                             "positive and to divide heads "
                                             "(2)")));
  EXPECT_THAT(
      [&] {
        flashAttentionBackward(buf.data(), buf.data(), buf.data(), buf.data(),
                               buf.data(), lse.data(), buf.data(), buf.data(),
                               buf.data(), 2, 10, 2, 1, 8, 1.0, false, nullptr,
                               0, {16, -1});
      },
      ThrowsMessage<Error>(HasSubstr("flashAttentionBackward: expects "
                                     "positive block sizes")));
}

} // namespace
