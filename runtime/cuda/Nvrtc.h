//===- Nvrtc.h - Compiling CUDA C++ kernels at run time ---------*- C++ -*-===//
//
// Kernels are CUDA C++ text (from the codegen) compiled by NVRTC, in
// parallel, straight to CUBIN for the device's own architecture: sm_90a on
// Hopper, where wgmma and TMA kernels need the arch-specific target. Every
// compile goes through the on-disk KernelCache when one is given, so a
// second run compiles nothing.
//
// Default options: --gpu-architecture=<arch> -std=c++17 -default-device and
// -I<the toolkit's include directory> (for cuda_bf16.h and friends). Not
// --use_fast_math: kernels must compute what the host backend computes.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_NVRTC_H
#define KILN_RUNTIME_CUDA_NVRTC_H

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::rt::cuda {

class KernelCache;

/// One kernel source to compile.
struct CompileRequest {
  /// Names the kernel in messages (and the program: "<name>.cu").
  std::string name;
  std::string source;
  /// A real architecture, "sm_90a" or "sm_80": NVRTC makes CUBIN only for
  /// those.
  std::string arch;
  /// Extra NVRTC options, after the defaults ("--ptxas-options=-v",
  /// "-DTILE=128", "--maxrregcount=128").
  std::vector<std::string> options;
  /// Headers the source may #include, by name, given to NVRTC in memory.
  std::vector<std::pair<std::string, std::string>> headers;
};

/// A kernel's CUBIN and NVRTC's log (empty for a cache hit).
struct CompiledKernel {
  std::string name;
  std::vector<std::byte> cubin;
  std::string log;
  bool fromCache = false;
};

/// What ptxas reports for one kernel with --ptxas-options=-v.
struct PtxasStats {
  int registers = 0;
  int spillStores = 0; // bytes
  int spillLoads = 0;  // bytes
  int stackBytes = 0;  // the kernel's stack frame
};

/// NVRTC's version as CUDA_VERSION spells it: 13000 for 13.0, 12080 for
/// 12.8. Loads NVRTC (throws Error if it is missing).
int nvrtcVersion();

/// The directory holding cuda_bf16.h: the toolkit's ($CUDA_HOME, else
/// /usr/local/cuda; include/ or targets/<arch>-linux/include), else a pip
/// wheel's (runtime/cuda/Toolkit.h). Empty if none has it. Looked up once.
std::string cudaIncludeDirectory();

/// Every option `request` is compiled with, in the order given to NVRTC:
/// the defaults, then request.options.
std::vector<std::string> compileOptions(const CompileRequest &request);

/// The cache key of `request`: SHA-256 (hex) over the cache format version,
/// the NVRTC version, the arch, the options (defaults, then the request's,
/// in order: a later option may override an earlier one), the in-memory
/// headers and the source. The kernel's name is left out (it does not
/// change the cubin), and so is the include directory (the machine's path
/// to headers that the NVRTC version fixes).
std::string cacheKey(const CompileRequest &request);

/// Compiles `request`, or takes it from `cache` (may be null). Throws Error
/// on failure, with the kernel's name, the arch and NVRTC's whole log.
/// A cubin that cannot be stored in the cache is still returned (the
/// reason is appended to its log).
CompiledKernel compileKernel(const CompileRequest &request,
                             KernelCache *cache = nullptr);

/// compileKernel over `requests` with `threads` workers (0: one per core),
/// results in the order of `requests`. If any fails, all are finished and
/// one Error is thrown carrying every failure.
std::vector<CompiledKernel>
compileKernels(const std::vector<CompileRequest> &requests, KernelCache *cache,
               int threads = 0);

/// How many times this process has called nvrtcCompileProgram.
std::uint64_t nvrtcCompileCount();

/// The ptxas figures of entry function `kernelName` (as ptxas names it:
/// the extern "C" name or the mangled one) in an NVRTC log compiled with
/// --ptxas-options=-v; nullopt if the log has none for it.
std::optional<PtxasStats> parsePtxasStats(const std::string &log,
                                          const std::string &kernelName);

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_NVRTC_H
