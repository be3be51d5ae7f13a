//===- Precompile.cpp - CUDA kernels compiled ahead of time ---------------===//

#include "runtime/cuda/Precompile.h"

#include "runtime/Error.h"
#include "runtime/plan/Plan.h"
#include "runtime/plan/Schema.h"

#if KILN_ENABLE_CUDA
#include "runtime/cuda/DeviceHeader.h"
#include "runtime/cuda/Nvrtc.h"
#endif

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>
#include <thread>
#include <vector>

namespace kiln::rt {

bool precompileCuda(const std::string &planText, const std::string &arch,
                    PrecompileResult &result, std::string &error) noexcept {
#if KILN_ENABLE_CUDA
  try {
    nlohmann::json plan = nlohmann::json::parse(planText);
    namespace key = plan::key;
    if (!plan.contains(key::kCuda))
      throw Error("the plan has no CUDA kernels");
    nlohmann::json &cuda = plan[key::kCuda];
    std::string header = cuda.value(key::kHeader, plan::kDeviceHeader);
    std::vector<cuda::CompileRequest> requests;
    for (const nlohmann::json &kernel : cuda.at(key::kKernels))
      requests.push_back(
          cuda::CompileRequest{kernel.at(key::kName).get<std::string>(),
                               kernel.at(key::kSource).get<std::string>(),
                               arch,
                               {"--ptxas-options=-v"},
                               {{header, cuda::deviceHeaderSource()}}});
    // No cache here: the report needs ptxas' log of every kernel, which
    // only a real compile produces.
    int threads = std::max(1u, std::thread::hardware_concurrency());
    std::vector<cuda::CompiledKernel> kernels =
        cuda::compileKernels(requests, /*cache=*/nullptr, threads);
    int maxRegisters = 0;
    for (const cuda::CompiledKernel &kernel : kernels) {
      std::optional<cuda::PtxasStats> stats =
          cuda::parsePtxasStats(kernel.log, kernel.name);
      if (!stats)
        throw Error(fmt::format("no ptxas report for kernel {}", kernel.name));
      bool spills = stats->spillStores > 0 || stats->spillLoads > 0;
      result.spillingKernels += spills;
      maxRegisters = std::max(maxRegisters, stats->registers);
      result.report += fmt::format(
          "{:<48} {:>4} registers {:>5} bytes stack {:>5}/{:<5} spill "
          "stores/loads{}\n",
          kernel.name, stats->registers, stats->stackBytes, stats->spillStores,
          stats->spillLoads, spills ? "  SPILLS" : "");
      cuda[key::kCubins][arch][kernel.name] = encodeBase64(kernel.cubin);
    }
    result.report += fmt::format(
        "{} kernels compiled by NVRTC {} for {}; at most {} registers; {} "
        "kernels spill\n",
        kernels.size(), cuda::nvrtcVersion(), arch, maxRegisters,
        result.spillingKernels);
    result.planText = plan.dump(1);
    return true;
  } catch (const std::exception &e) {
    error = e.what();
    return false;
  }
#else
  (void)planText;
  (void)arch;
  (void)result;
  error = "this Kiln was built without CUDA support (KILN_ENABLE_CUDA=OFF)";
  return false;
#endif
}

} // namespace kiln::rt
