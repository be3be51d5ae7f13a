//===- DeviceKernelTestSupport.h - The GPU tests' support -------*- C++ -*-===//
//
// Shared by the GPU tests of the device library (DeviceKernelTest.cpp,
// DeviceAttentionTest.cpp): DeviceKernels.cu compiled once per process,
// typed device buffers, launches that wait and check, and the fixture that
// skips without a GPU.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TEST_RUNTIME_CUDA_DEVICE_DEVICEKERNELTESTSUPPORT_H
#define KILN_TEST_RUNTIME_CUDA_DEVICE_DEVICEKERNELTESTSUPPORT_H

#include "runtime/Error.h"
#include "runtime/Numerics.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/Device.h"
#include "runtime/cuda/DeviceHeader.h"
#include "runtime/cuda/FlashAttention.h"
#include "runtime/cuda/KernelCache.h"
#include "runtime/cuda/Nvrtc.h"
#include "runtime/host/Kernels.h"
#include "runtime/plan/Schema.h"

#include "../../host/KernelTestSupport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kiln::rt::cuda::testing {
/// The text of DeviceKernels.cu (generated from DeviceKernelsSource.cpp.in).
const char *deviceKernelsSource();
} // namespace kiln::rt::cuda::testing

namespace kiln::rt::cuda::devtest {

using namespace kiln::rt;
using namespace kiln::rt::cuda;
using kiln::rt::host::testing::randomIds;
using kiln::rt::host::testing::randomVector;
using kiln::rt::host::testing::relativeError;

//===----------------------------------------------------------------------===//
// Storage types and tolerances
//===----------------------------------------------------------------------===//

enum class DType { F32, BF16 };
constexpr DType kDTypes[] = {DType::F32, DType::BF16};

inline const char *tagOf(DType type) {
  return type == DType::F32 ? "f32" : "bf16";
}
inline std::size_t bytesOf(DType type) { return type == DType::F32 ? 4 : 2; }

/// The bound on max |got - ref| / max |ref| of an output stored as `type`.
inline double toleranceOf(DType type) {
  return type == DType::F32 ? 1e-5 : 2e-2;
}

/// The bound for FP32 outputs computed from exact inputs of either type.
constexpr double kFloatTolerance = 1e-5;

/// The value a tensor of `type` holds for x.
inline double representable(double x, DType type) {
  float f = static_cast<float>(x);
  return type == DType::BF16 ? roundToBf16(f) : f;
}

/// n values uniform in [lo, hi) that `type` holds exactly.
inline std::vector<double> randomValues(std::int64_t n, DType type,
                                        double lo = -1.0, double hi = 1.0) {
  std::vector<double> values = randomVector<double>(n, lo, hi);
  for (double &x : values)
    x = representable(x, type);
  return values;
}

inline std::vector<double> representableAll(std::vector<double> values,
                                            DType type) {
  for (double &x : values)
    x = representable(x, type);
  return values;
}

//===----------------------------------------------------------------------===//
// Device memory and launches
//===----------------------------------------------------------------------===//

/// The device context and DeviceKernels.cu compiled for the device, loaded
/// once per process.
class DeviceModule {
public:
  static DeviceModule &get() {
    static DeviceModule instance;
    return instance;
  }

  CUfunction function(const std::string &name) {
    auto it = functions.find(name);
    if (it != functions.end())
      return it->second;
    CUfunction f;
    KILN_CUDA_CHECK(driver().cuModuleGetFunction(&f, module, name.c_str()));
    functions.emplace(name, f);
    return f;
  }

private:
  DeviceModule() {
    std::string why;
    std::optional<DeviceInfo> device = probeDevice(&why);
    if (!device)
      throw Error("no device: " + why);
    CUdevice handle;
    KILN_CUDA_CHECK(driver().cuDeviceGet(&handle, device->ordinal));
    KILN_CUDA_CHECK(driver().cuDevicePrimaryCtxRetain(&context, handle));
    KILN_CUDA_CHECK(driver().cuCtxSetCurrent(context));

    CompileRequest request{"DeviceKernels",
                           kiln::rt::cuda::testing::deviceKernelsSource(),
                           device->arch(),
                           {},
                           {{plan::kDeviceHeader, deviceHeaderSource()}}};
    // ctest runs each test in its own process: compile once, then hit the
    // on-disk cache (keyed by everything that determines the cubin).
    KernelCache cache(std::filesystem::temp_directory_path() /
                      "kiln-device-kernel-test");
    std::vector<CompiledKernel> compiled =
        compileKernels({request}, &cache, /*threads=*/1);
    cubin = std::move(compiled.at(0).cubin);
    KILN_CUDA_CHECK(driver().cuModuleLoadData(&module, cubin.data()));
  }

  CUcontext context = nullptr;
  CUmodule module = nullptr;
  std::vector<std::byte> cubin;
  std::map<std::string, CUfunction> functions;
};

/// A device allocation with 16 spare bytes, so that a view may start one
/// element in (misaligned), filled with 0xFF bytes (NaN in f32 and bf16).
class DeviceBuffer {
public:
  explicit DeviceBuffer(std::size_t bytes) : bytes(bytes) {
    KILN_CUDA_CHECK(driver().cuMemAlloc(&base, bytes + 16));
    KILN_CUDA_CHECK(driver().cuMemsetD8(base, 0xFF, bytes + 16));
  }
  ~DeviceBuffer() {
    if (base)
      driver().cuMemFree(base);
  }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;

  CUdeviceptr base = 0;
  std::size_t bytes;
};

/// A tensor of `count` elements of `type` on the device, optionally
/// starting one element past a 16-byte boundary.
struct DeviceTensor {
  DeviceTensor(DType type, std::int64_t count, bool misaligned = false)
      : type(type), count(count), offset(misaligned ? bytesOf(type) : 0),
        buffer(std::make_unique<DeviceBuffer>(count * bytesOf(type))) {}

  CUdeviceptr ptr() const { return buffer->base + offset; }

  void upload(const std::vector<double> &values) {
    EXPECT_EQ(static_cast<std::int64_t>(values.size()), count);
    if (type == DType::F32) {
      std::vector<float> data(values.begin(), values.end());
      KILN_CUDA_CHECK(
          driver().cuMemcpyHtoD(ptr(), data.data(), data.size() * 4));
    } else {
      std::vector<std::uint16_t> data(values.size());
      for (std::size_t i = 0; i < values.size(); ++i)
        data[i] = floatToBf16(static_cast<float>(values[i]));
      KILN_CUDA_CHECK(
          driver().cuMemcpyHtoD(ptr(), data.data(), data.size() * 2));
    }
  }

  std::vector<double> download() const {
    std::vector<double> values(count);
    if (type == DType::F32) {
      std::vector<float> data(count);
      KILN_CUDA_CHECK(driver().cuMemcpyDtoH(data.data(), ptr(), count * 4));
      std::copy(data.begin(), data.end(), values.begin());
    } else {
      std::vector<std::uint16_t> data(count);
      KILN_CUDA_CHECK(driver().cuMemcpyDtoH(data.data(), ptr(), count * 2));
      for (std::int64_t i = 0; i < count; ++i)
        values[i] = bf16ToFloat(data[i]);
    }
    return values;
  }

  DType type;
  std::int64_t count;
  std::size_t offset;
  std::unique_ptr<DeviceBuffer> buffer;
};

inline DeviceTensor toDevice(const std::vector<double> &values, DType type,
                             bool misaligned = false) {
  DeviceTensor tensor(type, static_cast<std::int64_t>(values.size()),
                      misaligned);
  tensor.upload(values);
  return tensor;
}

/// int32 data (ids, targets, positions, cu_seqlens, error flags).
struct DeviceInts {
  explicit DeviceInts(const std::vector<std::int32_t> &values)
      : count(values.size()),
        buffer(std::make_unique<DeviceBuffer>(values.size() * 4)) {
    if (!values.empty())
      KILN_CUDA_CHECK(driver().cuMemcpyHtoD(buffer->base, values.data(),
                                            values.size() * 4));
  }
  CUdeviceptr ptr() const { return buffer->base; }
  std::vector<std::int32_t> download() const {
    std::vector<std::int32_t> values(count);
    if (count)
      KILN_CUDA_CHECK(
          driver().cuMemcpyDtoH(values.data(), buffer->base, count * 4));
    return values;
  }
  std::size_t count;
  std::unique_ptr<DeviceBuffer> buffer;
};

struct Grid {
  unsigned x = 1, y = 1, z = 1;
};

/// Launches kernel `name` of DeviceKernels.cu and waits for it. Arguments
/// must have the wrapper's exact parameter types: CUdeviceptr for pointers,
/// long long, int, float, double, bool.
template <typename... Args>
void launchShared(const std::string &name, Grid grid, unsigned threads,
                  unsigned sharedBytes, Args... args) {
  CUfunction f = DeviceModule::get().function(name);
  if (sharedBytes > 48 * 1024)
    KILN_CUDA_CHECK(driver().cuFuncSetAttribute(
        f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        static_cast<int>(sharedBytes)));
  void *params[] = {static_cast<void *>(&args)..., nullptr};
  KILN_CUDA_CHECK(driver().cuLaunchKernel(f, grid.x, grid.y, grid.z, threads, 1,
                                          1, sharedBytes, nullptr, params,
                                          nullptr));
  KILN_CUDA_CHECK(driver().cuCtxSynchronize());
}

/// launchShared without dynamic shared memory.
template <typename... Args>
void launch(const std::string &name, Grid grid, unsigned threads,
            Args... args) {
  launchShared(name, grid, threads, 0, args...);
}

inline unsigned ceilDiv(std::int64_t a, std::int64_t b) {
  return static_cast<unsigned>((a + b - 1) / b);
}

/// A wrapper's name for `type`: "rmsNorm" -> "rmsNorm_bf16<suffix>".
inline std::string kernel(const char *function, DType type,
                          const char *suffix = "") {
  return std::string(function) + "_" + tagOf(type) + suffix;
}

/// The block sizes of the block-per-row wrappers (DeviceKernels.cu).
struct RowVariant {
  const char *suffix;
  unsigned threads;
};
constexpr RowVariant kRowVariants[] = {
    {"", 256}, {"_t32", 32}, {"_t1024", 1024}};
constexpr unsigned kColumnThreads = 256;
constexpr unsigned kSingleThreads = 1024;
constexpr unsigned kAttentionThreads = 128;

constexpr CUdeviceptr kNull = 0;

/// Every test: per-test random data, skipped without a GPU.
class DeviceKernelTest : public kiln::rt::host::testing::KernelTest {
protected:
  void SetUp() override {
    KernelTest::SetUp();
    std::string why;
    if (!probeDevice(&why))
      GTEST_SKIP() << why;
    DeviceModule::get(); // compile once, before the first launch
  }
};

#define EXPECT_CLOSE(got, ref, tolerance)                                      \
  EXPECT_LE(relativeError((got), (ref)), (tolerance)) << #got

} // namespace kiln::rt::cuda::devtest

#endif // KILN_TEST_RUNTIME_CUDA_DEVICE_DEVICEKERNELTESTSUPPORT_H
