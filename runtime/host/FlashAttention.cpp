//===- FlashAttention.cpp - Tiled, IO-aware attention (FlashAttention-2) --===//
//
// The FlashAttention-2 algorithm block for block, on the host, so that CI
// tests the algorithm the GPU kernels implement rather than only its result.
// Each thread owns a small workspace, the analogue of a GPU block's shared
// memory and registers: it copies one tile of queries (blockQ rows) and one
// of keys and values (blockK rows) into it and forms scores only for that
// blockQ x blockK tile. No buffer grows with seq^2; the workspace does not
// grow with seq at all (flashWorkspaceBytes).
//
// Forward: per (document, query head, query tile), a running row maximum m,
// a running softmax denominator l and an output accumulator O are carried
// across key tiles with the online-softmax rescaling; out = O / l and
// lse = m + log(l) at the end. Backward: D = rowsum(dout * out) first; then
// per (document, kv head, key tile) dK and dV accumulate over every query
// head of the group and every query tile that sees the keys; then per
// (document, query head, query tile) dQ accumulates over the key tiles. P is
// recomputed from lse in both passes, so every output element has exactly
// one writer and one summation order, and the results do not depend on the
// number of threads.
//
// Tiles start at each document's first token and never cross a document
// boundary. With `causal`, a tile whose keys all lie after every query of
// the tile is skipped, not computed with a mask.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"
#include "runtime/host/RowKernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace kiln::rt::host {

using detail::AttentionShape;
using detail::checkAttentionShape;
using detail::checkSize;
using detail::documentBounds;

namespace {

/// Score tiles the calling thread's last flash call skipped; see
/// lastSkippedTiles().
thread_local std::int64_t skippedTilesOfLastCall = 0;

void checkShape(const char *kernel, const AttentionShape &s,
                FlashBlocks blocks) {
  checkAttentionShape(kernel, s);
  if (blocks.blockQ <= 0 || blocks.blockK <= 0)
    throw Error(fmt::format("{}: expects positive block sizes, got blockQ {} "
                            "and blockK {}",
                            kernel, blocks.blockQ, blocks.blockK));
}

/// A block of consecutive tokens [begin, end) of the document
/// [docBegin, docEnd): the rows of one query or key tile.
struct Block {
  std::int64_t docBegin, docEnd, begin, end;

  std::int64_t rows() const { return end - begin; }
};

/// The blocks of `size` tokens each document splits into, from its first
/// token; the last block of a document may be shorter.
std::vector<Block> blocksOf(const std::vector<std::int64_t> &bounds,
                            std::int64_t size) {
  std::vector<Block> blocks;
  for (std::size_t doc = 0; doc + 1 < bounds.size(); ++doc)
    for (std::int64_t begin = bounds[doc]; begin < bounds[doc + 1];
         begin += size)
      blocks.push_back({bounds[doc], bounds[doc + 1], begin,
                        std::min(begin + size, bounds[doc + 1])});
  return blocks;
}

std::int64_t ceilDiv(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

/// Work below which a flash kernel runs on one thread, as attentionForward.
std::int64_t parallelWork(const AttentionShape &s,
                          const std::vector<std::int64_t> &bounds) {
  std::int64_t longest = 0;
  for (std::size_t i = 1; i < bounds.size(); ++i)
    longest = std::max(longest, bounds[i] - bounds[i - 1]);
  return s.batch * s.seq * s.heads * s.headDim * longest;
}

/// Hands out consecutive pieces of one per-thread workspace. With a null
/// base it only counts, which is how flashWorkspaceBytes sizes the tiles
/// the kernels carve.
template <typename T> class Carver {
public:
  explicit Carver(T *base) : base(base) {}
  T *take(std::int64_t count) {
    T *piece = base ? base + used : nullptr;
    used += count;
    return piece;
  }
  std::int64_t elements() const { return used; }

private:
  T *base;
  std::int64_t used = 0;
};

/// The forward's workspace: the query, key and value tiles, the score tile
/// (scores, then probabilities in place), the output accumulator and the
/// running row maximum and denominator.
template <typename T> struct ForwardTiles {
  T *q, *k, *v, *scores, *acc, *rowMax, *rowSum;

  ForwardTiles(Carver<T> &carve, std::int64_t headDim, FlashBlocks b)
      : q(carve.take(b.blockQ * headDim)), k(carve.take(b.blockK * headDim)),
        v(carve.take(b.blockK * headDim)),
        scores(carve.take(b.blockQ * b.blockK)),
        acc(carve.take(b.blockQ * headDim)), rowMax(carve.take(b.blockQ)),
        rowSum(carve.take(b.blockQ)) {}
};

/// The backward's workspace, shared by both passes: query-side tiles
/// (q, dout, their lse and D, the dq accumulator), key-side tiles (k, v, the
/// dk and dv accumulators) and the probability and score-gradient tiles.
template <typename T> struct BackwardTiles {
  T *q, *dout, *lse, *rowDot, *dq, *k, *v, *dk, *dv, *probs, *dscores;

  BackwardTiles(Carver<T> &carve, std::int64_t headDim, FlashBlocks b)
      : q(carve.take(b.blockQ * headDim)), dout(carve.take(b.blockQ * headDim)),
        lse(carve.take(b.blockQ)), rowDot(carve.take(b.blockQ)),
        dq(carve.take(b.blockQ * headDim)), k(carve.take(b.blockK * headDim)),
        v(carve.take(b.blockK * headDim)), dk(carve.take(b.blockK * headDim)),
        dv(carve.take(b.blockK * headDim)),
        probs(carve.take(b.blockQ * b.blockK)),
        dscores(carve.take(b.blockQ * b.blockK)) {}
};

/// Elements of T that the workspace `Tiles` (ForwardTiles or BackwardTiles)
/// carves, for one thread.
template <typename T, template <typename> class Tiles>
std::int64_t tileElements(std::int64_t headDim, FlashBlocks blocks) {
  Carver<T> counter(nullptr);
  Tiles<T> tiles(counter, headDim, blocks);
  (void)tiles;
  return counter.elements();
}

/// Copies the rows [begin, end) of one head of a [tokens, stride] tensor
/// (starting at column `offset`) into a dense [rows, headDim] tile, rotated
/// by their rope table rows (and rounded) when `rope` has a table.
template <typename T>
void loadTile(const T *src, std::int64_t stride, std::int64_t offset,
              std::int64_t begin, std::int64_t end, std::int64_t headDim,
              T *tile, const RopeOnLoad &rope = {}) {
  for (std::int64_t t = begin; t < end; ++t) {
    T *row = tile + (t - begin) * headDim;
    std::copy_n(src + t * stride + offset, headDim, row);
    if (!rope.table)
      continue;
    row::rotateByTableRow(row, rope.table + t * headDim, headDim,
                          /*inverse=*/false);
    if constexpr (std::is_same_v<T, float>)
      if (rope.round)
        for (std::int64_t e = 0; e < headDim; ++e)
          row[e] = rope.round(row[e]);
  }
}

/// Stores scale x a gradient row of a tile, rotated back by the inverse
/// angles of token t's rope table row when `rope` has a table (the gradient
/// of the unrotated q or k). `row` is scaled in place.
template <typename T>
void storeGradientRow(T *row, T scale, std::int64_t t, std::int64_t headDim,
                      const RopeOnLoad &rope, T *out) {
  for (std::int64_t e = 0; e < headDim; ++e)
    row[e] = scale * row[e];
  if (rope.table)
    row::rotateByTableRow(row, rope.table + t * headDim, headDim,
                          /*inverse=*/true);
  std::copy_n(row, headDim, out);
}

// The three tile products below are the whole arithmetic of both passes.
// Each takes four rows of its reduction dimension (or four outputs) per
// sweep over headDim, which gives the vectorised inner loop four independent
// multiply-adds per load of the shared operand; the order of every sum is
// fixed by the tile shape alone.

/// c[i, j] = alpha * sum_e a[i, e] b[j, e] for i < m, j < n: a tile of
/// A B^T, a and b dense with headDim columns, c with ldc.
template <typename T>
void multiplyTransposed(const T *__restrict a, const T *__restrict b,
                        T *__restrict c, std::int64_t m, std::int64_t n,
                        std::int64_t headDim, std::int64_t ldc, T alpha) {
  for (std::int64_t i = 0; i < m; ++i) {
    const T *ai = a + i * headDim;
    T *ci = c + i * ldc;
    std::int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const T *b0 = b + j * headDim, *b1 = b0 + headDim, *b2 = b1 + headDim,
              *b3 = b2 + headDim;
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (std::int64_t e = 0; e < headDim; ++e) {
        s0 += ai[e] * b0[e];
        s1 += ai[e] * b1[e];
        s2 += ai[e] * b2[e];
        s3 += ai[e] * b3[e];
      }
      ci[j] = alpha * s0;
      ci[j + 1] = alpha * s1;
      ci[j + 2] = alpha * s2;
      ci[j + 3] = alpha * s3;
    }
    for (; j < n; ++j) {
      const T *bj = b + j * headDim;
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (std::int64_t e = 0; e < headDim; ++e)
        sum += ai[e] * bj[e];
      ci[j] = alpha * sum;
    }
  }
}

/// c += p b: c [m, headDim] gains p [m, n] (leading dimension ldp) times
/// b [n, headDim].
template <typename T>
void accumulateProduct(const T *__restrict p, const T *__restrict b,
                       T *__restrict c, std::int64_t m, std::int64_t n,
                       std::int64_t headDim, std::int64_t ldp) {
  for (std::int64_t i = 0; i < m; ++i) {
    T *ci = c + i * headDim;
    const T *pi = p + i * ldp;
    std::int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const T *b0 = b + j * headDim, *b1 = b0 + headDim, *b2 = b1 + headDim,
              *b3 = b2 + headDim;
      T p0 = pi[j], p1 = pi[j + 1], p2 = pi[j + 2], p3 = pi[j + 3];
#pragma omp simd
      for (std::int64_t e = 0; e < headDim; ++e)
        ci[e] += p0 * b0[e] + p1 * b1[e] + p2 * b2[e] + p3 * b3[e];
    }
    for (; j < n; ++j) {
      const T *bj = b + j * headDim;
      T pj = pi[j];
#pragma omp simd
      for (std::int64_t e = 0; e < headDim; ++e)
        ci[e] += pj * bj[e];
    }
  }
}

/// c += p^T a: c [n, headDim] gains the transpose of p [m, n] (leading
/// dimension ldp) times a [m, headDim].
template <typename T>
void accumulateTransposedProduct(const T *__restrict p, const T *__restrict a,
                                 T *__restrict c, std::int64_t m,
                                 std::int64_t n, std::int64_t headDim,
                                 std::int64_t ldp) {
  for (std::int64_t j = 0; j < n; ++j) {
    T *cj = c + j * headDim;
    std::int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
      const T *a0 = a + i * headDim, *a1 = a0 + headDim, *a2 = a1 + headDim,
              *a3 = a2 + headDim;
      T p0 = p[i * ldp + j], p1 = p[(i + 1) * ldp + j],
        p2 = p[(i + 2) * ldp + j], p3 = p[(i + 3) * ldp + j];
#pragma omp simd
      for (std::int64_t e = 0; e < headDim; ++e)
        cj[e] += p0 * a0[e] + p1 * a1[e] + p2 * a2[e] + p3 * a3[e];
    }
    for (; i < m; ++i) {
      const T *ai = a + i * headDim;
      T pi = p[i * ldp + j];
#pragma omp simd
      for (std::int64_t e = 0; e < headDim; ++e)
        cj[e] += pi * ai[e];
    }
  }
}

/// How many keys of the key block starting at `keyBegin` (of `cols` keys)
/// query t sees: all of them, or with `causal` those at or before t.
std::int64_t visibleKeys(bool causal, std::int64_t t, std::int64_t keyBegin,
                         std::int64_t cols) {
  if (!causal)
    return cols;
  return std::clamp<std::int64_t>(t + 1 - keyBegin, 0, cols);
}

/// The end of the keys any query of `queries` sees: its document's end, or
/// with `causal` the end of the block itself.
std::int64_t keyEndFor(bool causal, const Block &queries) {
  return causal ? queries.end : queries.docEnd;
}

/// The first query of the document that sees a key of `keys`.
std::int64_t queryBeginFor(bool causal, const Block &keys) {
  return causal ? keys.begin : keys.docBegin;
}

/// Turns the scores of one tile into probabilities exp(score - lse) in
/// place, zeroing the keys a query may not see (and every key of a query
/// whose lse is -inf, which saw none in the forward).
template <typename T>
void recomputeProbabilities(T *probs, const T *lse, const Block &queries,
                            const Block &keys, bool causal, std::int64_t ldp) {
  for (std::int64_t r = 0; r < queries.rows(); ++r) {
    T *row = probs + r * ldp;
    std::int64_t visible =
        std::isinf(lse[r])
            ? 0
            : visibleKeys(causal, queries.begin + r, keys.begin, keys.rows());
    for (std::int64_t j = 0; j < visible; ++j)
      row[j] = std::exp(row[j] - lse[r]);
    std::fill(row + visible, row + keys.rows(), T(0));
  }
}

/// dS = P * (dP - D) in place of dP, row by row.
template <typename T>
void scoreGradients(const T *probs, const T *rowDot, T *dscores,
                    std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < cols; ++j)
      dscores[r * ld + j] =
          probs[r * ld + j] * (dscores[r * ld + j] - rowDot[r]);
}

} // namespace

std::int64_t flashWorkspaceBytes(std::int64_t headDim, FlashBlocks blocks,
                                 std::int64_t elementBytes) {
  std::int64_t forward = tileElements<char, ForwardTiles>(headDim, blocks);
  std::int64_t backward = tileElements<char, BackwardTiles>(headDim, blocks);
  return std::max(forward, backward) * elementBytes;
}

std::int64_t lastSkippedTiles() { return skippedTilesOfLastCall; }

template <typename T>
void flashAttentionForward(const T *q, const T *k, const T *v, T *out,
                           float *lse, std::int64_t batch, std::int64_t seq,
                           std::int64_t heads, std::int64_t kvHeads,
                           std::int64_t headDim, double scale, bool causal,
                           const std::int32_t *cuSeqlens,
                           std::int64_t numCuSeqlens, FlashBlocks blocks,
                           const RowStrides &strides, const RopeOnLoad &rope) {
  const char *kernel = "flashAttentionForward";
  AttentionShape s{batch, seq, heads, kvHeads, headDim};
  const std::int64_t qPitch = strides.q ? strides.q : s.qStride(),
                     kPitch = strides.k ? strides.k : s.kvStride(),
                     vPitch = strides.v ? strides.v : s.kvStride();
  checkShape(kernel, s, blocks);
  std::vector<std::int64_t> bounds =
      documentBounds(kernel, s.batch, s.seq, cuSeqlens, numCuSeqlens);
  std::vector<Block> queryBlocks = blocksOf(bounds, blocks.blockQ);
  std::int64_t numQueryBlocks = static_cast<std::int64_t>(queryBlocks.size());
  std::int64_t ldp = blocks.blockK;
  const T negInf = -std::numeric_limits<T>::infinity();
  std::int64_t skipped = 0;

#pragma omp parallel if (parallelWork(s, bounds) >= detail::kMinParallelWork)
  {
    std::vector<T> workspace(tileElements<T, ForwardTiles>(headDim, blocks));
    Carver<T> carve(workspace.data());
    ForwardTiles<T> tile(carve, headDim, blocks);
#pragma omp for collapse(2) schedule(dynamic) reduction(+ : skipped)
    for (std::int64_t h = 0; h < heads; ++h) {
      for (std::int64_t qb = 0; qb < numQueryBlocks; ++qb) {
        const Block &queries = queryBlocks[qb];
        std::int64_t rows = queries.rows();
        std::int64_t qOffset = h * headDim;
        std::int64_t kvOffset = (h / s.group()) * headDim;
        loadTile(q, qPitch, qOffset, queries.begin, queries.end, headDim,
                 tile.q, rope);
        std::fill_n(tile.acc, rows * headDim, T(0));
        std::fill_n(tile.rowMax, rows, negInf);
        std::fill_n(tile.rowSum, rows, T(0));

        std::int64_t keyEnd = keyEndFor(causal, queries);
        std::int64_t docLength = queries.docEnd - queries.docBegin;
        skipped += ceilDiv(docLength, blocks.blockK) -
                   ceilDiv(keyEnd - queries.docBegin, blocks.blockK);
        for (std::int64_t kb = queries.docBegin; kb < keyEnd;
             kb += blocks.blockK) {
          Block keys{queries.docBegin, queries.docEnd, kb,
                     std::min(kb + blocks.blockK, queries.docEnd)};
          std::int64_t cols = keys.rows();
          loadTile(k, kPitch, kvOffset, keys.begin, keys.end, headDim, tile.k,
                   rope);
          loadTile(v, vPitch, kvOffset, keys.begin, keys.end, headDim, tile.v);
          // S = scale * Q K^T, then the online softmax: rescale what the
          // earlier key blocks left by exp(m - m_new) and add this block.
          multiplyTransposed(tile.q, tile.k, tile.scores, rows, cols, headDim,
                             ldp, static_cast<T>(scale));
          for (std::int64_t r = 0; r < rows; ++r) {
            T *row = tile.scores + r * ldp;
            std::int64_t visible =
                visibleKeys(causal, queries.begin + r, keys.begin, cols);
            T blockMax = negInf;
            for (std::int64_t j = 0; j < visible; ++j)
              blockMax = std::max(blockMax, row[j]);
            T newMax = std::max(tile.rowMax[r], blockMax);
            if (newMax == negInf) { // nothing visible yet
              std::fill(row, row + cols, T(0));
              continue;
            }
            T rescale = std::exp(tile.rowMax[r] - newMax);
            T blockSum = 0;
            for (std::int64_t j = 0; j < visible; ++j) {
              row[j] = std::exp(row[j] - newMax);
              blockSum += row[j];
            }
            std::fill(row + visible, row + cols, T(0));
            tile.rowSum[r] = rescale * tile.rowSum[r] + blockSum;
            tile.rowMax[r] = newMax;
            T *accRow = tile.acc + r * headDim;
            for (std::int64_t e = 0; e < headDim; ++e)
              accRow[e] *= rescale;
          }
          accumulateProduct(tile.scores, tile.v, tile.acc, rows, cols, headDim,
                            ldp);
        }

        for (std::int64_t r = 0; r < rows; ++r) {
          std::int64_t t = queries.begin + r;
          T *outRow = out + t * s.qStride() + qOffset;
          const T *accRow = tile.acc + r * headDim;
          T sum = tile.rowSum[r];
          if (sum == T(0)) {
            // No visible key: an empty softmax is 0, its log-sum -inf.
            std::fill_n(outRow, headDim, T(0));
            lse[s.lseIndex(t, h)] = -std::numeric_limits<float>::infinity();
            continue;
          }
          for (std::int64_t e = 0; e < headDim; ++e)
            outRow[e] = accRow[e] / sum;
          lse[s.lseIndex(t, h)] =
              static_cast<float>(tile.rowMax[r] + std::log(sum));
        }
      }
    }
  }
  skippedTilesOfLastCall = skipped;
}

template <typename T>
void flashAttentionBackward(const T *dout, const T *q, const T *k, const T *v,
                            const T *out, const float *lse, T *dq, T *dk, T *dv,
                            std::int64_t batch, std::int64_t seq,
                            std::int64_t heads, std::int64_t kvHeads,
                            std::int64_t headDim, double scale, bool causal,
                            const std::int32_t *cuSeqlens,
                            std::int64_t numCuSeqlens, FlashBlocks blocks,
                            const RowStrides &strides, const RopeOnLoad &rope) {
  const char *kernel = "flashAttentionBackward";
  AttentionShape s{batch, seq, heads, kvHeads, headDim};
  const std::int64_t qPitch = strides.q ? strides.q : s.qStride(),
                     kPitch = strides.k ? strides.k : s.kvStride(),
                     vPitch = strides.v ? strides.v : s.kvStride(),
                     dqPitch = strides.dq ? strides.dq : s.qStride(),
                     dkPitch = strides.dk ? strides.dk : s.kvStride(),
                     dvPitch = strides.dv ? strides.dv : s.kvStride();
  checkShape(kernel, s, blocks);
  std::vector<std::int64_t> bounds =
      documentBounds(kernel, s.batch, s.seq, cuSeqlens, numCuSeqlens);
  std::vector<Block> queryBlocks = blocksOf(bounds, blocks.blockQ);
  std::vector<Block> keyBlocks = blocksOf(bounds, blocks.blockK);
  std::int64_t numQueryBlocks = static_cast<std::int64_t>(queryBlocks.size());
  std::int64_t numKeyBlocks = static_cast<std::int64_t>(keyBlocks.size());
  std::int64_t tokens = batch * seq;
  std::int64_t ldp = blocks.blockK;
  const T tScale = static_cast<T>(scale);
  bool parallel = parallelWork(s, bounds) >= detail::kMinParallelWork;
  std::int64_t skipped = 0;

  // D[t, h] = rowsum(dout * out), the softmax-gradient term of every row,
  // computed once for both passes.
  std::vector<T> rowDots(tokens * heads);
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const T *doutRow = dout + t * s.qStride() + h * headDim;
      const T *outRow = out + t * s.qStride() + h * headDim;
      T sum = 0;
      for (std::int64_t e = 0; e < headDim; ++e)
        sum += doutRow[e] * outRow[e];
      rowDots[t * heads + h] = sum;
    }
  }

#pragma omp parallel if (parallel)
  {
    std::vector<T> workspace(tileElements<T, BackwardTiles>(headDim, blocks));
    Carver<T> carve(workspace.data());
    BackwardTiles<T> tile(carve, headDim, blocks);

    // Loads q, dout, lse and D of query head h over `queries`.
    auto loadQueries = [&](const Block &queries, std::int64_t h) {
      loadTile(q, qPitch, h * headDim, queries.begin, queries.end, headDim,
               tile.q, rope);
      loadTile(dout, s.qStride(), h * headDim, queries.begin, queries.end,
               headDim, tile.dout);
      for (std::int64_t t = queries.begin; t < queries.end; ++t) {
        tile.lse[t - queries.begin] = static_cast<T>(lse[s.lseIndex(t, h)]);
        tile.rowDot[t - queries.begin] = rowDots[t * heads + h];
      }
    };
    // P and dS of the loaded query and key tiles: P = exp(scale Q K^T - lse),
    // dS = P * (dO V^T - D).
    auto probabilitiesAndGradients = [&](const Block &queries,
                                         const Block &keys) {
      std::int64_t rows = queries.rows(), cols = keys.rows();
      multiplyTransposed(tile.q, tile.k, tile.probs, rows, cols, headDim, ldp,
                         tScale);
      recomputeProbabilities(tile.probs, tile.lse, queries, keys, causal, ldp);
      multiplyTransposed(tile.dout, tile.v, tile.dscores, rows, cols, headDim,
                         ldp, T(1));
      scoreGradients(tile.probs, tile.rowDot, tile.dscores, rows, cols, ldp);
    };

    // Pass 1: dK and dV, one key block of one kv head per work item.
#pragma omp for collapse(2) schedule(dynamic) reduction(+ : skipped)
    for (std::int64_t kvh = 0; kvh < kvHeads; ++kvh) {
      for (std::int64_t kb = 0; kb < numKeyBlocks; ++kb) {
        const Block &keys = keyBlocks[kb];
        std::int64_t cols = keys.rows();
        loadTile(k, kPitch, kvh * headDim, keys.begin, keys.end, headDim,
                 tile.k, rope);
        loadTile(v, vPitch, kvh * headDim, keys.begin, keys.end, headDim,
                 tile.v);
        std::fill_n(tile.dk, cols * headDim, T(0));
        std::fill_n(tile.dv, cols * headDim, T(0));
        // Query blocks start at the document's first token: begin at the one
        // holding the first query that sees these keys.
        std::int64_t firstQuery = queryBeginFor(causal, keys);
        std::int64_t queryStart = keys.docBegin + (firstQuery - keys.docBegin) /
                                                      blocks.blockQ *
                                                      blocks.blockQ;
        skipped += s.group() * ((queryStart - keys.docBegin) / blocks.blockQ);
        for (std::int64_t h = kvh * s.group(); h < (kvh + 1) * s.group(); ++h) {
          for (std::int64_t qs = queryStart; qs < keys.docEnd;
               qs += blocks.blockQ) {
            Block queries{keys.docBegin, keys.docEnd, qs,
                          std::min(qs + blocks.blockQ, keys.docEnd)};
            loadQueries(queries, h);
            probabilitiesAndGradients(queries, keys);
            accumulateTransposedProduct(tile.probs, tile.dout, tile.dv,
                                        queries.rows(), cols, headDim, ldp);
            accumulateTransposedProduct(tile.dscores, tile.q, tile.dk,
                                        queries.rows(), cols, headDim, ldp);
          }
        }
        for (std::int64_t j = keys.begin; j < keys.end; ++j) {
          storeGradientRow(tile.dk + (j - keys.begin) * headDim, tScale, j,
                           headDim, rope, dk + j * dkPitch + kvh * headDim);
          std::copy_n(tile.dv + (j - keys.begin) * headDim, headDim,
                      dv + j * dvPitch + kvh * headDim);
        }
      }
    }

    // Pass 2: dQ, one query block of one query head per work item; P and dS
    // are recomputed rather than shared, so dq too has a single writer.
#pragma omp for collapse(2) schedule(dynamic) reduction(+ : skipped)
    for (std::int64_t h = 0; h < heads; ++h) {
      for (std::int64_t qb = 0; qb < numQueryBlocks; ++qb) {
        const Block &queries = queryBlocks[qb];
        std::int64_t rows = queries.rows();
        std::int64_t kvOffset = (h / s.group()) * headDim;
        loadQueries(queries, h);
        std::fill_n(tile.dq, rows * headDim, T(0));
        std::int64_t keyEnd = keyEndFor(causal, queries);
        std::int64_t docLength = queries.docEnd - queries.docBegin;
        skipped += ceilDiv(docLength, blocks.blockK) -
                   ceilDiv(keyEnd - queries.docBegin, blocks.blockK);
        for (std::int64_t kb = queries.docBegin; kb < keyEnd;
             kb += blocks.blockK) {
          Block keys{queries.docBegin, queries.docEnd, kb,
                     std::min(kb + blocks.blockK, queries.docEnd)};
          loadTile(k, kPitch, kvOffset, keys.begin, keys.end, headDim, tile.k,
                   rope);
          loadTile(v, vPitch, kvOffset, keys.begin, keys.end, headDim, tile.v);
          probabilitiesAndGradients(queries, keys);
          accumulateProduct(tile.dscores, tile.k, tile.dq, rows, keys.rows(),
                            headDim, ldp);
        }
        for (std::int64_t t = queries.begin; t < queries.end; ++t)
          storeGradientRow(tile.dq + (t - queries.begin) * headDim, tScale, t,
                           headDim, rope, dq + t * dqPitch + h * headDim);
      }
    }
  }
  skippedTilesOfLastCall = skipped;
}

#define KILN_INSTANTIATE(T)                                                    \
  template void flashAttentionForward<T>(                                      \
      const T *, const T *, const T *, T *, float *, std::int64_t,             \
      std::int64_t, std::int64_t, std::int64_t, std::int64_t, double, bool,    \
      const std::int32_t *, std::int64_t, FlashBlocks, const RowStrides &,     \
      const RopeOnLoad &);                                                     \
  template void flashAttentionBackward<T>(                                     \
      const T *, const T *, const T *, const T *, const T *, const float *,    \
      T *, T *, T *, std::int64_t, std::int64_t, std::int64_t, std::int64_t,   \
      std::int64_t, double, bool, const std::int32_t *, std::int64_t,          \
      FlashBlocks, const RowStrides &, const RopeOnLoad &);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

} // namespace kiln::rt::host
