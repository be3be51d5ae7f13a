//===- KernelTestSupport.h - Kernel test helpers ----------------*- C++ -*-===//
//
// What every host kernel test needs: fresh random inputs (never zeros),
// outputs poisoned with NaN before a call, a relative error that treats NaN
// as failure, per-dtype tolerances, and central finite differences.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TEST_RUNTIME_HOST_KERNELTESTSUPPORT_H
#define KILN_TEST_RUNTIME_HOST_KERNELTESTSUPPORT_H

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace kiln::rt::host::testing {

/// Forward kernels against the FP64 references: max |got - ref| / max |ref|.
/// FP32 stores every output rounded to 2^-24 and accumulates GEMMs in FP32
/// over at most ~40 terms; FP64 results differ from the reference only in
/// rounding order.
template <typename T>
constexpr double kForwardTolerance = std::is_same_v<T, float> ? 1e-5 : 1e-12;

/// Finite-difference step: with central differences the truncation error is
/// O(h^2) = 1e-12 and the cancellation error O(eps |L| / h) ~ 1e-9.
constexpr double kFdStep = 1e-6;

/// Relative error bound of an analytic FP64 gradient against central
/// differences (max |g - fd| / max |fd|); both error terms above sit three
/// orders of magnitude below it.
constexpr double kGradTolerance = 1e-6;

/// A generator seeded per test so that failures reproduce.
inline std::mt19937_64 &rng() {
  static std::mt19937_64 engine;
  return engine;
}

/// Reseeds rng() from the test's name: every test draws its own data.
inline void seedFromTestName() {
  const ::testing::TestInfo *info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "." + info->name();
  rng().seed(std::hash<std::string>{}(name));
}

/// Every kernel test: reseeds the generator so each test draws its own data.
class KernelTest : public ::testing::Test {
protected:
  void SetUp() override { seedFromTestName(); }
};

/// The element types every kernel is instantiated for, named in test names.
using KernelTypes = ::testing::Types<float, double>;
struct KernelTypeNames {
  template <typename T> static std::string GetName(int) {
    return std::is_same_v<T, float> ? "float" : "double";
  }
};

/// n values uniform in [lo, hi), rounded to T.
template <typename T>
std::vector<T> randomVector(std::int64_t n, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> values(n);
  for (T &value : values)
    value = static_cast<T>(dist(rng()));
  return values;
}

/// n token ids uniform in [0, vocab).
inline std::vector<std::int32_t> randomIds(std::int64_t n, std::int64_t vocab) {
  std::uniform_int_distribution<std::int32_t> dist(
      0, static_cast<std::int32_t>(vocab - 1));
  std::vector<std::int32_t> ids(n);
  for (std::int32_t &id : ids)
    id = dist(rng());
  return ids;
}

/// The shape of one attention test case (q, out [batch, seq, heads *
/// headDim]; k, v [batch, seq, kvHeads * headDim]; lse [batch, heads, seq]),
/// with its packed documents.
struct AttentionCase {
  std::int64_t batch, seq, heads, kvHeads, headDim;
  bool causal;
  std::vector<std::int32_t> cuSeqlens; ///< empty: none

  std::int64_t tokens() const { return batch * seq; }
  std::int64_t qSize() const { return tokens() * heads * headDim; }
  std::int64_t kvSize() const { return tokens() * kvHeads * headDim; }
  std::int64_t lseSize() const { return batch * heads * seq; }
  double scale() const { return 1.0 / std::sqrt(double(headDim)); }
  const std::int32_t *cu() const {
    return cuSeqlens.empty() ? nullptr : cuSeqlens.data();
  }
  std::int64_t numCu() const {
    return static_cast<std::int64_t>(cuSeqlens.size());
  }
  /// Index into lse [batch, heads, seq] of flattened token t and head h.
  std::int64_t lseIndex(std::int64_t t, std::int64_t h) const {
    return (t / seq * heads + h) * seq + t % seq;
  }
  std::string describe() const {
    std::ostringstream text;
    text << "batch " << batch << " seq " << seq << " heads " << heads
         << " kvHeads " << kvHeads << " headDim " << headDim
         << (causal ? " causal" : " full");
    if (!cuSeqlens.empty()) {
      text << " cu_seqlens";
      for (std::int32_t value : cuSeqlens)
        text << " " << value;
    }
    return text.str();
  }
};

/// A buffer of n NaNs: an output the kernel must overwrite.
template <typename T> std::vector<T> poisoned(std::int64_t n) {
  return std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

template <typename T> std::vector<double> toDouble(const std::vector<T> &v) {
  return std::vector<double>(v.begin(), v.end());
}

/// max |got - ref| / max |ref|; infinity when got holds a NaN or infinity
/// or the sizes differ.
template <typename T, typename U>
double relativeError(const std::vector<T> &got, const std::vector<U> &ref) {
  if (got.size() != ref.size())
    return std::numeric_limits<double>::infinity();
  double maxDiff = 0, maxRef = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
    if (!std::isfinite(g))
      return std::numeric_limits<double>::infinity();
    maxDiff = std::max(maxDiff, std::abs(g - r));
    maxRef = std::max(maxRef, std::abs(r));
  }
  return maxRef > 0 ? maxDiff / maxRef : maxDiff;
}

/// <a, b> in double.
template <typename T, typename U>
double dot(const std::vector<T> &a, const std::vector<U> &b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    sum += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return sum;
}

/// Central differences of `loss` with respect to every element of `x`, which
/// `loss` reads; x is restored afterwards.
inline std::vector<double>
finiteDifference(std::vector<double> &x, const std::function<double()> &loss) {
  std::vector<double> grad(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    double saved = x[i];
    x[i] = saved + kFdStep;
    double plus = loss();
    x[i] = saved - kFdStep;
    double minus = loss();
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * kFdStep);
  }
  return grad;
}

/// Expects an analytic gradient to match central differences of `loss`
/// with respect to `x`.
#define EXPECT_GRADIENT_MATCHES(analytic, x, loss)                             \
  do {                                                                         \
    std::vector<double> fd_ = finiteDifference((x), (loss));                   \
    EXPECT_LE(relativeError((analytic), fd_), kGradTolerance)                  \
        << "gradient with respect to " #x;                                     \
  } while (false)

} // namespace kiln::rt::host::testing

#endif // KILN_TEST_RUNTIME_HOST_KERNELTESTSUPPORT_H
