//===- Storage.h - Plan values in memory and as FP32 ------------*- C++ -*-===//
//
// Every backend computes in FP32 and stores values in their plan dtype; these
// are the conversions, bit-exact (BF16 and FP8 round to nearest-even, FP8
// saturating), shared by the host and cuda backends' reads and writes.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_STORAGE_H
#define KILN_RUNTIME_STORAGE_H

#include "runtime/plan/Plan.h"

#include <cstddef>
#include <cstdint>

namespace kiln::rt {

/// Converts `count` elements of `type` at `src` to FP32; throws Error for
/// integer types.
void widenToFloat(ElemType type, const std::byte *src, float *dst,
                  int64_t count);

/// Stores FP32 data as `type`, rounding to nearest-even; throws Error for
/// integer types.
void narrowFromFloat(ElemType type, const float *src, std::byte *dst,
                     int64_t count);

/// Checks that `count` elements may be written to plan value `value` (and,
/// with `int32`, that it holds i32 ids); throws Error naming both otherwise.
const ValueInfo &checkWrite(const Plan &plan, int64_t value, std::size_t count,
                            bool int32 = false);

} // namespace kiln::rt

#endif // KILN_RUNTIME_STORAGE_H
