//===- Storage.cpp - Plan values in memory and as FP32 --------------------===//

#include "runtime/Storage.h"

#include "runtime/Error.h"
#include "runtime/Numerics.h"

#include <fmt/format.h>

#include <cstring>

namespace kiln::rt {

/// Converts `count` elements of `type` at `src` to FP32.
void widenToFloat(ElemType type, const std::byte *src, float *dst,
                  int64_t count) {
  switch (type) {
  case ElemType::F32:
    std::memcpy(dst, src, count * sizeof(float));
    return;
  case ElemType::BF16: {
    const auto *bits = reinterpret_cast<const uint16_t *>(src);
    for (int64_t i = 0; i < count; ++i)
      dst[i] = bf16ToFloat(bits[i]);
    return;
  }
  case ElemType::F8E4M3:
  case ElemType::F8E5M2: {
    Fp8Format format =
        type == ElemType::F8E4M3 ? Fp8Format::E4M3 : Fp8Format::E5M2;
    const auto *bits = reinterpret_cast<const uint8_t *>(src);
    for (int64_t i = 0; i < count; ++i)
      dst[i] = fp8ToFloat(bits[i], format);
    return;
  }
  case ElemType::I32:
  case ElemType::I64:
    break;
  }
  throw Error(
      fmt::format("cannot read {} values as floating point", elemName(type)));
}

/// Stores FP32 data as `type`, rounding to nearest-even.
void narrowFromFloat(ElemType type, const float *src, std::byte *dst,
                     int64_t count) {
  switch (type) {
  case ElemType::F32:
    std::memcpy(dst, src, count * sizeof(float));
    return;
  case ElemType::BF16: {
    auto *bits = reinterpret_cast<uint16_t *>(dst);
    for (int64_t i = 0; i < count; ++i)
      bits[i] = floatToBf16(src[i]);
    return;
  }
  case ElemType::F8E4M3:
  case ElemType::F8E5M2: {
    Fp8Format format =
        type == ElemType::F8E4M3 ? Fp8Format::E4M3 : Fp8Format::E5M2;
    auto *bits = reinterpret_cast<uint8_t *>(dst);
    for (int64_t i = 0; i < count; ++i)
      bits[i] = floatToFp8(src[i], format);
    return;
  }
  case ElemType::I32:
  case ElemType::I64:
    break;
  }
  throw Error(fmt::format("cannot store floating point as {}", elemName(type)));
}

const ValueInfo &checkWrite(const Plan &plan, int64_t value, std::size_t count,
                            bool int32) {
  const ValueInfo &info = plan.values.at(value);
  if (static_cast<int64_t>(count) != info.numElements() ||
      (int32 && info.dtype != ElemType::I32))
    throw Error(fmt::format("value {} holds {} {} elements, got {}{}", value,
                            info.numElements(), elemName(info.dtype), count,
                            int32 ? " i32 ids" : ""));
  return info;
}

} // namespace kiln::rt
