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
