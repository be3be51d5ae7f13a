//===- FlashAttention.h - Shapes of the tensor-core attention kernels -----===//
//
// The flash kernels' shared-memory formulas, for the CUDA-side code (tests,
// benchmarks) that names them in kiln::rt::cuda. They are defined once, in
// the plan schema (runtime/plan/Schema.h), which the compiler includes.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_FLASHATTENTION_H
#define KILN_RUNTIME_CUDA_FLASHATTENTION_H

#include "runtime/plan/Schema.h"

namespace kiln::rt::cuda {

using plan::flashBackwardSharedBytes;
using plan::flashForwardSharedBytes;

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_FLASHATTENTION_H
