//===- GpuTestSupport.h - A GPU for a test, or a visible skip ---*- C++ -*-===//
//
// The fixture of the `gpu`-labelled tests (kiln-gpu-tests): on a machine
// without a usable GPU every test skips with probeDevice's reason, which
// ctest shows as "Skipped"; with one, each test gets the device's primary
// context (current) and a stream. Device buffers are plain RAII.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TEST_RUNTIME_CUDA_GPUTESTSUPPORT_H
#define KILN_TEST_RUNTIME_CUDA_GPUTESTSUPPORT_H

#include "runtime/cuda/CudaApi.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <vector>

namespace kiln::rt::cuda::testing {

/// A test that needs a GPU: skipped (with the reason) where there is none.
class GpuTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::string why;
    std::optional<DeviceInfo> device = probeDevice(&why);
    if (!device)
      GTEST_SKIP() << "no usable GPU: " << why;
    device_ = *device;
    const DriverApi &api = driver();
    KILN_CUDA_CHECK(api.cuDeviceGet(&cuDevice_, device_.ordinal));
    KILN_CUDA_CHECK(api.cuDevicePrimaryCtxRetain(&context_, cuDevice_));
    KILN_CUDA_CHECK(api.cuCtxSetCurrent(context_));
    // A blocking stream: DeviceBuffer's synchronous copies and poison
    // memsets run on the legacy default stream, which it waits for.
    KILN_CUDA_CHECK(api.cuStreamCreate(&stream_, CU_STREAM_DEFAULT));
  }

  void TearDown() override {
    if (stream_)
      driver().cuStreamDestroy(stream_);
    if (context_)
      driver().cuDevicePrimaryCtxRelease(cuDevice_);
  }

  void synchronize() { KILN_CUDA_CHECK(driver().cuStreamSynchronize(stream_)); }

  DeviceInfo device_;
  CUdevice cuDevice_ = 0;
  CUcontext context_ = nullptr;
  CUstream stream_ = nullptr;
};

/// Device memory, freed with the object.
class DeviceBuffer {
public:
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    KILN_CUDA_CHECK(driver().cuMemAlloc(&pointer_, bytes ? bytes : 1));
  }
  /// A buffer holding `values`.
  template <typename T>
  explicit DeviceBuffer(const std::vector<T> &values)
      : DeviceBuffer(values.size() * sizeof(T)) {
    KILN_CUDA_CHECK(driver().cuMemcpyHtoD(pointer_, values.data(),
                                          values.size() * sizeof(T)));
  }
  ~DeviceBuffer() { driver().cuMemFree(pointer_); }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;

  /// Every byte 0xff: NaN in F32 and BF16, so unwritten outputs show.
  void poison() {
    KILN_CUDA_CHECK(driver().cuMemsetD8(pointer_, 0xff, bytes_));
  }

  /// The first `count` elements (synchronous).
  template <typename T> std::vector<T> download(std::size_t count) const {
    std::vector<T> values(count);
    KILN_CUDA_CHECK(
        driver().cuMemcpyDtoH(values.data(), pointer_, count * sizeof(T)));
    return values;
  }

  CUdeviceptr get() const { return pointer_; }
  /// The address as a pointer, `offsetBytes` in.
  void *pointer(std::size_t offsetBytes = 0) const {
    return reinterpret_cast<void *>(pointer_ + offsetBytes);
  }

private:
  CUdeviceptr pointer_ = 0;
  std::size_t bytes_;
};

} // namespace kiln::rt::cuda::testing

#endif // KILN_TEST_RUNTIME_CUDA_GPUTESTSUPPORT_H
