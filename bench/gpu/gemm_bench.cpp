//===- gemm_bench.cpp - Kiln's GEMMs at a model's shapes ------------------===//
//
//   kiln-gemm-bench <m> <n> <k> [<m> <n> <k> ...]
//
// Times Kiln's cuBLASLt GEMM (the path its plans take, BF16 in and out, FP32
// accumulation, row-major, B transposed as in x W^T) at each shape with CUDA
// events: warm-up, then the median of 20 timed runs over random data, and
// prints one line per shape: "m n k ms TFLOP/s".
//
//===----------------------------------------------------------------------===//

#include "runtime/Numerics.h"
#include "runtime/cuda/CublasLt.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/Device.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

using namespace kiln::rt;
using namespace kiln::rt::cuda;

int main(int argc, char **argv) {
  if (argc < 4 || (argc - 1) % 3 != 0) {
    std::fprintf(stderr, "usage: kiln-gemm-bench <m> <n> <k> [...]\n");
    return 1;
  }
  try {
    std::string why;
    std::optional<DeviceInfo> device = probeDevice(&why);
    if (!device) {
      std::fprintf(stderr, "kiln-gemm-bench: no usable GPU: %s\n", why.c_str());
      return 2;
    }
    const DriverApi &cu = driver();
    CUdevice handle;
    CUcontext context;
    CUstream stream;
    KILN_CUDA_CHECK(cu.cuDeviceGet(&handle, device->ordinal));
    KILN_CUDA_CHECK(cu.cuDevicePrimaryCtxRetain(&context, handle));
    KILN_CUDA_CHECK(cu.cuCtxSetCurrent(context));
    KILN_CUDA_CHECK(cu.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    LtGemm gemm;
    constexpr std::size_t kWorkspace = 32u << 20;
    CUdeviceptr workspace;
    KILN_CUDA_CHECK(cu.cuMemAlloc(&workspace, kWorkspace));
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::printf("# %s (%s), BF16 GEMMs through cuBLASLt, median of 20\n",
                device->name.c_str(), device->arch().c_str());
    for (int i = 1; i + 2 < argc; i += 3) {
      int64_t m = std::atoll(argv[i]), n = std::atoll(argv[i + 1]),
              k = std::atoll(argv[i + 2]);
      auto upload = [&](int64_t count) {
        std::vector<uint16_t> host(count);
        for (uint16_t &x : host)
          x = floatToBf16(normal(rng));
        CUdeviceptr p;
        KILN_CUDA_CHECK(cu.cuMemAlloc(&p, count * 2));
        KILN_CUDA_CHECK(cu.cuMemcpyHtoD(p, host.data(), count * 2));
        return p;
      };
      CUdeviceptr a = upload(m * k), b = upload(n * k), c = upload(m * n);
      auto once = [&] {
        gemm.run(stream, ElemType::BF16, 1, m, n, k, false, true,
                 reinterpret_cast<const void *>(a),
                 reinterpret_cast<const void *>(b), reinterpret_cast<void *>(c),
                 nullptr, reinterpret_cast<void *>(workspace), kWorkspace);
      };
      for (int w = 0; w < 5; ++w)
        once();
      std::vector<float> times;
      CUevent start, stop;
      KILN_CUDA_CHECK(cu.cuEventCreate(&start, CU_EVENT_DEFAULT));
      KILN_CUDA_CHECK(cu.cuEventCreate(&stop, CU_EVENT_DEFAULT));
      for (int r = 0; r < 20; ++r) {
        KILN_CUDA_CHECK(cu.cuEventRecord(start, stream));
        once();
        KILN_CUDA_CHECK(cu.cuEventRecord(stop, stream));
        KILN_CUDA_CHECK(cu.cuEventSynchronize(stop));
        float ms;
        KILN_CUDA_CHECK(cu.cuEventElapsedTime(&ms, start, stop));
        times.push_back(ms);
      }
      std::sort(times.begin(), times.end());
      double ms = times[times.size() / 2];
      std::printf("%lld %lld %lld %.4f %.1f\n", static_cast<long long>(m),
                  static_cast<long long>(n), static_cast<long long>(k), ms,
                  2.0 * m * n * k / (ms * 1e-3) / 1e12);
      cu.cuEventDestroy(start);
      cu.cuEventDestroy(stop);
      for (CUdeviceptr p : {a, b, c})
        cu.cuMemFree(p);
    }
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "kiln-gemm-bench: error: %s\n", e.what());
    return 1;
  }
}
