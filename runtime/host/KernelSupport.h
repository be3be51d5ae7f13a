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
#include <array>
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

/// out[n][j] = sum over rows r (ascending) of value(r, j)[n] for n < N,
/// accumulated in double: N column sums in one pass over the rows. Threads
/// split the columns, so every column has one writer and the same
/// summation order for any number of threads (and for any N: each sum is
/// bitwise what it would be alone).
template <std::size_t N, typename T, typename Value>
void reduceColumnSums(std::int64_t rows, std::int64_t cols,
                      const std::array<T *, N> &out, const Value &value) {
  std::int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelWork)
  for (std::int64_t block = 0; block < blocks; ++block) {
    std::int64_t begin = block * kColumnBlock;
    std::int64_t end = std::min(cols, begin + kColumnBlock);
    double acc[N][kColumnBlock] = {};
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t j = begin; j < end; ++j) {
        std::array<double, N> v = value(r, j);
        for (std::size_t n = 0; n < N; ++n)
          acc[n][j - begin] += v[n];
      }
    for (std::size_t n = 0; n < N; ++n)
      for (std::int64_t j = begin; j < end; ++j)
        out[n][j] = static_cast<T>(acc[n][j - begin]);
  }
}

/// One column sum: out[j] = sum over rows r (ascending) of value(r, j).
template <typename T, typename Value>
void reduceColumns(std::int64_t rows, std::int64_t cols, T *out,
                   const Value &value) {
  reduceColumnSums<1>(rows, cols, std::array<T *, 1>{out},
                      [&](std::int64_t r, std::int64_t j) {
                        return std::array<double, 1>{value(r, j)};
                      });
}

/// The shape arguments of the attention kernels (naive and flash).
struct AttentionShape {
  std::int64_t batch, seq, heads, kvHeads, headDim;

  std::int64_t group() const { return heads / kvHeads; }
  std::int64_t qStride() const { return heads * headDim; }
  std::int64_t kvStride() const { return kvHeads * headDim; }
  /// Index into lse [batch, heads, seq] of flattened token t and head h.
  std::int64_t lseIndex(std::int64_t t, std::int64_t h) const {
    return ((t / seq) * heads + h) * seq + t % seq;
  }
};

inline void checkAttentionShape(const char *kernel, const AttentionShape &s) {
  checkSize(kernel, "batch", s.batch);
  checkSize(kernel, "seq", s.seq);
  checkSize(kernel, "headDim", s.headDim);
  if (s.heads <= 0 || s.kvHeads <= 0 || s.heads % s.kvHeads != 0)
    throw Error(fmt::format("{}: expects kvHeads ({}) to be positive and to "
                            "divide heads ({})",
                            kernel, s.kvHeads, s.heads));
}

/// Document boundaries in the flattened batch * seq token stream of an
/// attention kernel: the batch rows without cuSeqlens, else cuSeqlens after
/// checking it (at least two entries, from 0 to batch * seq, never
/// decreasing); errors name `kernel` and the offending entry.
inline std::vector<std::int64_t>
documentBounds(const char *kernel, std::int64_t batch, std::int64_t seq,
               const std::int32_t *cuSeqlens, std::int64_t numCuSeqlens) {
  std::int64_t tokens = batch * seq;
  std::vector<std::int64_t> bounds;
  if (!cuSeqlens) {
    for (std::int64_t b = 0; b <= batch; ++b)
      bounds.push_back(b * seq);
    return bounds;
  }
  if (numCuSeqlens < 2)
    throw Error(fmt::format("{}: cu_seqlens needs at least 2 entries (0 and "
                            "batch * seq), got {}",
                            kernel, numCuSeqlens));
  for (std::int64_t i = 0; i < numCuSeqlens; ++i) {
    std::int64_t value = cuSeqlens[i];
    if (value < 0 || value > tokens)
      throw Error(fmt::format("{}: cu_seqlens[{}] = {} is outside [0, {}] "
                              "(batch * seq = {} * {})",
                              kernel, i, value, tokens, batch, seq));
    if (i > 0 && value < bounds.back())
      throw Error(fmt::format("{}: cu_seqlens[{}] = {} is less than "
                              "cu_seqlens[{}] = {}; document boundaries must "
                              "not decrease",
                              kernel, i, value, i - 1, bounds.back()));
    bounds.push_back(value);
  }
  if (bounds.front() != 0)
    throw Error(fmt::format("{}: cu_seqlens must start at 0, got "
                            "cu_seqlens[0] = {}",
                            kernel, bounds.front()));
  if (bounds.back() != tokens)
    throw Error(fmt::format("{}: cu_seqlens must end at batch * seq = {}, got "
                            "cu_seqlens[{}] = {}",
                            kernel, tokens, numCuSeqlens - 1, bounds.back()));
  return bounds;
}

} // namespace kiln::rt::host::detail

#endif // KILN_RUNTIME_HOST_KERNELSUPPORT_H
