//===- CudaApi.h - The CUDA libraries, loaded at run time -------*- C++ -*-===//
//
// The runtime never links the CUDA driver, NVRTC or cuBLASLt: it opens them
// with dlopen on first use, so one binary runs on a machine with a GPU and
// on one without (which then uses the host backend). The toolkit's headers
// are used at build time only, for types, enums and function prototypes.
//
// Each library is a struct of function pointers, named and typed like the
// header's functions, behind a lazily loaded process-wide singleton:
//
//   KILN_CUDA_CHECK(driver().cuMemAlloc(&ptr, bytes));
//
// A call that fails throws kiln::rt::Error naming the call, the place and
// the library's own error name and text:
//
//   cuMemAlloc(&ptr, bytes) failed at CudaBackend.cpp:123:
//   CUDA_ERROR_OUT_OF_MEMORY: out of memory
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_CUDAAPI_H
#define KILN_RUNTIME_CUDA_CUDAAPI_H

#include "runtime/cuda/Device.h"

#include <cublasLt.h>
#include <cuda.h>
#include <nvrtc.h>

#include <string>
#include <vector>

namespace kiln::rt::cuda {

//===----------------------------------------------------------------------===//
// Shared libraries
//===----------------------------------------------------------------------===//

/// A shared library opened with dlopen (RTLD_NOW | RTLD_LOCAL), closed when
/// the object goes. Move-only.
class Library {
public:
  /// Opens the first of `candidates` (names the dynamic linker searches, or
  /// paths) that loads; throws Error listing each candidate's dlerror.
  explicit Library(const std::vector<std::string> &candidates);
  ~Library();
  Library(Library &&other) noexcept;
  Library &operator=(Library &&other) noexcept;
  Library(const Library &) = delete;
  Library &operator=(const Library &) = delete;

  /// The address of `name`; throws Error if the library lacks it.
  void *symbol(const char *name) const;

  /// The candidate that loaded.
  const std::string &path() const { return path_; }
  /// The file the dynamic linker loaded (a candidate given by name
  /// resolved to its path).
  std::string resolvedPath() const;

private:
  void *handle_ = nullptr;
  std::string path_;
};

//===----------------------------------------------------------------------===//
// Function tables
//===----------------------------------------------------------------------===//
//
// Each X(fn) below becomes a member `decltype(&::fn) fn`, resolved with
// dlsym by the name `fn` has after the header's macros: cuda.h maps the
// current ABI of a function onto its plain name (`#define cuMemAlloc
// cuMemAlloc_v2`), so the member has the prototype of that ABI and is
// loaded as "cuMemAlloc_v2", while callers write `driver().cuMemAlloc(...)`.

/// The CUDA driver functions the cuda backend uses.
#define KILN_CUDA_DRIVER_FUNCTIONS(X)                                          \
  X(cuInit)                                                                    \
  X(cuDriverGetVersion)                                                        \
  X(cuGetErrorName)                                                            \
  X(cuGetErrorString)                                                          \
  X(cuDeviceGetCount)                                                          \
  X(cuDeviceGet)                                                               \
  X(cuDeviceGetAttribute)                                                      \
  X(cuDeviceGetName)                                                           \
  X(cuDeviceTotalMem)                                                          \
  X(cuDevicePrimaryCtxRetain)                                                  \
  X(cuDevicePrimaryCtxRelease)                                                 \
  X(cuCtxSetCurrent)                                                           \
  X(cuCtxGetCurrent)                                                           \
  X(cuCtxSynchronize)                                                          \
  X(cuModuleLoadData)                                                          \
  X(cuModuleUnload)                                                            \
  X(cuModuleGetFunction)                                                       \
  X(cuFuncSetAttribute)                                                        \
  X(cuFuncGetAttribute)                                                        \
  X(cuLaunchKernel)                                                            \
  X(cuLaunchKernelEx)                                                          \
  X(cuMemAlloc)                                                                \
  X(cuMemFree)                                                                 \
  X(cuMemGetInfo)                                                              \
  X(cuMemcpyHtoD)                                                              \
  X(cuMemcpyDtoH)                                                              \
  X(cuMemcpyDtoD)                                                              \
  X(cuMemcpyHtoDAsync)                                                         \
  X(cuMemcpyDtoHAsync)                                                         \
  X(cuMemcpyDtoDAsync)                                                         \
  X(cuMemsetD8)                                                                \
  X(cuMemsetD8Async)                                                           \
  X(cuMemsetD32Async)                                                          \
  X(cuStreamCreate)                                                            \
  X(cuStreamDestroy)                                                           \
  X(cuStreamSynchronize)                                                       \
  X(cuStreamWaitEvent)                                                         \
  X(cuStreamQuery)                                                             \
  X(cuEventCreate)                                                             \
  X(cuEventRecord)                                                             \
  X(cuEventSynchronize)                                                        \
  X(cuEventElapsedTime)                                                        \
  X(cuEventDestroy)                                                            \
  X(cuTensorMapEncodeTiled)

/// The NVRTC functions the JIT uses.
#define KILN_NVRTC_FUNCTIONS(X)                                                \
  X(nvrtcVersion)                                                              \
  X(nvrtcGetErrorString)                                                       \
  X(nvrtcGetNumSupportedArchs)                                                 \
  X(nvrtcGetSupportedArchs)                                                    \
  X(nvrtcCreateProgram)                                                        \
  X(nvrtcDestroyProgram)                                                       \
  X(nvrtcCompileProgram)                                                       \
  X(nvrtcGetProgramLogSize)                                                    \
  X(nvrtcGetProgramLog)                                                        \
  X(nvrtcGetCUBINSize)                                                         \
  X(nvrtcGetCUBIN)                                                             \
  X(nvrtcGetPTXSize)                                                           \
  X(nvrtcGetPTX)                                                               \
  X(nvrtcAddNameExpression)                                                    \
  X(nvrtcGetLoweredName)

/// The cuBLASLt functions LtGemm uses.
#define KILN_CUBLASLT_FUNCTIONS(X)                                             \
  X(cublasLtGetVersion)                                                        \
  X(cublasLtGetStatusName)                                                     \
  X(cublasLtGetStatusString)                                                   \
  X(cublasLtCreate)                                                            \
  X(cublasLtDestroy)                                                           \
  X(cublasLtMatmulDescCreate)                                                  \
  X(cublasLtMatmulDescDestroy)                                                 \
  X(cublasLtMatmulDescSetAttribute)                                            \
  X(cublasLtMatrixLayoutCreate)                                                \
  X(cublasLtMatrixLayoutDestroy)                                               \
  X(cublasLtMatrixLayoutSetAttribute)                                          \
  X(cublasLtMatmulPreferenceCreate)                                            \
  X(cublasLtMatmulPreferenceDestroy)                                           \
  X(cublasLtMatmulPreferenceSetAttribute)                                      \
  X(cublasLtMatmulAlgoGetHeuristic)                                            \
  X(cublasLtMatmul)

#define KILN_CUDA_DECLARE_FUNCTION(fn) decltype(&::fn) fn = nullptr;

/// The CUDA driver (libcuda.so.1).
struct DriverApi {
  KILN_CUDA_DRIVER_FUNCTIONS(KILN_CUDA_DECLARE_FUNCTION)
};

/// NVRTC (libnvrtc.so.13).
struct NvrtcApi {
  KILN_NVRTC_FUNCTIONS(KILN_CUDA_DECLARE_FUNCTION)
};

/// cuBLASLt (libcublasLt.so.13).
struct CublasLtApi {
  KILN_CUBLASLT_FUNCTIONS(KILN_CUDA_DECLARE_FUNCTION)
};

#undef KILN_CUDA_DECLARE_FUNCTION

/// Resolves every function of the table in `library`; throws Error naming
/// the first one missing. The tables stay valid while `library` is open.
DriverApi loadDriverApi(const Library &library);
NvrtcApi loadNvrtcApi(const Library &library);
CublasLtApi loadCublasLtApi(const Library &library);

/// The symbol names each table loads, in order ("cuMemAlloc_v2", ...).
std::vector<std::string> driverSymbolNames();
std::vector<std::string> nvrtcSymbolNames();
std::vector<std::string> cublasLtSymbolNames();

//===----------------------------------------------------------------------===//
// The process-wide libraries
//===----------------------------------------------------------------------===//
//
// Each is opened on first use and stays open until the process ends (never
// closed, so that objects destroyed at exit may still call into it). A
// library that does not load throws the same Error on every call:
//
//   CUDA driver not found: dlopen(libcuda.so.1) failed: libcuda.so.1: cannot
//   open shared object file: No such file or directory; is an NVIDIA driver
//   installed?

/// libcuda.so.1. cuInit is not called here: probeDevice or the backend
/// does it.
const DriverApi &driver();

/// libnvrtc.so.13, else libnvrtc.so; each first where the dynamic linker
/// looks, then in the toolkit's and the pip wheels' library directories
/// (runtime/cuda/Toolkit.h). NVRTC's builtins library is loaded from the
/// directory NVRTC came from.
const NvrtcApi &nvrtc();

/// libcublasLt.so.13, else libcublasLt.so, searched like NVRTC.
const CublasLtApi &cublasLt();

/// The path each library was loaded from; loads it (and throws) like the
/// accessors above.
const std::string &nvrtcLibraryPath();
const std::string &cublasLtLibraryPath();

/// The places NVRTC and cuBLASLt are searched for library `soname`, in order.
std::vector<std::string> toolkitLibraryCandidates(const std::string &soname);

/// What the runtime found, as (what, where or why not) lines: the driver,
/// the device, NVRTC and its builtins, cuBLASLt, cuda_bf16.h and the library
/// search path. Loads the libraries; never throws. `kiln-run --cuda-info`
/// prints it.
std::vector<std::pair<std::string, std::string>> toolkitReport();

/// The probe of Device.h with an explicit driver table (tests load the
/// toolkit's stub libcuda.so). Calls cuInit(0); never throws.
std::optional<DeviceInfo> probeDevice(const DriverApi &api, std::string *whyNot,
                                      int ordinal);

//===----------------------------------------------------------------------===//
// Checking results
//===----------------------------------------------------------------------===//

namespace detail {
[[noreturn]] void throwDriverError(CUresult result, const char *call,
                                   const char *file, int line);
[[noreturn]] void throwNvrtcError(nvrtcResult result, const char *call,
                                  const char *file, int line);
[[noreturn]] void throwCublasError(cublasStatus_t status, const char *call,
                                   const char *file, int line);

inline void checkDriver(CUresult result, const char *call, const char *file,
                        int line) {
  if (result != CUDA_SUCCESS) [[unlikely]]
    throwDriverError(result, call, file, line);
}
inline void checkNvrtc(nvrtcResult result, const char *call, const char *file,
                       int line) {
  if (result != NVRTC_SUCCESS) [[unlikely]]
    throwNvrtcError(result, call, file, line);
}
inline void checkCublas(cublasStatus_t status, const char *call,
                        const char *file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) [[unlikely]]
    throwCublasError(status, call, file, line);
}
} // namespace detail

/// The text of a driver result: "CUDA_ERROR_OUT_OF_MEMORY: out of memory"
/// (without a driver to ask, the name of a few common results, or the
/// number).
std::string driverErrorText(CUresult result);

/// Throws Error unless `call` (a CUresult expression) returns CUDA_SUCCESS.
#define KILN_CUDA_CHECK(call)                                                  \
  ::kiln::rt::cuda::detail::checkDriver((call), #call, __FILE__, __LINE__)

/// Throws Error unless `call` (an nvrtcResult expression) returns
/// NVRTC_SUCCESS.
#define KILN_NVRTC_CHECK(call)                                                 \
  ::kiln::rt::cuda::detail::checkNvrtc((call), #call, __FILE__, __LINE__)

/// Throws Error unless `call` (a cublasStatus_t expression) returns
/// CUBLAS_STATUS_SUCCESS.
#define KILN_CUBLAS_CHECK(call)                                                \
  ::kiln::rt::cuda::detail::checkCublas((call), #call, __FILE__, __LINE__)

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_CUDAAPI_H
