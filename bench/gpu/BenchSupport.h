//===- BenchSupport.h - What the GPU benchmarks share -----------*- C++ -*-===//
//
// Opening the GPU, random BF16 inputs and CUDA-event timing, for
// kiln-gemm-bench and kiln-flash-bench.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_BENCH_GPU_BENCHSUPPORT_H
#define KILN_BENCH_GPU_BENCHSUPPORT_H

#include "runtime/Numerics.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/Device.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace kiln::bench {

/// The first usable GPU, with its primary context current, and a stream.
struct Gpu {
  rt::cuda::DeviceInfo device;
  CUstream stream = nullptr;
};

/// Opens the GPU, or prints why there is none (prefixed with `tool`) and
/// returns nullopt.
inline std::optional<Gpu> openGpu(const char *tool) {
  std::string why;
  std::optional<rt::cuda::DeviceInfo> device = rt::cuda::probeDevice(&why);
  if (!device) {
    std::fprintf(stderr, "%s: no usable GPU: %s\n", tool, why.c_str());
    return std::nullopt;
  }
  const rt::cuda::DriverApi &cu = rt::cuda::driver();
  Gpu gpu{*device};
  CUdevice handle;
  CUcontext context;
  KILN_CUDA_CHECK(cu.cuDeviceGet(&handle, device->ordinal));
  KILN_CUDA_CHECK(cu.cuDevicePrimaryCtxRetain(&context, handle));
  KILN_CUDA_CHECK(cu.cuCtxSetCurrent(context));
  // A blocking stream: the synchronous uploads below run on the legacy
  // default stream, which it waits for.
  KILN_CUDA_CHECK(cu.cuStreamCreate(&gpu.stream, CU_STREAM_DEFAULT));
  return gpu;
}

/// `count` BF16 values drawn from a standard normal, in new device memory.
inline CUdeviceptr uploadRandomBf16(std::int64_t count, std::mt19937 &rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> host(count);
  for (std::uint16_t &x : host)
    x = rt::floatToBf16(normal(rng));
  const rt::cuda::DriverApi &cu = rt::cuda::driver();
  CUdeviceptr p;
  KILN_CUDA_CHECK(cu.cuMemAlloc(&p, count * 2));
  KILN_CUDA_CHECK(cu.cuMemcpyHtoD(p, host.data(), count * 2));
  return p;
}

/// The median of `runs` CUDA-event timings of work() on `stream`, in
/// milliseconds, after `warmup` untimed runs.
inline double medianMilliseconds(CUstream stream,
                                 const std::function<void()> &work, int warmup,
                                 int runs) {
  const rt::cuda::DriverApi &cu = rt::cuda::driver();
  for (int w = 0; w < warmup; ++w)
    work();
  CUevent start, stop;
  KILN_CUDA_CHECK(cu.cuEventCreate(&start, CU_EVENT_DEFAULT));
  KILN_CUDA_CHECK(cu.cuEventCreate(&stop, CU_EVENT_DEFAULT));
  std::vector<float> times;
  for (int r = 0; r < runs; ++r) {
    KILN_CUDA_CHECK(cu.cuEventRecord(start, stream));
    work();
    KILN_CUDA_CHECK(cu.cuEventRecord(stop, stream));
    KILN_CUDA_CHECK(cu.cuEventSynchronize(stop));
    float ms;
    KILN_CUDA_CHECK(cu.cuEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cu.cuEventDestroy(start);
  cu.cuEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

} // namespace kiln::bench

#endif // KILN_BENCH_GPU_BENCHSUPPORT_H
