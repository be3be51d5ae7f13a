//===- KernelSupport.h - Checks and loops the kernels share -----*- C++ -*-===//
//
// Private to runtime/host: argument checks that throw kiln::rt::Error, and
// the deterministic column reduction behind every weight gradient.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_HOST_KERNELSUPPORT_H
#define KILN_RUNTIME_HOST_KERNELSUPPORT_H

#include "runtime/Error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace kiln::rt::host::detail {

/// Below this many elements of work a kernel runs on one thread: starting a
/// parallel region costs more than the loop.
constexpr std::int64_t kMinParallelWork = 1 << 14;

/// Columns one thread reduces at a time in reduceColumns: 2 KiB of double
/// accumulators, which stay in L1.
constexpr std::int64_t kColumnBlock = 256;

/// Throws Error unless `value` (a size argument of `kernel`) is >= 0.
inline void checkSize(const char *kernel, const char *name,
                      std::int64_t value) {
  if (value < 0)
    throw Error(fmt::format("{}: {} must be non-negative, got {}", kernel, name,
                            value));
}

/// Throws Error unless a token id lies in [0, vocab). `what` names the id
/// ("token id", "target") and `where` its place ("position", "row").
inline void checkTokenId(const char *what, std::int64_t id, const char *where,
                         std::int64_t index, std::int64_t vocab) {
  if (id < 0 || id >= vocab)
    throw Error(fmt::format("{} {} at {} {} is outside the vocabulary "
                            "(vocab_size {})",
                            what, id, where, index, vocab));
}

/// out[j] = sum over rows r (ascending) of value(r, j), accumulated in
/// double. Threads split the columns, so every column has one writer and the
/// same summation order for any number of threads.
template <typename T, typename Value>
void reduceColumns(std::int64_t rows, std::int64_t cols, T *out,
                   const Value &value) {
  std::int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelWork)
  for (std::int64_t block = 0; block < blocks; ++block) {
    std::int64_t begin = block * kColumnBlock;
    std::int64_t end = std::min(cols, begin + kColumnBlock);
    double acc[kColumnBlock] = {};
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t j = begin; j < end; ++j)
        acc[j - begin] += value(r, j);
    for (std::int64_t j = begin; j < end; ++j)
      out[j] = static_cast<T>(acc[j - begin]);
  }
}

} // namespace kiln::rt::host::detail

#endif // KILN_RUNTIME_HOST_KERNELSUPPORT_H
