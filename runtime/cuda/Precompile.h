//===- Precompile.h - CUDA kernels compiled ahead of time -------*- C++ -*-===//
//
// Deliberately free of the runtime's other headers (nlohmann::json): the
// compiler, built without exceptions, includes this one.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_PRECOMPILE_H
#define KILN_RUNTIME_CUDA_PRECOMPILE_H

#include <string>

namespace kiln::rt {

/// What `kiln compile --target cuda:<arch>` does with a plan: compiles every
/// CUDA kernel with NVRTC for `arch` (no GPU needed), embeds the cubins in
/// the plan, and reports each kernel's registers and spills from ptxas.
struct PrecompileResult {
  std::string planText;
  std::string report; ///< one line per kernel, then a summary
  int spillingKernels = 0;
};

/// Returns false and sets `error` on failure (no NVRTC, a compile error);
/// never throws.
bool precompileCuda(const std::string &planText, const std::string &arch,
                    PrecompileResult &result, std::string &error) noexcept;

} // namespace kiln::rt

#endif // KILN_RUNTIME_CUDA_PRECOMPILE_H
