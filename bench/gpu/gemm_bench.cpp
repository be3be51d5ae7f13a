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

#include "BenchSupport.h"

#include "runtime/cuda/CublasLt.h"

#include <cstdio>
#include <cstdlib>

using namespace kiln::rt;
using namespace kiln::rt::cuda;
namespace bench = kiln::bench;

int main(int argc, char **argv) {
  if (argc < 4 || (argc - 1) % 3 != 0) {
    std::fprintf(stderr, "usage: kiln-gemm-bench <m> <n> <k> [...]\n");
    return 1;
  }
  try {
    std::optional<bench::Gpu> gpu = bench::openGpu("kiln-gemm-bench");
    if (!gpu)
      return 2;
    const DriverApi &cu = driver();
    LtGemm gemm;
    constexpr std::size_t kWorkspace = 32u << 20;
    CUdeviceptr workspace;
    KILN_CUDA_CHECK(cu.cuMemAlloc(&workspace, kWorkspace));
    std::mt19937 rng(1);
    std::printf("# %s (%s), BF16 GEMMs through cuBLASLt, median of 20\n",
                gpu->device.name.c_str(), gpu->device.arch().c_str());
    for (int i = 1; i + 2 < argc; i += 3) {
      int64_t m = std::atoll(argv[i]), n = std::atoll(argv[i + 1]),
              k = std::atoll(argv[i + 2]);
      CUdeviceptr a = bench::uploadRandomBf16(m * k, rng),
                  b = bench::uploadRandomBf16(n * k, rng),
                  c = bench::uploadRandomBf16(m * n, rng);
      const double ms = bench::medianMilliseconds(
          gpu->stream,
          [&] {
            gemm.run(gpu->stream, ElemType::BF16, 1, m, n, k, false, true,
                     reinterpret_cast<const void *>(a),
                     reinterpret_cast<const void *>(b),
                     reinterpret_cast<void *>(c), nullptr,
                     reinterpret_cast<void *>(workspace), kWorkspace);
          },
          /*warmup=*/5, /*runs=*/20);
      std::printf("%lld %lld %lld %.4f %.1f\n", static_cast<long long>(m),
                  static_cast<long long>(n), static_cast<long long>(k), ms,
                  2.0 * m * n * k / (ms * 1e-3) / 1e12);
      for (CUdeviceptr p : {a, b, c})
        cu.cuMemFree(p);
    }
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "kiln-gemm-bench: error: %s\n", e.what());
    return 1;
  }
}
