//===- ActivationTest.cpp - SwiGLU and GELU (exact and tanh) --------------===//
//
// Forward kernels against FP64 formulas, gradients against finite
// differences in FP64, FP32 gradients against FP64 ones. Inputs span
// [-6, 6] so that both saturated tails are covered.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/Kernels.h"

#include "KernelTestSupport.h"

#include <cmath>
#include <numbers>

using namespace kiln::rt::host;
using namespace kiln::rt::host::testing;

namespace {

/// Sizes: single elements, odd, and one that runs threaded.
const std::int64_t kSizes[] = {1, 7, 1000, 40001};

double referenceGelu(double x, bool tanhApprox) {
  if (tanhApprox)
    return 0.5 * x *
           (1 + std::tanh(std::sqrt(2 / std::numbers::pi) *
                          (x + 0.044715 * x * x * x)));
  return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
}

template <typename T> class ActivationTest : public KernelTest {};
TYPED_TEST_SUITE(ActivationTest, KernelTypes, KernelTypeNames);

TYPED_TEST(ActivationTest, SwigluMatchesReference) {
  using T = TypeParam;
  for (std::int64_t n : kSizes) {
    auto gate = randomVector<T>(n, -6.0, 6.0);
    auto up = randomVector<T>(n, -2.0, 2.0);
    auto y = poisoned<T>(n);
    swiglu(gate.data(), up.data(), y.data(), n);
    std::vector<double> ref(n);
    for (std::int64_t i = 0; i < n; ++i)
      ref[i] = double(gate[i]) / (1 + std::exp(-double(gate[i]))) * up[i];
    EXPECT_LE(relativeError(y, ref), kForwardTolerance<T>) << "n " << n;
  }
}

TYPED_TEST(ActivationTest, GeluMatchesReference) {
  using T = TypeParam;
  for (bool tanhApprox : {false, true})
    for (std::int64_t n : kSizes) {
      auto x = randomVector<T>(n, -6.0, 6.0);
      auto y = poisoned<T>(n);
      gelu(x.data(), y.data(), n, tanhApprox);
      std::vector<double> ref(n);
      for (std::int64_t i = 0; i < n; ++i)
        ref[i] = referenceGelu(x[i], tanhApprox);
      EXPECT_LE(relativeError(y, ref), kForwardTolerance<T>)
          << "n " << n << " tanh " << tanhApprox;
    }
}

// The two GELU modes differ (by 4e-4 at x = 3, 1.5e-4 at x = 1), far beyond
// the forward tolerance, so a mode mix-up would show.
TYPED_TEST(ActivationTest, GeluModesDiffer) {
  using T = TypeParam;
  std::vector<T> x = {T(1), T(3)};
  auto exact = poisoned<T>(2), approx = poisoned<T>(2);
  gelu(x.data(), exact.data(), 2, false);
  gelu(x.data(), approx.data(), 2, true);
  EXPECT_GT(std::abs(double(exact[0]) - double(approx[0])), 1e-4);
  EXPECT_GT(std::abs(double(exact[1]) - double(approx[1])), 3e-4);
}

class ActivationGradTest : public KernelTest {};

TEST_F(ActivationGradTest, SwigluMatchesFiniteDifferences) {
  std::int64_t n = 64;
  auto gate = randomVector<double>(n, -6.0, 6.0);
  auto up = randomVector<double>(n, -2.0, 2.0);
  auto r = randomVector<double>(n);
  auto y = poisoned<double>(n);
  auto loss = [&] {
    swiglu(gate.data(), up.data(), y.data(), n);
    return dot(r, y);
  };
  auto dgate = poisoned<double>(n), dup = poisoned<double>(n);
  swigluGrad(r.data(), gate.data(), up.data(), dgate.data(), dup.data(), n);
  EXPECT_GRADIENT_MATCHES(dgate, gate, loss);
  EXPECT_GRADIENT_MATCHES(dup, up, loss);
}

TEST_F(ActivationGradTest, GeluMatchesFiniteDifferences) {
  for (bool tanhApprox : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "tanh " << tanhApprox);
    std::int64_t n = 64;
    auto x = randomVector<double>(n, -6.0, 6.0);
    auto r = randomVector<double>(n);
    auto y = poisoned<double>(n);
    auto loss = [&] {
      gelu(x.data(), y.data(), n, tanhApprox);
      return dot(r, y);
    };
    auto dx = poisoned<double>(n);
    geluGrad(r.data(), x.data(), dx.data(), n, tanhApprox);
    EXPECT_GRADIENT_MATCHES(dx, x, loss);
  }
}

TEST_F(ActivationGradTest, FloatMatchesDouble) {
  for (std::int64_t n : kSizes) {
    auto a = randomVector<float>(n, -6.0, 6.0);
    auto b = randomVector<float>(n, -2.0, 2.0);
    auto dy = randomVector<float>(n);
    auto ad = toDouble(a), bd = toDouble(b), dyd = toDouble(dy);
    auto d1 = poisoned<float>(n), d2 = poisoned<float>(n);
    auto d1d = poisoned<double>(n), d2d = poisoned<double>(n);
    swigluGrad(dy.data(), a.data(), b.data(), d1.data(), d2.data(), n);
    swigluGrad(dyd.data(), ad.data(), bd.data(), d1d.data(), d2d.data(), n);
    EXPECT_LE(relativeError(d1, d1d), kForwardTolerance<float>);
    EXPECT_LE(relativeError(d2, d2d), kForwardTolerance<float>);
    for (bool tanhApprox : {false, true}) {
      geluGrad(dy.data(), a.data(), d1.data(), n, tanhApprox);
      geluGrad(dyd.data(), ad.data(), d1d.data(), n, tanhApprox);
      EXPECT_LE(relativeError(d1, d1d), kForwardTolerance<float>)
          << "n " << n << " tanh " << tanhApprox;
    }
  }
}

} // namespace
