//===- Embedding.cpp - Token embedding lookup and its scatter-add gradient ===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <algorithm>
#include <vector>

namespace kiln::rt::host {

using detail::checkSize;
using detail::kMinParallelWork;

namespace {

/// Checks the sizes and every id before any output is written (an exception
/// must not leave an OpenMP region).
void checkEmbeddingArgs(const char *kernel, const std::int32_t *ids,
                        std::int64_t numIds, std::int64_t vocab,
                        std::int64_t dim) {
  checkSize(kernel, "numIds", numIds);
  checkSize(kernel, "vocab", vocab);
  checkSize(kernel, "dim", dim);
  for (std::int64_t i = 0; i < numIds; ++i)
    detail::checkTokenId("token id", ids[i], "position", i, vocab);
}

} // namespace

template <typename T>
void embedding(const T *table, const std::int32_t *ids, T *y,
               std::int64_t numIds, std::int64_t vocab, std::int64_t dim) {
  checkEmbeddingArgs("embedding", ids, numIds, vocab, dim);
#pragma omp parallel for schedule(static) if (numIds * dim >= kMinParallelWork)
  for (std::int64_t i = 0; i < numIds; ++i)
    std::copy(table + ids[i] * dim, table + (ids[i] + 1) * dim, y + i * dim);
}

template <typename T>
void embeddingGrad(const T *dy, const std::int32_t *ids, T *dtable,
                   std::int64_t numIds, std::int64_t vocab, std::int64_t dim) {
  checkEmbeddingArgs("embeddingGrad", ids, numIds, vocab, dim);
  // Bucket the positions by id (a counting sort keeps them ascending), then
  // give each table row one writer that adds its positions in order.
  std::vector<std::int64_t> first(vocab + 1, 0);
  for (std::int64_t i = 0; i < numIds; ++i)
    ++first[ids[i] + 1];
  for (std::int64_t row = 0; row < vocab; ++row)
    first[row + 1] += first[row];
  std::vector<std::int64_t> positions(numIds);
  std::vector<std::int64_t> next(first.begin(), first.end() - 1);
  for (std::int64_t i = 0; i < numIds; ++i)
    positions[next[ids[i]]++] = i;

  std::int64_t work = (vocab + numIds) * dim;
#pragma omp parallel if (work >= kMinParallelWork)
  {
    std::vector<double> acc(dim);
#pragma omp for schedule(static)
    for (std::int64_t row = 0; row < vocab; ++row) {
      T *out = dtable + row * dim;
      if (first[row] == first[row + 1]) {
        std::fill(out, out + dim, T(0));
        continue;
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (std::int64_t p = first[row]; p < first[row + 1]; ++p) {
        const T *g = dy + positions[p] * dim;
        for (std::int64_t d = 0; d < dim; ++d)
          acc[d] += static_cast<double>(g[d]);
      }
      for (std::int64_t d = 0; d < dim; ++d)
        out[d] = static_cast<T>(acc[d]);
    }
  }
}

#define KILN_INSTANTIATE(T)                                                    \
  template void embedding<T>(const T *, const std::int32_t *, T *,             \
                             std::int64_t, std::int64_t, std::int64_t);        \
  template void embeddingGrad<T>(const T *, const std::int32_t *, T *,         \
                                 std::int64_t, std::int64_t, std::int64_t);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

} // namespace kiln::rt::host
