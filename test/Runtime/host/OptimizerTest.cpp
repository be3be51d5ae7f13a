//===- OptimizerTest.cpp - Gradient norm and AdamW ------------------------===//
//
// AdamW over two steps against values computed by hand from
// torch.optim.AdamW's single-tensor algorithm and clip_grad_norm_'s
// coefficient, with clipping active, inactive and switched off.
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

template <typename T> class OptimizerTest : public KernelTest {};
TYPED_TEST_SUITE(OptimizerTest, KernelTypes, KernelTypeNames);

TYPED_TEST(OptimizerTest, SumOfSquaresMatchesReference) {
  using T = TypeParam;
  // 200003 elements span four partial sums.
  for (std::int64_t n : {1, 7, 1000, 200003}) {
    auto x = randomVector<T>(n);
    double ref = 0;
    for (T value : x)
      ref += double(value) * double(value);
    EXPECT_NEAR(sumOfSquares(x.data(), n), ref, 1e-12 * ref) << "n " << n;
  }
}

/// Expected state after each of two AdamW steps (lr 1e-2, betas (0.9, 0.95),
/// eps 1e-8, weight_decay 0.1, max_grad_norm 1 where clipping is on) from
/// param {1, -0.5, 0.25, 2} and zero moments, with gradients
/// {0.5, -0.25, 1.5, -2} then {-0.25, 0.75, 1, 0.125}. Step 1 by hand, for
/// element 0 without clipping: m = 0.1 * 0.5 = 0.05, v = 0.05 * 0.25 =
/// 0.0125, and since mhat = g and vhat = g^2,
///   p = 1 * (1 - 1e-2 * 0.1) - 1e-2 * 0.5 / (0.5 + 1e-8) = 0.9890000002.
/// The other values are the same recurrences evaluated in FP64 (Python).
struct AdamWExpectation {
  double gradNorm[2];
  double maxGradNorm;
  double param[2][4], expAvg[2][4], expAvgSq[2][4];
};

// Norms 3 and 2 against max 1: gradients scale by 1 / (3 + 1e-6), then
// 1 / (2 + 1e-6).
const AdamWExpectation kClipped = {
    {3.0, 2.0},
    1.0,
    {{0.98900000060000015, -0.48950000120000026, 0.23975000020000006,
      2.00799999985},
     {0.98711458866195623, -0.49475693274906402, 0.22951025042229231,
      2.0120436232932004}},
    {{0.016666661111112958, -0.0083333305555564792, 0.049999983333338875,
      -0.066666644444451834},
     {0.0025000012499985427, 0.029999983750008532, 0.09499996000001748,
      -0.053749983125005091}},
    {{0.001388887962963427, 0.00034722199074085675, 0.012499991666670844,
      0.022222207407414832},
     {0.0021006927835658419, 0.0073611038599590934, 0.024374979583346688,
      0.021306409341731735}}};

/// Gradients used as they are.
const double kUnclippedParam[2][4] = {
    {0.98900000020000001, -0.48950000039999997, 0.23975000006666666,
     2.00799999995},
    {0.98532730578738281, -0.49390345798842811, 0.22975946246739437,
     2.0122942505776593}};
const double kUnclippedExpAvg[2][4] = {{0.05, -0.025, 0.15, -0.2},
                                       {0.02, 0.0525, 0.235, -0.1675}};
const double kUnclippedExpAvgSq[2][4] = {
    {0.0125, 0.003125, 0.1125, 0.2}, {0.015, 0.03109375, 0.156875, 0.19078125}};

/// The expectation for gradient norms whose clip coefficient is 1 (or with
/// clipping off): the unclipped states above.
AdamWExpectation unclipped(double norm0, double norm1, double maxGradNorm) {
  AdamWExpectation e{{norm0, norm1}, maxGradNorm, {}, {}, {}};
  for (int step = 0; step < 2; ++step)
    for (int i = 0; i < 4; ++i) {
      e.param[step][i] = kUnclippedParam[step][i];
      e.expAvg[step][i] = kUnclippedExpAvg[step][i];
      e.expAvgSq[step][i] = kUnclippedExpAvgSq[step][i];
    }
  return e;
}

// Norms under max 1 (0.5, 0.25): clip_coef > 1 is clamped to 1.
const AdamWExpectation kUnderMax = unclipped(0.5, 0.25, 1.0);

// max_grad_norm 0 switches clipping off, whatever the norm.
const AdamWExpectation kClippingOff = unclipped(3.0, 2.0, 0.0);

template <typename T> void expectTwoSteps(const AdamWExpectation &e) {
  // FP32 stores each state in 2^-24 relative; FP64 only reorders roundings.
  const double tolerance = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  std::vector<T> param = {T(1), T(-0.5), T(0.25), T(2)};
  std::vector<T> expAvg(4, T(0)), expAvgSq(4, T(0));
  const std::vector<T> grads[2] = {{T(0.5), T(-0.25), T(1.5), T(-2)},
                                   {T(-0.25), T(0.75), T(1), T(0.125)}};
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step + 1);
    adamw(param.data(), grads[step].data(), expAvg.data(), expAvgSq.data(), 4,
          /*lr=*/1e-2, /*step=*/step + 1, e.gradNorm[step], /*beta1=*/0.9,
          /*beta2=*/0.95, /*eps=*/1e-8, /*weightDecay=*/0.1, e.maxGradNorm);
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(param[i], e.param[step][i],
                  tolerance * std::abs(e.param[step][i]))
          << "param " << i;
      EXPECT_NEAR(expAvg[i], e.expAvg[step][i],
                  tolerance * std::abs(e.expAvg[step][i]))
          << "exp_avg " << i;
      EXPECT_NEAR(expAvgSq[i], e.expAvgSq[step][i],
                  tolerance * std::abs(e.expAvgSq[step][i]))
          << "exp_avg_sq " << i;
    }
  }
}

TYPED_TEST(OptimizerTest, AdamWTwoStepsWithClipping) {
  expectTwoSteps<TypeParam>(kClipped);
}

TYPED_TEST(OptimizerTest, AdamWTwoStepsUnderMaxNorm) {
  expectTwoSteps<TypeParam>(kUnderMax);
}

TYPED_TEST(OptimizerTest, AdamWTwoStepsWithoutClipping) {
  expectTwoSteps<TypeParam>(kClippingOff);
}

// torch compares clip_coef, not the norm, with 1: a norm equal to the
// maximum still scales by max / (max + 1e-6).
TEST(AdamWTest, NormAtMaximumStillClips) {
  std::vector<double> param = {1.0}, grad = {0.5}, expAvg = {0.0},
                      expAvgSq = {0.0};
  adamw(param.data(), grad.data(), expAvg.data(), expAvgSq.data(), 1, 1e-2, 1.0,
        1.0, 0.9, 0.95, 1e-8, 0.1, 1.0);
  double clipped = 0.1 * 0.5 / (1.0 + 1e-6);
  EXPECT_NEAR(expAvg[0], clipped, 1e-15);
  EXPECT_GT(0.05 - expAvg[0], 4e-8); // 0.05 unclipped
}

TEST(AdamWTest, StepBelowOneThrows) {
  std::vector<float> buf(4, 0.5f);
  EXPECT_THAT(
      [&] {
        adamw(buf.data(), buf.data(), buf.data(), buf.data(), 1, 1e-3, 0.0, 1.0,
              0.9, 0.95, 1e-8, 0.1, 1.0);
      },
      ThrowsMessage<Error>(HasSubstr("adamw: step must be at least 1, got 0")));
}

} // namespace
