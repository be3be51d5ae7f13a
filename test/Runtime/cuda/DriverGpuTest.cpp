//===- DriverGpuTest.cpp - NVRTC to launch, on a GPU ----------------------===//
//
// The driver table end to end: a BF16 kernel compiled by NVRTC for the
// device's own arch is loaded, launched and timed, and computes what the
// host computes, bit for bit. Skips where there is no GPU.
//
//===----------------------------------------------------------------------===//

#include "runtime/Numerics.h"
#include "runtime/cuda/Nvrtc.h"

#include "CudaTestSupport.h"
#include "GpuTestSupport.h"
#include "test/Runtime/host/KernelTestSupport.h"

#include <cmath>

using namespace kiln::rt;
using namespace kiln::rt::cuda;
using namespace kiln::rt::cuda::testing;
using kiln::rt::host::testing::randomVector;
using kiln::rt::host::testing::seedFromTestName;

namespace {

class DriverGpuTest : public GpuTest {};

// y = a x + y in BF16: NVRTC contracts a * x + y into one FMA, and the host
// reference does the same before rounding to BF16.
TEST_F(DriverGpuTest, CompilesLoadsAndLaunchesABf16Kernel) {
  seedFromTestName();
  CompiledKernel kernel = compileKernel(axpyRequest(device_.arch()));
  const DriverApi &api = driver();
  CUmodule module = nullptr;
  KILN_CUDA_CHECK(api.cuModuleLoadData(&module, kernel.cubin.data()));
  CUfunction function = nullptr;
  KILN_CUDA_CHECK(api.cuModuleGetFunction(&function, module, "axpy_bf16"));

  int n = 1000;
  float a = 0.75f;
  std::vector<float> x = randomVector<float>(n), y = randomVector<float>(n);
  std::vector<std::uint16_t> xBits(n), yBits(n);
  for (int i = 0; i < n; ++i) {
    xBits[i] = floatToBf16(x[i]);
    yBits[i] = floatToBf16(y[i]);
  }
  DeviceBuffer xDevice(xBits), yDevice(yBits);

  CUevent start = nullptr, stop = nullptr;
  KILN_CUDA_CHECK(api.cuEventCreate(&start, CU_EVENT_DEFAULT));
  KILN_CUDA_CHECK(api.cuEventCreate(&stop, CU_EVENT_DEFAULT));
  CUdeviceptr xPointer = xDevice.get(), yPointer = yDevice.get();
  void *params[] = {&xPointer, &yPointer, &a, &n};
  KILN_CUDA_CHECK(api.cuEventRecord(start, stream_));
  KILN_CUDA_CHECK(api.cuLaunchKernel(function, (n + 127) / 128, 1, 1, 128, 1, 1,
                                     0, stream_, params, nullptr));
  KILN_CUDA_CHECK(api.cuEventRecord(stop, stream_));
  KILN_CUDA_CHECK(api.cuEventSynchronize(stop));
  float milliseconds = -1;
  KILN_CUDA_CHECK(api.cuEventElapsedTime(&milliseconds, start, stop));
  EXPECT_GE(milliseconds, 0.0f);

  std::vector<std::uint16_t> got = yDevice.download<std::uint16_t>(n);
  for (int i = 0; i < n; ++i) {
    float expected = std::fma(a, bf16ToFloat(xBits[i]), bf16ToFloat(yBits[i]));
    ASSERT_EQ(got[i], floatToBf16(expected)) << "element " << i;
  }

  KILN_CUDA_CHECK(api.cuEventDestroy(start));
  KILN_CUDA_CHECK(api.cuEventDestroy(stop));
  KILN_CUDA_CHECK(api.cuModuleUnload(module));
}

} // namespace
