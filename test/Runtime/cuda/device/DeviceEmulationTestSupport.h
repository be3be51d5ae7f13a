//===- DeviceEmulationTestSupport.h - The emulation tests' support -*- C++
//-*-===//
//
// Shared by the tests of the device library under the CPU emulation
// (DeviceEmulationTest.cpp, DeviceEmulationRowTest.cpp): the bounds, random
// values the storage type holds exactly, NaN-poisoned device-style buffers
// at chosen alignments, and the storage types the typed suites run over.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TEST_RUNTIME_CUDA_DEVICE_DEVICEEMULATIONTESTSUPPORT_H
#define KILN_TEST_RUNTIME_CUDA_DEVICE_DEVICEEMULATIONTESTSUPPORT_H

#include "DeviceEmulation.h"

#include "runtime/cuda/device/kiln_device.cuh"

#include "../../host/KernelTestSupport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

namespace kiln::dev::testing {

using kiln::rt::host::testing::randomVector;

template <typename T>
constexpr double kTolerance = std::is_same_v<T, float> ? 1e-5 : 2e-2;
/// FP32 results (statistics, lse, losses, norms) of exact inputs.
constexpr double kFloatTolerance = 1e-5;

/// The value T holds for x.
template <typename T> double representable(double x) {
  return kiln::dev::toFloat(kiln::dev::fromFloat<T>(static_cast<float>(x)));
}

/// n values uniform in [lo, hi) that T holds exactly.
template <typename T>
std::vector<double> randomValues(std::int64_t n, double lo = -1.0,
                                 double hi = 1.0) {
  std::vector<double> values = randomVector<double>(n, lo, hi);
  for (double &x : values)
    x = representable<T>(x);
  return values;
}

template <typename T> std::vector<double> widen(const T *p, std::int64_t n) {
  std::vector<double> values(n);
  for (std::int64_t i = 0; i < n; ++i)
    values[i] = kiln::dev::toFloat(p[i]);
  return values;
}

/// A device-style buffer of T: NaN-poisoned, its data starting `offset`
/// elements past a 16-byte boundary (1 makes the vector path impossible).
template <typename T> class Buffer {
public:
  Buffer(std::int64_t n, int offset)
      : n(n), offset(offset), storage(new (std::align_val_t(16)) T[n + 8]) {
    std::fill(storage.get(), storage.get() + n + 8,
              kiln::dev::fromFloat<T>(std::numeric_limits<float>::quiet_NaN()));
  }
  Buffer(const std::vector<double> &values, int offset)
      : Buffer(static_cast<std::int64_t>(values.size()), offset) {
    for (std::int64_t i = 0; i < n; ++i)
      data()[i] = kiln::dev::fromFloat<T>(static_cast<float>(values[i]));
  }
  T *data() { return storage.get() + offset; }
  std::vector<double> values() { return widen(data(), n); }

private:
  struct AlignedDelete {
    void operator()(T *p) const {
      ::operator delete[](p, std::align_val_t(16));
    }
  };
  std::int64_t n;
  int offset;
  std::unique_ptr<T[], AlignedDelete> storage;
};

/// FP32 outputs (statistics, losses) poisoned with NaN.
inline std::vector<float> poisonedFloats(std::int64_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

inline std::vector<double> widen(const std::vector<float> &v) {
  return std::vector<double>(v.begin(), v.end());
}

using StorageTypes = ::testing::Types<float, __nv_bfloat16>;
struct StorageTypeNames {
  template <typename T> static std::string GetName(int) {
    return std::is_same_v<T, float> ? "f32" : "bf16";
  }
};

} // namespace kiln::dev::testing

#define EXPECT_CLOSE(got, ref, tolerance)                                      \
  EXPECT_LE(::kiln::rt::host::testing::relativeError((got), (ref)),            \
            (tolerance))                                                       \
      << #got

#endif // KILN_TEST_RUNTIME_CUDA_DEVICE_DEVICEEMULATIONTESTSUPPORT_H
