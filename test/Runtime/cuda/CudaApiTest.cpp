//===- CudaApiTest.cpp - Loading the CUDA libraries without a GPU ---------===//
//
// What can be checked on a machine with the toolkit but no driver: every
// driver function resolves, under the name the header maps it to, in the
// toolkit's stub libcuda.so; NVRTC and cuBLASLt load; a missing driver
// gives one clear Error and a probe that says why; the check macros name
// the call, the file and line and the library's error.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/CudaApi.h"
#include "../io/IoTestSupport.h"
#include "runtime/Error.h"
#include "runtime/cuda/CublasLt.h"
#include "runtime/cuda/Nccl.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include <dlfcn.h>

using namespace kiln::rt;
using namespace kiln::rt::cuda;
using kiln::rt::testing::errorMessage;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

namespace {

/// Whether this machine has a driver library at all.
bool driverInstalled() {
  void *handle = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (handle)
    ::dlclose(handle);
  return handle != nullptr;
}

/// The toolkit's link-time stub of the driver.
std::string stubDriverPath() {
  const char *home = std::getenv("CUDA_HOME");
  return std::string(home && *home ? home : "/usr/local/cuda") +
         "/lib64/stubs/libcuda.so";
}

// cuda.h maps functions with a newer ABI to versioned symbols; the table
// loads exactly those.
TEST(CudaApiTest, LoadsTheSymbolsTheHeaderNames) {
  std::vector<std::string> names = driverSymbolNames();
  EXPECT_THAT(names, Contains("cuMemAlloc_v2"));
  EXPECT_THAT(names, Contains("cuMemFree_v2"));
  EXPECT_THAT(names, Contains("cuMemcpyHtoD_v2"));
  EXPECT_THAT(names, Contains("cuMemcpyDtoH_v2"));
  EXPECT_THAT(names, Contains("cuMemsetD8_v2"));
  EXPECT_THAT(names, Contains("cuDevicePrimaryCtxRelease_v2"));
  EXPECT_THAT(names, Contains("cuStreamDestroy_v2"));
  EXPECT_THAT(names, Contains("cuEventDestroy_v2"));
  EXPECT_THAT(names, Contains("cuDeviceTotalMem_v2"));
  EXPECT_THAT(names, Contains("cuCtxSetCurrent"));
  EXPECT_THAT(names, Contains("cuLaunchKernel"));
  EXPECT_THAT(names, Contains("cuInit"));
  EXPECT_THAT(nvrtcSymbolNames(), Contains("nvrtcGetCUBIN"));
  EXPECT_THAT(cublasLtSymbolNames(), Contains("cublasLtMatmul"));
}

// Every driver function exists in the stub, which exports the real
// driver's symbols; the stub's cuInit fails, and the probe says so.
TEST(CudaApiTest, DriverTableResolvesInTheToolkitStub) {
  if (!std::filesystem::exists(stubDriverPath()))
    GTEST_SKIP() << "no stub driver at " << stubDriverPath();
  Library stub({stubDriverPath()});
  DriverApi api = loadDriverApi(stub);
  EXPECT_NE(api.cuInit, nullptr);
  EXPECT_NE(api.cuMemAlloc, nullptr);
  EXPECT_NE(api.cuTensorMapEncodeTiled, nullptr);
  EXPECT_EQ(reinterpret_cast<void *>(api.cuMemAlloc),
            stub.symbol("cuMemAlloc_v2"));

  std::string why;
  std::optional<DeviceInfo> device;
  EXPECT_NO_THROW(device = probeDevice(api, &why, 0));
  EXPECT_FALSE(device.has_value());
  EXPECT_THAT(why, HasSubstr("cuInit failed: CUDA_ERROR_STUB_LIBRARY"));
}

// Without a driver library, driver() throws one clear Error, every time.
TEST(CudaApiTest, MissingDriverIsAClearError) {
  if (driverInstalled()) {
    EXPECT_NO_THROW(driver());
    GTEST_SKIP() << "this machine has libcuda.so.1";
  }
  std::string message = errorMessage([] { driver(); });
  EXPECT_THAT(message,
              AllOf(StartsWith("CUDA driver not found: dlopen(libcuda.so.1) "
                               "failed: "),
                    HasSubstr("libcuda.so.1"),
                    HasSubstr("is an NVIDIA driver installed?")));
  EXPECT_EQ(errorMessage([] { driver(); }), message);

  std::string why;
  EXPECT_FALSE(probeDevice(&why).has_value());
  EXPECT_EQ(why, message);
}

// The toolkit's libraries load on a machine without a GPU.
TEST(CudaApiTest, LoadsNvrtcAndCublasLt) {
  const NvrtcApi &api = nvrtc();
  int major = 0, minor = 0;
  KILN_NVRTC_CHECK(api.nvrtcVersion(&major, &minor));
  EXPECT_GE(major, 12);
  EXPECT_THAT(nvrtcLibraryPath(), HasSubstr("libnvrtc.so"));

  EXPECT_GT(cublasLt().cublasLtGetVersion(), 0u);
  EXPECT_THAT(cublasLtLibraryPath(), HasSubstr("libcublasLt.so"));
}

// NCCL (the toolkit's libnccl.so.2) loads with every function the cuda
// backend calls, without a GPU; a communicator needs one.
TEST(CudaApiTest, LoadsNccl) {
  const NcclApi *api = nullptr;
  try {
    api = &nccl();
  } catch (const Error &e) {
    GTEST_SKIP() << e.what();
  }
  int version = 0;
  ASSERT_EQ(api->ncclGetVersion(&version), ncclSuccess);
  EXPECT_GE(version, 20000); // 2.x: NCCL_VERSION(2, y, z) = 20000 + ...
  EXPECT_THAT(api->ncclGetErrorString(ncclInvalidArgument),
              HasSubstr("invalid argument"));
}

// Library lists every candidate's failure, and names a missing function.
TEST(CudaApiTest, LibraryErrorsNameWhatFailed) {
  std::string message = errorMessage([] {
    Library({"libkiln-no-such-library.so.7", "/nonexistent/libother.so"});
  });
  EXPECT_THAT(message, AllOf(HasSubstr("dlopen(libkiln-no-such-library.so.7) "
                                       "failed"),
                             HasSubstr("dlopen(/nonexistent/libother.so) "
                                       "failed")));

  // libm, which every C++ program has loaded already, so that closing it
  // unloads nothing: unloading NVRTC or cuBLASLt leaks the heap of the C++
  // runtime linked into them, and LeakSanitizer reports it.
  Library library({"libm.so.6"});
  EXPECT_NE(library.symbol("cos"), nullptr);
  EXPECT_THAT(errorMessage([&] { library.symbol("kilnNoSuchFunction"); }),
              AllOf(HasSubstr(library.path()),
                    HasSubstr("lacks the function kilnNoSuchFunction")));

  Library moved = std::move(library);
  EXPECT_NE(moved.symbol("cos"), nullptr);
}

// The candidates: the dynamic linker's search first, then the toolkit.
TEST(CudaApiTest, SearchesTheToolkitAfterTheLinkerPath) {
  std::vector<std::string> candidates =
      toolkitLibraryCandidates("libnvrtc.so.13");
  ASSERT_GE(candidates.size(), 2u);
  EXPECT_EQ(candidates.front(), "libnvrtc.so.13");
  EXPECT_THAT(candidates, Contains("/usr/local/cuda/lib64/libnvrtc.so.13"));
}

nvrtcResult failingCompile(int) { return NVRTC_ERROR_COMPILATION; }
cublasStatus_t unsupportedGemm() { return CUBLAS_STATUS_NOT_SUPPORTED; }
CUresult outOfMemory() { return CUDA_ERROR_OUT_OF_MEMORY; }

// The check macros name the call as written, the file and line, and the
// library's own error name and text.
TEST(CudaApiTest, CheckMacrosNameCallPlaceAndError) {
  EXPECT_NO_THROW(KILN_NVRTC_CHECK(NVRTC_SUCCESS));
  EXPECT_NO_THROW(KILN_CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS));
  EXPECT_NO_THROW(KILN_CUDA_CHECK(CUDA_SUCCESS));

  int line = __LINE__ + 2; // the line of the check below
  std::string message =
      errorMessage([] { KILN_NVRTC_CHECK(failingCompile(3)); });
  EXPECT_EQ(message, "failingCompile(3) failed at CudaApiTest.cpp:" +
                         std::to_string(line) + ": NVRTC_ERROR_COMPILATION");

  // A real call through the table: the table is left out of the message.
  message = errorMessage([] {
    KILN_NVRTC_CHECK(nvrtc().nvrtcCompileProgram(nullptr, 0, nullptr));
  });
  EXPECT_THAT(message, MatchesRegex("nvrtcCompileProgram\\(nullptr, 0, "
                                    "nullptr\\) failed at CudaApiTest.cpp:"
                                    "[0-9]+: NVRTC_ERROR_INVALID_PROGRAM"));

  message = errorMessage([] {
    const NvrtcApi &api = nvrtc();
    KILN_NVRTC_CHECK(api.nvrtcDestroyProgram(nullptr));
  });
  EXPECT_THAT(message, StartsWith("nvrtcDestroyProgram(nullptr) failed at "));

  message = errorMessage([] { KILN_CUBLAS_CHECK(unsupportedGemm()); });
  EXPECT_THAT(message,
              MatchesRegex("unsupportedGemm\\(\\) failed at CudaApiTest.cpp:"
                           "[0-9]+: CUBLAS_STATUS_NOT_SUPPORTED: .+"));

  // Without a driver to ask, common results are still named.
  message = errorMessage([] { KILN_CUDA_CHECK(outOfMemory()); });
  EXPECT_THAT(message, StartsWith("outOfMemory() failed at CudaApiTest.cpp:"));
  EXPECT_THAT(message,
              HasSubstr(driverInstalled()
                            ? "CUDA_ERROR_OUT_OF_MEMORY: out of memory"
                            : "CUDA_ERROR_OUT_OF_MEMORY (CUresult 2)"));
  EXPECT_THAT(driverErrorText(static_cast<CUresult>(12345)),
              HasSubstr("12345"));
}

// Without a GPU cuBLASLt refuses a handle, and LtGemm reports it.
TEST(CudaApiTest, LtGemmWithoutGpuIsAClearError) {
  if (probeDevice())
    GTEST_SKIP() << "this machine has a GPU (the gpu tests cover LtGemm)";
  EXPECT_THAT(errorMessage([] { LtGemm gemm; }),
              MatchesRegex("cublasLtCreate\\(&handle_\\) failed at "
                           "CublasLt.cpp:[0-9]+: CUBLAS_STATUS_.+"));
}

} // namespace
