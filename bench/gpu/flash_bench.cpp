//===- flash_bench.cpp - Kiln's FlashAttention kernels on a GPU -----------===//
//
//   kiln-flash-bench [--fwd-tiles Q,K,S] [--bwd-tiles Q,K]
//                    [--compile-only ARCH]
//                    <batch> <seq> <heads> <kv_heads> <head_dim> <causal>
//                    [<batch> <seq> ...]
//
// (--compile-only compiles the kernels for ARCH, e.g. sm_90a, prints NVRTC's
// register and spill figures and exits: no GPU needed.)
// Times the tensor-core FlashAttention kernels of the device library
// (runtime/cuda/device/kiln_device.cuh), compiled by NVRTC for this GPU
// exactly as the code generator wraps them, on random BF16 data: the
// forward (one launch) and the backward (delta with the dq accumulator
// zeroed, the main kernel, the dq finish). Warm-up, then the median of 20
// runs timed with CUDA events. Prints per shape
//   "batch seq heads kv_heads head_dim causal fwd_ms fwd_TFLOPs bwd_ms
//   bwd_TFLOPs"
// with FlashAttention's FLOP counts: 4 b h s^2 d forward and 2.5 times
// that backward, halved when causal. Default tiles: the GPU cost model's
// (passes/CostModel.cpp) for H100 and A100: forward 128 queries x (128 keys
// up to head dim 64, else 64), 2 stages; backward 64 queries x 128 keys.
//
//===----------------------------------------------------------------------===//

#include "BenchSupport.h"

#include "runtime/cuda/DeviceHeader.h"
#include "runtime/cuda/FlashAttention.h"
#include "runtime/cuda/Nvrtc.h"
#include "runtime/plan/Schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace kiln::rt;
using namespace kiln::rt::cuda;
namespace bench = kiln::bench;

namespace {

struct Tiles {
  int fwdQ = 128, fwdK = 0, stages = 2, bwdQ = 64, bwdK = 128;
};

/// The generated wrappers, as compiler/translate/cuda/Attention.cpp writes
/// them.
std::string forwardSource(const std::string &name, int d, const Tiles &t) {
  return fmt::format(
      "#include \"kiln_device.cuh\"\n"
      "extern \"C\" __global__ void __launch_bounds__({0}) {1}("
      "const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 "
      "*v, __nv_bfloat16 *out, float *lse, long long batch, long long seq, "
      "long long heads, long long kvHeads, float scale, long long causal) {{\n"
      "  kiln::dev::flashAttentionForward<{2}, {3}, {4}, {5}>(q, k, v, out, "
      "lse, (int)batch, (int)seq, (int)heads, (int)kvHeads, scale, causal != "
      "0, nullptr, 0);\n}}\n",
      t.fwdQ / 16 * 32, name, d, t.fwdQ, t.fwdK, t.stages);
}

std::string backwardSource(const std::string &name, int d, const Tiles &t) {
  return fmt::format(
      "#include \"kiln_device.cuh\"\n"
      "extern \"C\" __global__ void __launch_bounds__(32) {0}_delta("
      "const __nv_bfloat16 *dout, const __nv_bfloat16 *out, float *delta, "
      "long long batch, long long seq, long long heads, long long headDim, "
      "float *dqAccum) {{\n"
      "  kiln::dev::attentionBackwardPreprocess<__nv_bfloat16, 32>(dout, out, "
      "delta, (int)batch, (int)seq, (int)heads, (int)headDim, dqAccum);\n}}\n"
      "extern \"C\" __global__ void __launch_bounds__({1}) {0}("
      "const __nv_bfloat16 *dout, const __nv_bfloat16 *q, const "
      "__nv_bfloat16 *k, const __nv_bfloat16 *v, const float *lse, const "
      "float *delta, float *dqAccum, __nv_bfloat16 *dk, __nv_bfloat16 *dv, "
      "long long batch, long long seq, long long heads, long long kvHeads, "
      "float scale, long long causal) {{\n"
      "  kiln::dev::flashAttentionBackward<{2}, {3}, {4}>(dout, q, k, v, lse, "
      "delta, dqAccum, dk, dv, (int)batch, (int)seq, (int)heads, "
      "(int)kvHeads, scale, causal != 0, nullptr, 0);\n}}\n"
      "extern \"C\" __global__ void __launch_bounds__(256) {0}_dq("
      "const float *dqAccum, __nv_bfloat16 *dq, long long n, float scale) {{\n"
      "  kiln::dev::flashAttentionFinishDq<__nv_bfloat16>(dqAccum, dq, n, "
      "scale);\n}}\n",
      name, t.bwdK / 16 * 32, d, t.bwdQ, t.bwdK);
}

/// The forward and backward modules for head dim d.
std::vector<CompileRequest> requestsFor(int d, const Tiles &t,
                                        const std::string &arch) {
  const std::string name = fmt::format("kiln_flash_d{}", d);
  return {{name + "_fwd",
           forwardSource(name + "_fwd", d, t),
           arch,
           {},
           {{kiln::plan::kDeviceHeader, deviceHeaderSource()}}},
          {name + "_bwd",
           backwardSource(name + "_bwd", d, t),
           arch,
           {},
           {{kiln::plan::kDeviceHeader, deviceHeaderSource()}}}};
}

int parseTiles(const char *text, int *values, int count) {
  int n = 0;
  for (const char *p = text; *p && n < count; ++n) {
    values[n] = std::atoi(p);
    p = std::strchr(p, ',');
    if (!p)
      return n + 1;
    ++p;
  }
  return n;
}

} // namespace

int main(int argc, char **argv) {
  Tiles tiles;
  int arg = 1;
  bool fwdGiven = false;
  std::string compileOnly;
  for (; arg + 1 < argc && argv[arg][0] == '-'; arg += 2) {
    int values[3] = {};
    if (!std::strcmp(argv[arg], "--compile-only")) {
      compileOnly = argv[arg + 1];
    } else if (!std::strcmp(argv[arg], "--fwd-tiles") &&
               parseTiles(argv[arg + 1], values, 3) == 3) {
      tiles.fwdQ = values[0], tiles.fwdK = values[1], tiles.stages = values[2];
      fwdGiven = true;
    } else if (!std::strcmp(argv[arg], "--bwd-tiles") &&
               parseTiles(argv[arg + 1], values, 2) == 2) {
      tiles.bwdQ = values[0], tiles.bwdK = values[1];
    } else {
      std::fprintf(stderr, "kiln-flash-bench: bad option %s %s\n", argv[arg],
                   argv[arg + 1]);
      return 1;
    }
  }
  if (argc - arg < 6 || (argc - arg) % 6 != 0) {
    std::fprintf(stderr,
                 "usage: kiln-flash-bench [--fwd-tiles Q,K,S] [--bwd-tiles "
                 "Q,K] <batch> <seq> <heads> <kv_heads> <head_dim> <causal> "
                 "[...]\n");
    return 1;
  }
  // The forward's key block, unless given: the cost model's for the head
  // dim.
  auto tilesFor = [&](int d) {
    Tiles t = tiles;
    if (!fwdGiven)
      t.fwdK = d <= 64 ? 128 : 64;
    return t;
  };
  try {
    if (!compileOnly.empty()) {
      for (; arg + 5 < argc; arg += 6) {
        const int d = std::atoi(argv[arg + 4]);
        std::vector<CompileRequest> requests =
            requestsFor(d, tilesFor(d), compileOnly);
        for (CompileRequest &request : requests)
          request.options.push_back("--ptxas-options=-v");
        for (const CompiledKernel &kernel :
             compileKernels(requests, nullptr, 2))
          std::printf("%s: %zu bytes of cubin\n%s", kernel.name.c_str(),
                      kernel.cubin.size(), kernel.log.c_str());
      }
      return 0;
    }
    std::optional<bench::Gpu> gpu = bench::openGpu("kiln-flash-bench");
    if (!gpu)
      return 2;
    const DriverApi &cu = driver();
    const CUstream stream = gpu->stream;
    std::printf("# %s (%s), Kiln flash kernels (NVRTC), BF16, median of 20\n",
                gpu->device.name.c_str(), gpu->device.arch().c_str());
    std::mt19937 rng(1);

    for (; arg + 5 < argc; arg += 6) {
      const long long batch = std::atoll(argv[arg]),
                      seq = std::atoll(argv[arg + 1]),
                      heads = std::atoll(argv[arg + 2]),
                      kvHeads = std::atoll(argv[arg + 3]);
      const int d = std::atoi(argv[arg + 4]);
      const long long causal = std::atoi(argv[arg + 5]) != 0;
      const Tiles t = tilesFor(d);
      const float scale = 1.0f / std::sqrt(static_cast<float>(d));
      const std::string name = fmt::format("kiln_flash_d{}", d);
      std::vector<CUmodule> modules;
      for (const CompiledKernel &kernel :
           compileKernels(requestsFor(d, t, gpu->device.arch()), nullptr, 2)) {
        KILN_CUDA_CHECK(
            cu.cuModuleLoadData(&modules.emplace_back(), kernel.cubin.data()));
      }
      auto function = [&](CUmodule module, const std::string &fn,
                          unsigned sharedBytes) {
        CUfunction f;
        KILN_CUDA_CHECK(cu.cuModuleGetFunction(&f, module, fn.c_str()));
        if (sharedBytes > 48 * 1024)
          KILN_CUDA_CHECK(cu.cuFuncSetAttribute(
              f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
              static_cast<int>(sharedBytes)));
        return f;
      };
      const auto fwdShared = static_cast<unsigned>(
          flashForwardSharedBytes(d, t.fwdQ, t.fwdK, t.stages));
      const auto bwdShared =
          static_cast<unsigned>(flashBackwardSharedBytes(d, t.bwdQ, t.bwdK));
      CUfunction fwd = function(modules[0], name + "_fwd", fwdShared);
      CUfunction delta = function(modules[1], name + "_bwd_delta", 0);
      CUfunction bwd = function(modules[1], name + "_bwd", bwdShared);
      CUfunction finish = function(modules[1], name + "_bwd_dq", 0);

      const long long qCount = batch * seq * heads * d,
                      kvCount = batch * seq * kvHeads * d,
                      rows = batch * heads * seq;
      std::vector<CUdeviceptr> buffers;
      auto alloc = [&](long long bytes) {
        CUdeviceptr p;
        KILN_CUDA_CHECK(cu.cuMemAlloc(&p, bytes));
        buffers.push_back(p);
        return p;
      };
      auto upload = [&](long long count) {
        return buffers.emplace_back(bench::uploadRandomBf16(count, rng));
      };
      CUdeviceptr q = upload(qCount), k = upload(kvCount), v = upload(kvCount),
                  dout = upload(qCount), out = alloc(qCount * 2),
                  lse = alloc(rows * 4), deltaBuf = alloc(rows * 4),
                  dqAccum = alloc(qCount * 4), dq = alloc(qCount * 2),
                  dk = alloc(kvCount * 2), dv = alloc(kvCount * 2);
      long long dHead = d, n = qCount;
      auto launch = [&](CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                        unsigned threads, unsigned shared,
                        std::vector<void *> params) {
        KILN_CUDA_CHECK(cu.cuLaunchKernel(f, gx, gy, gz, threads, 1, 1, shared,
                                          stream, params.data(), nullptr));
      };
      auto forward = [&] {
        launch(fwd, (seq + t.fwdQ - 1) / t.fwdQ, heads, batch, t.fwdQ / 16 * 32,
               fwdShared,
               {&q, &k, &v, &out, &lse, (void *)&batch, (void *)&seq,
                (void *)&heads, (void *)&kvHeads, (void *)&scale,
                (void *)&causal});
      };
      auto backward = [&] {
        launch(delta, seq, heads, batch, 32, 0,
               {&dout, &out, &deltaBuf, (void *)&batch, (void *)&seq,
                (void *)&heads, &dHead, &dqAccum});
        launch(bwd, (seq + t.bwdK - 1) / t.bwdK, kvHeads, batch,
               t.bwdK / 16 * 32, bwdShared,
               {&dout, &q, &k, &v, &lse, &deltaBuf, &dqAccum, &dk, &dv,
                (void *)&batch, (void *)&seq, (void *)&heads, (void *)&kvHeads,
                (void *)&scale, (void *)&causal});
        launch(finish, std::min<long long>((n + 255) / 256, 65535 * 16), 1, 1,
               256, 0, {&dqAccum, &dq, &n, (void *)&scale});
      };
      forward(); // out and lse for the backward
      const double fwdMs = bench::medianMilliseconds(stream, forward, 3, 20),
                   bwdMs = bench::medianMilliseconds(stream, backward, 3, 20);
      const double fwdFlops =
          4.0 * batch * heads * double(seq) * seq * d / (causal ? 2.0 : 1.0);
      std::printf("%lld %lld %lld %lld %d %lld %.4f %.1f %.4f %.1f\n", batch,
                  seq, heads, kvHeads, d, causal, fwdMs,
                  fwdFlops / (fwdMs * 1e-3) / 1e12, bwdMs,
                  2.5 * fwdFlops / (bwdMs * 1e-3) / 1e12);
      std::fflush(stdout);
      for (CUdeviceptr p : buffers)
        cu.cuMemFree(p);
      for (CUmodule module : modules)
        cu.cuModuleUnload(module);
    }
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "kiln-flash-bench: error: %s\n", e.what());
    return 1;
  }
}
