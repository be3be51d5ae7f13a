//===- GemmTest.cpp - Batched GEMM and column sums ------------------------===//
//
// gemm against a triple loop in FP64 for every transpose combination, with
// and without bias and accumulation, batched; its gradients (as the training
// step forms them, with gemm itself) against finite differences.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/host/Kernels.h"

#include "KernelTestSupport.h"

#include <gmock/gmock.h>

using namespace kiln::rt;
using namespace kiln::rt::host;
using namespace kiln::rt::host::testing;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

struct GemmShape {
  std::int64_t batch, m, n, k;
};

/// C_p = op(A_p) op(B_p) (+ bias) (+ c0) with plain loops in FP64.
std::vector<double> referenceGemm(const std::vector<double> &a,
                                  const std::vector<double> &b,
                                  const std::vector<double> *bias,
                                  const std::vector<double> *c0, GemmShape s,
                                  bool transA, bool transB) {
  auto [batch, m, n, k] = s;
  std::vector<double> c(batch * m * n);
  for (std::int64_t p = 0; p < batch; ++p)
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double sum = 0;
        for (std::int64_t l = 0; l < k; ++l) {
          double aValue =
              transA ? a[p * m * k + l * m + i] : a[p * m * k + i * k + l];
          double bValue =
              transB ? b[p * k * n + j * k + l] : b[p * k * n + l * n + j];
          sum += aValue * bValue;
        }
        if (bias)
          sum += (*bias)[j];
        if (c0)
          sum += (*c0)[p * m * n + i * n + j];
        c[p * m * n + i * n + j] = sum;
      }
  return c;
}

template <typename T> class GemmTest : public KernelTest {};
TYPED_TEST_SUITE(GemmTest, KernelTypes, KernelTypeNames);

// Every transpose combination, bias and accumulation, over odd and batched
// shapes.
TYPED_TEST(GemmTest, MatchesReference) {
  using T = TypeParam;
  const GemmShape shapes[] = {{1, 1, 1, 1},
                              {1, 3, 5, 7},
                              {2, 4, 3, 6},
                              {3, 17, 9, 13},
                              {1, 33, 31, 37}};
  for (GemmShape s : shapes)
    for (bool transA : {false, true})
      for (bool transB : {false, true})
        for (bool withBias : {false, true})
          for (bool accumulate : {false, true}) {
            SCOPED_TRACE(::testing::Message()
                         << "batch " << s.batch << " m " << s.m << " n " << s.n
                         << " k " << s.k << " transA " << transA << " transB "
                         << transB << " bias " << withBias << " accumulate "
                         << accumulate);
            auto a = randomVector<T>(s.batch * s.m * s.k);
            auto b = randomVector<T>(s.batch * s.k * s.n);
            auto bias = randomVector<T>(s.n);
            auto c = accumulate ? randomVector<T>(s.batch * s.m * s.n)
                                : poisoned<T>(s.batch * s.m * s.n);
            auto ad = toDouble(a), bd = toDouble(b), biasd = toDouble(bias),
                 c0 = toDouble(c);
            auto ref =
                referenceGemm(ad, bd, withBias ? &biasd : nullptr,
                              accumulate ? &c0 : nullptr, s, transA, transB);
            gemm(a.data(), b.data(), c.data(), s.batch, s.m, s.n, s.k, transA,
                 transB, withBias ? bias.data() : nullptr, accumulate);
            EXPECT_LE(relativeError(c, ref), kForwardTolerance<T>);
          }
}

// k = 0 is an empty sum: C becomes the bias (or zero, or stays).
TYPED_TEST(GemmTest, EmptyInnerDimension) {
  using T = TypeParam;
  auto bias = randomVector<T>(3);
  auto c = poisoned<T>(2 * 3);
  gemm<T>(nullptr, nullptr, c.data(), 1, 2, 3, 0, false, false, bias.data(),
          false);
  EXPECT_EQ(c, (std::vector<T>{bias[0], bias[1], bias[2], bias[0], bias[1],
                               bias[2]}));
  c = poisoned<T>(2 * 3);
  gemm<T>(nullptr, nullptr, c.data(), 1, 2, 3, 0, true, true, nullptr, false);
  EXPECT_EQ(c, std::vector<T>(6, T(0)));
}

TYPED_TEST(GemmTest, ColumnSumMatchesReference) {
  using T = TypeParam;
  // 300 columns span two reduction blocks; 70000 elements run threaded.
  const std::pair<std::int64_t, std::int64_t> shapes[] = {
      {1, 1}, {7, 5}, {13, 300}, {250, 280}};
  for (auto [rows, cols] : shapes) {
    auto x = randomVector<T>(rows * cols);
    auto y = poisoned<T>(cols);
    std::vector<double> ref(cols, 0.0);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t j = 0; j < cols; ++j)
        ref[j] += x[r * cols + j];
    columnSum(x.data(), y.data(), rows, cols);
    EXPECT_LE(relativeError(y, ref), kForwardTolerance<T>)
        << rows << "x" << cols;
  }
}

// The epilogues (nn-fuse's gemm-epilogue group) against the unfused ops
// they replace, run on a separate copy of the product: bitwise, since
// they are the same kernels in the same order. The bias gradients sum the
// right operand: A stored [k, m] (bgrad_a, a weight stored [out, in]) or B
// stored [k, n] (bgrad_b, one stored [in, out]), checked against the FP64
// column sums of the gradient.
TYPED_TEST(GemmTest, EpiloguesMatchTheUnfusedOps) {
  using T = TypeParam;
  using kiln::plan::GemmEpilogue;
  const std::int64_t m = 6, n = 16, k = 5;
  auto a = randomVector<T>(m * k), b = randomVector<T>(k * n);
  auto bias = randomVector<T>(n), aux = randomVector<T>(m * n);
  auto product = [&](const T *withBias) {
    auto c = poisoned<T>(m * n);
    gemm<T>(a.data(), b.data(), c.data(), 1, m, n, k, false, false, withBias,
            false);
    return c;
  };

  // gelu_tanh, with and without the pre-activation.
  auto pre = product(bias.data());
  auto activation = poisoned<T>(m * n);
  gelu<T>(pre.data(), activation.data(), m * n, /*tanhApprox=*/true);
  auto c = product(bias.data());
  auto extra = poisoned<T>(m * n);
  gemmEpilogue<T>(GemmEpilogue::GeluTanh, a.data(), b.data(), nullptr, c.data(),
                  extra.data(), 1, m, n, k);
  EXPECT_EQ(c, activation);
  EXPECT_EQ(extra, pre);
  c = product(bias.data());
  gemmEpilogue<T>(GemmEpilogue::GeluTanh, a.data(), b.data(), nullptr, c.data(),
                  nullptr, 1, m, n, k);
  EXPECT_EQ(c, activation);

  // dgelu_tanh: gelu_grad of the product at the pre-activation.
  auto dh = product(nullptr);
  auto dpre = poisoned<T>(m * n);
  geluGrad<T>(dh.data(), aux.data(), dpre.data(), m * n, /*tanhApprox=*/true);
  c = product(nullptr);
  gemmEpilogue<T>(GemmEpilogue::DgeluTanh, a.data(), b.data(), aux.data(),
                  c.data(), nullptr, 1, m, n, k);
  EXPECT_EQ(c, dpre);

  // bgrad_a: dW = dy^T x with dy = A stored [k, m]; bgrad_b: dW = x^T dy
  // with dy = B stored [k, n].
  for (GemmEpilogue kind : {GemmEpilogue::BgradA, GemmEpilogue::BgradB}) {
    bool fromA = kind == GemmEpilogue::BgradA;
    SCOPED_TRACE(kiln::plan::gemmEpilogueName(kind));
    auto dy = randomVector<T>(k * (fromA ? m : n));
    auto x = randomVector<T>(k * (fromA ? n : m));
    const T *ga = fromA ? dy.data() : x.data();
    const T *gb = fromA ? x.data() : dy.data();
    std::int64_t width = fromA ? m : n;
    auto dw = poisoned<T>(m * n), dwUnfused = poisoned<T>(m * n);
    gemm<T>(ga, gb, dwUnfused.data(), 1, m, n, k, true, false, nullptr, false);
    gemm<T>(ga, gb, dw.data(), 1, m, n, k, true, false, nullptr, false);
    auto db = poisoned<T>(width), dbUnfused = poisoned<T>(width);
    columnSum<T>(dy.data(), dbUnfused.data(), k, width);
    gemmEpilogue<T>(kind, ga, gb, nullptr, dw.data(), db.data(), 1, m, n, k);
    EXPECT_EQ(dw, dwUnfused);
    EXPECT_EQ(db, dbUnfused);
    std::vector<double> ref(width, 0.0);
    for (std::int64_t r = 0; r < k; ++r)
      for (std::int64_t j = 0; j < width; ++j)
        ref[j] += dy[r * width + j];
    EXPECT_LE(relativeError(db, ref), kForwardTolerance<T>);
  }
}

TEST(GemmErrorTest, EpilogueNeedsItsBuffers) {
  std::vector<float> a(6), b(6), c(4);
  EXPECT_THAT(
      [&] {
        gemmEpilogue<float>(kiln::plan::GemmEpilogue::DgeluTanh, a.data(),
                            b.data(), nullptr, c.data(), nullptr, 1, 2, 2, 3);
      },
      ThrowsMessage<Error>(HasSubstr("dgelu_tanh needs the pre-activation")));
  EXPECT_THAT(
      [&] {
        gemmEpilogue<float>(kiln::plan::GemmEpilogue::BgradA, a.data(),
                            b.data(), nullptr, c.data(), c.data(), 2, 1, 2, 3);
      },
      ThrowsMessage<Error>(HasSubstr("bgrad_a needs one problem")));
}

class GemmGradTest : public KernelTest {};

// The gradients of C = op(A) op(B) + bias as the training step forms them
// with gemm and columnSum, for every transpose combination.
TEST_F(GemmGradTest, MatchesFiniteDifferences) {
  const GemmShape s{2, 3, 4, 5};
  auto [batch, m, n, k] = s;
  for (bool transA : {false, true})
    for (bool transB : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << "transA " << transA << " transB " << transB);
      auto a = randomVector<double>(batch * m * k);
      auto b = randomVector<double>(batch * k * n);
      auto bias = randomVector<double>(n);
      auto r = randomVector<double>(batch * m * n); // L = <r, C>, dC = r
      auto c = poisoned<double>(batch * m * n);
      auto loss = [&] {
        gemm(a.data(), b.data(), c.data(), batch, m, n, k, transA, transB,
             bias.data(), false);
        return dot(r, c);
      };

      // dop(A) = dC op(B)^T and dop(B) = op(A)^T dC, stored as A and B are.
      auto da = poisoned<double>(batch * m * k);
      auto db = poisoned<double>(batch * k * n);
      auto dbias = poisoned<double>(n);
      if (!transA)
        gemm(r.data(), b.data(), da.data(), batch, m, k, n, false, !transB,
             (const double *)nullptr, false);
      else
        gemm(b.data(), r.data(), da.data(), batch, k, m, n, transB, true,
             (const double *)nullptr, false);
      if (!transB)
        gemm(a.data(), r.data(), db.data(), batch, k, n, m, !transA, false,
             (const double *)nullptr, false);
      else
        gemm(r.data(), a.data(), db.data(), batch, n, k, m, true, transA,
             (const double *)nullptr, false);
      columnSum(r.data(), dbias.data(), batch * m, n);

      EXPECT_GRADIENT_MATCHES(da, a, loss);
      EXPECT_GRADIENT_MATCHES(db, b, loss);
      EXPECT_GRADIENT_MATCHES(dbias, bias, loss);
    }
}

TEST(GemmErrorTest, NegativeSizeThrows) {
  std::vector<float> c(4);
  EXPECT_THAT(
      [&] {
        gemm<float>(nullptr, nullptr, c.data(), 1, 2, -2, 3, false, false,
                    nullptr, false);
      },
      ThrowsMessage<Error>(HasSubstr("gemm: n must be non-negative, got -2")));
}

} // namespace
