//===- NormTest.cpp - RMSNorm and LayerNorm -------------------------------===//
//
// Forward kernels against FP64 loops; input, weight and bias gradients
// against finite differences in FP64; the FP32 gradient kernels against the
// FP64 ones.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/Kernels.h"

#include "KernelTestSupport.h"

#include <cmath>

using namespace kiln::rt::host;
using namespace kiln::rt::host::testing;

namespace {

/// (rows, dim) pairs: single elements, odd sizes, and one large enough
/// (64 x 300) for the kernels to run threaded.
const std::pair<std::int64_t, std::int64_t> kShapes[] = {
    {1, 1}, {3, 7}, {5, 64}, {17, 33}, {64, 300}};

std::vector<double> referenceRmsNorm(const std::vector<double> &x,
                                     const std::vector<double> &w,
                                     std::int64_t rows, std::int64_t dim,
                                     double eps) {
  std::vector<double> y(rows * dim);
  for (std::int64_t r = 0; r < rows; ++r) {
    double sumSq = 0;
    for (std::int64_t j = 0; j < dim; ++j)
      sumSq += x[r * dim + j] * x[r * dim + j];
    double rms = std::sqrt(sumSq / dim + eps);
    for (std::int64_t j = 0; j < dim; ++j)
      y[r * dim + j] = x[r * dim + j] / rms * w[j];
  }
  return y;
}

std::vector<double> referenceLayerNorm(const std::vector<double> &x,
                                       const std::vector<double> &w,
                                       const std::vector<double> *b,
                                       std::int64_t rows, std::int64_t dim,
                                       double eps) {
  std::vector<double> y(rows * dim);
  for (std::int64_t r = 0; r < rows; ++r) {
    double mean = 0;
    for (std::int64_t j = 0; j < dim; ++j)
      mean += x[r * dim + j];
    mean /= dim;
    double var = 0;
    for (std::int64_t j = 0; j < dim; ++j)
      var += (x[r * dim + j] - mean) * (x[r * dim + j] - mean);
    var /= dim;
    for (std::int64_t j = 0; j < dim; ++j)
      y[r * dim + j] = (x[r * dim + j] - mean) / std::sqrt(var + eps) * w[j] +
                       (b ? (*b)[j] : 0.0);
  }
  return y;
}

template <typename T> class NormTest : public KernelTest {};
TYPED_TEST_SUITE(NormTest, KernelTypes, KernelTypeNames);

TYPED_TEST(NormTest, RmsNormMatchesReference) {
  using T = TypeParam;
  for (auto [rows, dim] : kShapes)
    for (double eps : {1e-5, 1e-6}) {
      auto x = randomVector<T>(rows * dim, -2.0, 2.0);
      auto w = randomVector<T>(dim, 0.5, 1.5);
      auto y = poisoned<T>(rows * dim);
      rmsNorm(x.data(), w.data(), y.data(), rows, dim, eps);
      EXPECT_LE(relativeError(y, referenceRmsNorm(toDouble(x), toDouble(w),
                                                  rows, dim, eps)),
                kForwardTolerance<T>)
          << rows << "x" << dim << " eps " << eps;
    }
}

TYPED_TEST(NormTest, LayerNormMatchesReference) {
  using T = TypeParam;
  for (auto [rows, dim] : kShapes)
    for (bool withBias : {false, true}) {
      double eps = 1e-5;
      // An offset mean exercises the centring.
      auto x = randomVector<T>(rows * dim, -1.0, 3.0);
      auto w = randomVector<T>(dim, 0.5, 1.5);
      auto b = randomVector<T>(dim);
      auto y = poisoned<T>(rows * dim);
      layerNorm(x.data(), w.data(), withBias ? b.data() : nullptr, y.data(),
                rows, dim, eps);
      auto bd = toDouble(b);
      EXPECT_LE(relativeError(y, referenceLayerNorm(toDouble(x), toDouble(w),
                                                    withBias ? &bd : nullptr,
                                                    rows, dim, eps)),
                kForwardTolerance<T>)
          << rows << "x" << dim << " bias " << withBias;
    }
}

class NormGradTest : public KernelTest {};

TEST_F(NormGradTest, RmsNormMatchesFiniteDifferences) {
  for (auto [rows, dim] : {std::pair<std::int64_t, std::int64_t>{3, 7},
                           std::pair<std::int64_t, std::int64_t>{2, 16}}) {
    double eps = 1e-5;
    auto x = randomVector<double>(rows * dim, -2.0, 2.0);
    auto w = randomVector<double>(dim, 0.5, 1.5);
    auto r = randomVector<double>(rows * dim);
    auto y = poisoned<double>(rows * dim);
    auto loss = [&] {
      rmsNorm(x.data(), w.data(), y.data(), rows, dim, eps);
      return dot(r, y);
    };
    auto dx = poisoned<double>(rows * dim);
    auto dw = poisoned<double>(dim);
    rmsNormGrad(r.data(), x.data(), w.data(), dx.data(), rows, dim, eps);
    rmsNormWeightGrad(r.data(), x.data(), dw.data(), rows, dim, eps);
    EXPECT_GRADIENT_MATCHES(dx, x, loss);
    EXPECT_GRADIENT_MATCHES(dw, w, loss);
  }
}

TEST_F(NormGradTest, LayerNormMatchesFiniteDifferences) {
  for (auto [rows, dim] : {std::pair<std::int64_t, std::int64_t>{3, 7},
                           std::pair<std::int64_t, std::int64_t>{2, 16}}) {
    double eps = 1e-5;
    auto x = randomVector<double>(rows * dim, -1.0, 3.0);
    auto w = randomVector<double>(dim, 0.5, 1.5);
    auto b = randomVector<double>(dim);
    auto r = randomVector<double>(rows * dim);
    auto y = poisoned<double>(rows * dim);
    auto loss = [&] {
      layerNorm(x.data(), w.data(), b.data(), y.data(), rows, dim, eps);
      return dot(r, y);
    };
    auto dx = poisoned<double>(rows * dim);
    auto dw = poisoned<double>(dim);
    auto db = poisoned<double>(dim);
    layerNormGrad(r.data(), x.data(), w.data(), dx.data(), rows, dim, eps);
    layerNormWeightGrad(r.data(), x.data(), dw.data(), rows, dim, eps);
    columnSum(r.data(), db.data(), rows, dim);
    EXPECT_GRADIENT_MATCHES(dx, x, loss);
    EXPECT_GRADIENT_MATCHES(dw, w, loss);
    EXPECT_GRADIENT_MATCHES(db, b, loss);
  }
}

// The FP32 gradient kernels agree with the FP64 ones (checked above) on the
// same inputs. dim = 1 is left out: there the RMSNorm input gradient is
// dy w eps / (x^2 + eps)^(3/2), which FP32 forms by cancelling two O(1)
// terms to O(eps).
TEST_F(NormGradTest, FloatMatchesDouble) {
  for (auto [rows, dim] : kShapes) {
    if (dim == 1)
      continue;
    SCOPED_TRACE(::testing::Message() << rows << "x" << dim);
    double eps = 1e-5;
    auto x = randomVector<float>(rows * dim, -1.0, 3.0);
    auto w = randomVector<float>(dim, 0.5, 1.5);
    auto dy = randomVector<float>(rows * dim);
    auto xd = toDouble(x), wd = toDouble(w), dyd = toDouble(dy);
    auto dx = poisoned<float>(rows * dim);
    auto dw = poisoned<float>(dim);
    auto dxd = poisoned<double>(rows * dim);
    auto dwd = poisoned<double>(dim);

    rmsNormGrad(dy.data(), x.data(), w.data(), dx.data(), rows, dim, eps);
    rmsNormGrad(dyd.data(), xd.data(), wd.data(), dxd.data(), rows, dim, eps);
    EXPECT_LE(relativeError(dx, dxd), kForwardTolerance<float>);
    rmsNormWeightGrad(dy.data(), x.data(), dw.data(), rows, dim, eps);
    rmsNormWeightGrad(dyd.data(), xd.data(), dwd.data(), rows, dim, eps);
    EXPECT_LE(relativeError(dw, dwd), kForwardTolerance<float>);

    layerNormGrad(dy.data(), x.data(), w.data(), dx.data(), rows, dim, eps);
    layerNormGrad(dyd.data(), xd.data(), wd.data(), dxd.data(), rows, dim, eps);
    EXPECT_LE(relativeError(dx, dxd), kForwardTolerance<float>);
    layerNormWeightGrad(dy.data(), x.data(), dw.data(), rows, dim, eps);
    layerNormWeightGrad(dyd.data(), xd.data(), dwd.data(), rows, dim, eps);
    EXPECT_LE(relativeError(dw, dwd), kForwardTolerance<float>);

    // norm-param-grads: both parameter gradients in one pass, bitwise the
    // weight gradient and the column sum of dy.
    auto db = poisoned<float>(dim);
    columnSum(dy.data(), db.data(), rows, dim);
    auto jointDw = poisoned<float>(dim), jointDb = poisoned<float>(dim);
    layerNormParamGrad(dy.data(), x.data(), jointDw.data(), jointDb.data(),
                       rows, dim, eps);
    EXPECT_EQ(jointDw, dw);
    EXPECT_EQ(jointDb, db);
  }
}

} // namespace
