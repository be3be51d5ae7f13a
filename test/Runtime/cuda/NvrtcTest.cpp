//===- NvrtcTest.cpp - Compiling kernels with NVRTC, without a GPU --------===//
//
// NVRTC runs on any machine: a BF16 kernel compiles to CUBIN for Ampere and
// Hopper; failures carry the kernel, the arch and NVRTC's log; ptxas'
// register and spill figures are read from the verbose log; batches
// compile in parallel and come back in order.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/Nvrtc.h"
#include "../io/IoTestSupport.h"
#include "runtime/Error.h"

#include "CudaTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

using namespace kiln::rt;
using namespace kiln::rt::cuda;
using kiln::rt::testing::errorMessage;
using namespace kiln::rt::cuda::testing;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

TEST(NvrtcTest, ReportsItsVersion) {
  int version = nvrtcVersion();
  EXPECT_GE(version, 12000);
  EXPECT_EQ(version % 10, 0);
}

// The defaults come first, the request's options last; no fast math.
TEST(NvrtcTest, CompileOptions) {
  CompileRequest request = axpyRequest("sm_90a");
  request.options = {"-DTILE=64"};
  std::vector<std::string> options = compileOptions(request);
  ASSERT_GE(options.size(), 4u);
  EXPECT_EQ(options.front(), "--gpu-architecture=sm_90a");
  EXPECT_THAT(options, Contains("-std=c++17"));
  EXPECT_THAT(options, Contains("-default-device"));
  EXPECT_THAT(options, Contains("-I" + cudaIncludeDirectory()));
  EXPECT_EQ(options.back(), "-DTILE=64");
  EXPECT_THAT(options, Not(Contains("--use_fast_math")));
}

// A kernel using cuda_bf16.h compiles to a CUDA ELF for Ampere and Hopper.
TEST(NvrtcTest, CompilesBf16KernelForSm80AndSm90a) {
  ASSERT_FALSE(cudaIncludeDirectory().empty()) << "no CUDA headers found";
  for (const char *arch : {"sm_80", "sm_90a"}) {
    SCOPED_TRACE(arch);
    CompiledKernel kernel = compileKernel(axpyRequest(arch));
    EXPECT_EQ(kernel.name, "axpy_bf16");
    EXPECT_FALSE(kernel.fromCache);
    EXPECT_TRUE(isCudaElf(kernel.cubin));
  }
}

// A syntax error throws with the kernel, the arch and NVRTC's whole log.
TEST(NvrtcTest, SyntaxErrorCarriesTheLog) {
  CompileRequest request{
      "broken",
      "extern \"C\" __global__ void f(int *x) { x[0] = ; }\n",
      "sm_90a",
      {},
      {}};
  std::string message = errorMessage([&] { compileKernel(request); });
  EXPECT_THAT(message,
              AllOf(HasSubstr("kernel 'broken'"), HasSubstr("sm_90a"),
                    HasSubstr("NVRTC_ERROR_COMPILATION"),
                    HasSubstr("broken.cu(1): error: expected an expression"),
                    HasSubstr("1 error detected")));
}

// Only real architectures make CUBIN; NVRTC's own refusal is reported too.
TEST(NvrtcTest, RejectsArchitecturesWithoutCubin) {
  CompileRequest request = axpyRequest("compute_90");
  EXPECT_THAT(errorMessage([&] { compileKernel(request); }),
              AllOf(HasSubstr("kernel 'axpy_bf16'"),
                    HasSubstr("'compute_90' is not a GPU architecture")));
  request.arch = "sm_1000";
  EXPECT_THAT(errorMessage([&] { compileKernel(request); }),
              AllOf(HasSubstr("NVRTC_ERROR_INVALID_OPTION"),
                    HasSubstr("invalid value for --gpu-architecture")));
  request.arch = "sm_90a";
  request.options = {"--no-such-option"};
  EXPECT_THAT(errorMessage([&] { compileKernel(request); }),
              HasSubstr("unrecognized option --no-such-option"));
}

// Headers given in memory are found by #include.
TEST(NvrtcTest, InMemoryHeaders) {
  CompileRequest request{"with_header",
                         "#include \"kiln_test.h\"\n"
                         "extern \"C\" __global__ void f(int *x) {\n"
                         "  x[0] = kAnswer;\n"
                         "}\n",
                         "sm_80",
                         {},
                         {{"kiln_test.h", "constexpr int kAnswer = 42;\n"}}};
  EXPECT_TRUE(isCudaElf(compileKernel(request).cubin));
  request.headers.clear();
  EXPECT_THAT(errorMessage([&] { compileKernel(request); }),
              HasSubstr("cannot open source file \"kiln_test.h\""));
}

// A real verbose compile: registers used, nothing spilled.
TEST(NvrtcTest, PtxasStatsFromAVerboseCompile) {
  CompileRequest request = axpyRequest("sm_90a");
  request.options = {"--ptxas-options=-v"};
  CompiledKernel kernel = compileKernel(request);
  std::optional<PtxasStats> stats = parsePtxasStats(kernel.log, "axpy_bf16");
  ASSERT_TRUE(stats.has_value()) << kernel.log;
  EXPECT_GT(stats->registers, 0);
  EXPECT_EQ(stats->spillStores, 0);
  EXPECT_EQ(stats->spillLoads, 0);
  EXPECT_EQ(stats->stackBytes, 0);
  EXPECT_FALSE(parsePtxasStats(kernel.log, "axpy").has_value());
  EXPECT_FALSE(parsePtxasStats(compileKernel(axpyRequest("sm_90a")).log,
                               "axpy_bf16")
                   .has_value()); // not verbose
}

// NVRTC 13.0's log for a kernel squeezed into 24 registers, after a
// kernel with a stack array.
const char *kSpillingLog =
    "ptxas info    : Overriding maximum register limit 256 for 'hungry' with "
    " 24 of maxrregcount option\n"
    "ptxas info    : 0 bytes gmem\n"
    "ptxas info    : Compiling entry function '_Z3bigILi1000EEvPf' for "
    "'sm_80'\n"
    "ptxas info    : Function properties for _Z3bigILi1000EEvPf\n"
    "ptxas         .     4000 bytes stack frame, 0 bytes spill stores, 0 "
    "bytes spill loads\n"
    "ptxas info    : Used 32 registers, used 0 barriers, 4000 bytes "
    "cumulative stack size\n"
    "ptxas info    : Compile time = 13.916 ms\n"
    "ptxas info    : Compiling entry function 'hungry' for 'sm_80'\n"
    "ptxas info    : Function properties for hungry\n"
    "ptxas         .     12480 bytes stack frame, 12488 bytes spill stores, "
    "27220 bytes spill loads\n"
    "ptxas info    : Used 24 registers, used 0 barriers, 12480 bytes "
    "cumulative stack size, 368 bytes cmem[0]\n"
    "ptxas info    : Compile time = 1101.896 ms\n";

TEST(NvrtcTest, PtxasStatsWithSpills) {
  std::optional<PtxasStats> hungry = parsePtxasStats(kSpillingLog, "hungry");
  ASSERT_TRUE(hungry.has_value());
  EXPECT_EQ(hungry->registers, 24);
  EXPECT_EQ(hungry->spillStores, 12488);
  EXPECT_EQ(hungry->spillLoads, 27220);
  EXPECT_EQ(hungry->stackBytes, 12480);

  std::optional<PtxasStats> big =
      parsePtxasStats(kSpillingLog, "_Z3bigILi1000EEvPf");
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->registers, 32);
  EXPECT_EQ(big->spillStores, 0);
  EXPECT_EQ(big->spillLoads, 0);
  EXPECT_EQ(big->stackBytes, 4000);

  EXPECT_FALSE(parsePtxasStats(kSpillingLog, "hung").has_value());
  EXPECT_FALSE(parsePtxasStats("", "hungry").has_value());
}

/// A kernel storing `value`, named after it.
CompileRequest constantKernel(int value) {
  return {"store_" + std::to_string(value),
          "extern \"C\" __global__ void store(int *x) { x[0] = " +
              std::to_string(value) + "; }\n",
          "sm_80",
          {},
          {}};
}

// A batch compiles on several threads; results keep the requests' order.
TEST(NvrtcTest, CompilesBatchesInParallelInOrder) {
  std::vector<CompileRequest> requests;
  for (int i = 0; i < 6; ++i)
    requests.push_back(constantKernel(i));
  std::uint64_t before = nvrtcCompileCount();
  std::vector<CompiledKernel> kernels = compileKernels(requests, nullptr, 3);
  EXPECT_EQ(nvrtcCompileCount() - before, 6u);
  ASSERT_EQ(kernels.size(), requests.size());
  for (std::size_t i = 0; i < kernels.size(); ++i) {
    EXPECT_EQ(kernels[i].name, requests[i].name);
    EXPECT_TRUE(isCudaElf(kernels[i].cubin));
  }
  // Different constants, different code.
  EXPECT_NE(kernels[1].cubin, kernels[2].cubin);
  EXPECT_TRUE(compileKernels({}, nullptr, 4).empty());
}

// One failure is rethrown as it is; several are reported together, after
// every kernel has been tried.
TEST(NvrtcTest, BatchFailuresNameEveryKernel) {
  std::vector<CompileRequest> requests = {constantKernel(1), constantKernel(2),
                                          constantKernel(3)};
  requests[1].source = "this is not CUDA";
  EXPECT_THAT(errorMessage([&] { compileKernels(requests, nullptr, 2); }),
              AllOf(HasSubstr("kernel 'store_2'"), Not(HasSubstr("of 3"))));
  requests[2].source = "nor is this";
  EXPECT_THAT(errorMessage([&] { compileKernels(requests, nullptr, 2); }),
              AllOf(HasSubstr("2 of 3 kernels failed to compile"),
                    HasSubstr("kernel 'store_2'"),
                    HasSubstr("kernel 'store_3'")));
}

} // namespace
