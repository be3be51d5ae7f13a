//===- BackendFactory.cpp - The backend a run gets ------------------------===//

#include "runtime/BackendFactory.h"

#include "runtime/Error.h"
#include "runtime/host/HostBackend.h"

#if KILN_ENABLE_CUDA
#include "runtime/cuda/CudaBackend.h"
#include "runtime/cuda/Device.h"
#endif

#include <fmt/format.h>

namespace kiln::rt {

bool cudaUsable(std::string *why) {
#if KILN_ENABLE_CUDA
  return cuda::probeDevice(why).has_value();
#else
  if (why)
    *why = "this Kiln was built without CUDA support (KILN_ENABLE_CUDA=OFF)";
  return false;
#endif
}

std::unique_ptr<Backend>
createBackend(const Plan &plan, const std::string &choice, Communicator *comm) {
  if (choice != "auto" && choice != "host" && choice != "cuda")
    throw Error(
        fmt::format("--backend must be auto, host or cuda, got '{}'", choice));
  if (choice == "host")
    return std::make_unique<HostBackend>(plan, comm);
  std::string why;
  bool usable = plan.hasCuda && cudaUsable(&why);
  if (!plan.hasCuda)
    why = "the plan has no CUDA kernels";
  if (!usable) {
    if (choice == "cuda")
      throw Error("--backend cuda: no usable GPU: " + why);
    return std::make_unique<HostBackend>(plan, comm);
  }
#if KILN_ENABLE_CUDA
  return cuda::createCudaBackend(plan, comm);
#else
  throw Error("unreachable: CUDA reported usable without CUDA support");
#endif
}

} // namespace kiln::rt
