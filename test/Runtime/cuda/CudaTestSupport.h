//===- CudaTestSupport.h - Helpers for CUDA tests without a GPU -*- C++ -*-===//
//
// What the CPU-only tests of the CUDA layer share: an environment variable
// set for one test, small kernel sources, and the ELF check of a cubin.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TEST_RUNTIME_CUDA_CUDATESTSUPPORT_H
#define KILN_TEST_RUNTIME_CUDA_CUDATESTSUPPORT_H

#include "runtime/cuda/Nvrtc.h"

#include <cstddef>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace kiln::rt::cuda::testing {

/// Sets (or, with nullopt, unsets) an environment variable until the object
/// goes, then restores it.
class ScopedEnv {
public:
  ScopedEnv(std::string name, std::optional<std::string> value)
      : name_(std::move(name)) {
    if (const char *old = std::getenv(name_.c_str()))
      old_ = old;
    if (value)
      ::setenv(name_.c_str(), value->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv &) = delete;
  ScopedEnv &operator=(const ScopedEnv &) = delete;

private:
  std::string name_;
  std::optional<std::string> old_;
};

/// y[i] = a * x[i] + y[i] in BF16 storage with FP32 arithmetic: a kernel
/// that needs the toolkit's cuda_bf16.h.
inline const char *kAxpyBf16Source = R"(
#include <cuda_bf16.h>
extern "C" __global__ void axpy_bf16(const __nv_bfloat16 *x, __nv_bfloat16 *y,
                                     float a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = __float2bfloat16_rn(a * __bfloat162float(x[i]) +
                               __bfloat162float(y[i]));
}
)";

/// A request to compile kAxpyBf16Source for `arch`.
inline CompileRequest axpyRequest(const std::string &arch) {
  return {"axpy_bf16", kAxpyBf16Source, arch, {}, {}};
}

/// Whether `cubin` is an ELF file for the CUDA machine (e_machine 190).
inline bool isCudaElf(const std::vector<std::byte> &cubin) {
  auto byteAt = [&](std::size_t i) {
    return std::to_integer<unsigned>(cubin[i]);
  };
  return cubin.size() > 20 && byteAt(0) == 0x7f && byteAt(1) == 'E' &&
         byteAt(2) == 'L' && byteAt(3) == 'F' &&
         (byteAt(18) | byteAt(19) << 8) == 190;
}

} // namespace kiln::rt::cuda::testing

#endif // KILN_TEST_RUNTIME_CUDA_CUDATESTSUPPORT_H
