//===- Attention.cpp - Exact attention with GQA, causal and packed docs ---===//
//
// The reference the tiled GPU kernels are tested against: every score is
// formed, in double, and softmax rows are exact. A query at flattened token t
// of document [begin, end) sees the keys [begin, causal ? t + 1 : end), a
// contiguous range, so both directions loop over documents.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace kiln::rt::host {

using detail::AttentionShape;
using detail::checkAttentionShape;
using detail::checkSize;
using detail::documentBounds;

namespace {

std::int64_t longestDocument(const std::vector<std::int64_t> &bounds) {
  std::int64_t longest = 0;
  for (std::size_t i = 1; i < bounds.size(); ++i)
    longest = std::max(longest, bounds[i] - bounds[i - 1]);
  return longest;
}

template <typename T, typename U>
double dot(const T *a, const U *b, std::int64_t n) {
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i)
    sum += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return sum;
}

} // namespace

template <typename T>
void attentionForward(const T *q, const T *k, const T *v, T *out, float *lse,
                      std::int64_t batch, std::int64_t seq, std::int64_t heads,
                      std::int64_t kvHeads, std::int64_t headDim, double scale,
                      bool causal, const std::int32_t *cuSeqlens,
                      std::int64_t numCuSeqlens) {
  AttentionShape s{batch, seq, heads, kvHeads, headDim};
  checkAttentionShape("attentionForward", s);
  std::vector<std::int64_t> bounds = documentBounds(
      "attentionForward", s.batch, s.seq, cuSeqlens, numCuSeqlens);
  std::int64_t numDocs = static_cast<std::int64_t>(bounds.size()) - 1;
  std::int64_t longest = longestDocument(bounds);
  std::int64_t work = batch * seq * heads * headDim * longest;

#pragma omp parallel if (work >= detail::kMinParallelWork)
  {
    std::vector<double> scores(longest), acc(headDim);
#pragma omp for collapse(2) schedule(dynamic)
    for (std::int64_t doc = 0; doc < numDocs; ++doc) {
      for (std::int64_t h = 0; h < heads; ++h) {
        std::int64_t begin = bounds[doc], end = bounds[doc + 1];
        std::int64_t kvOffset = (h / s.group()) * headDim;
        for (std::int64_t t = begin; t < end; ++t) {
          const T *qt = q + t * s.qStride() + h * headDim;
          T *ot = out + t * s.qStride() + h * headDim;
          std::int64_t last = causal ? t + 1 : end;
          double maxScore = -std::numeric_limits<double>::infinity();
          for (std::int64_t j = begin; j < last; ++j) {
            double score =
                scale * dot(qt, k + j * s.kvStride() + kvOffset, headDim);
            scores[j - begin] = score;
            maxScore = std::max(maxScore, score);
          }
          if (last <= begin) {
            // No visible key: an empty softmax is 0, its log-sum -inf.
            std::fill(ot, ot + headDim, T(0));
            lse[s.lseIndex(t, h)] = -std::numeric_limits<float>::infinity();
            continue;
          }
          std::fill(acc.begin(), acc.end(), 0.0);
          double denominator = 0;
          for (std::int64_t j = begin; j < last; ++j) {
            double p = std::exp(scores[j - begin] - maxScore);
            denominator += p;
            const T *vj = v + j * s.kvStride() + kvOffset;
            for (std::int64_t d = 0; d < headDim; ++d)
              acc[d] += p * static_cast<double>(vj[d]);
          }
          for (std::int64_t d = 0; d < headDim; ++d)
            ot[d] = static_cast<T>(acc[d] / denominator);
          lse[s.lseIndex(t, h)] =
              static_cast<float>(maxScore + std::log(denominator));
        }
      }
    }
  }
}

template <typename T>
void attentionBackward(const T *dout, const T *q, const T *k, const T *v,
                       const T *out, const float *lse, T *dq, T *dk, T *dv,
                       std::int64_t batch, std::int64_t seq, std::int64_t heads,
                       std::int64_t kvHeads, std::int64_t headDim, double scale,
                       bool causal, const std::int32_t *cuSeqlens,
                       std::int64_t numCuSeqlens) {
  AttentionShape s{batch, seq, heads, kvHeads, headDim};
  checkAttentionShape("attentionBackward", s);
  std::vector<std::int64_t> bounds = documentBounds(
      "attentionBackward", s.batch, s.seq, cuSeqlens, numCuSeqlens);
  std::int64_t numDocs = static_cast<std::int64_t>(bounds.size()) - 1;
  std::int64_t longest = longestDocument(bounds);
  std::int64_t work = batch * seq * heads * headDim * longest;

  // One work item per (document, kv head): it owns dq of its queries in the
  // heads of the group and dk, dv of its keys, so nothing is shared.
#pragma omp parallel if (work >= detail::kMinParallelWork)
  {
    std::vector<double> dkAcc(longest * headDim), dvAcc(longest * headDim),
        dqAcc(headDim);
#pragma omp for collapse(2) schedule(dynamic)
    for (std::int64_t doc = 0; doc < numDocs; ++doc) {
      for (std::int64_t kvh = 0; kvh < kvHeads; ++kvh) {
        std::int64_t begin = bounds[doc], end = bounds[doc + 1];
        std::int64_t kvOffset = kvh * headDim;
        std::fill(dkAcc.begin(), dkAcc.end(), 0.0);
        std::fill(dvAcc.begin(), dvAcc.end(), 0.0);
        for (std::int64_t h = kvh * s.group(); h < (kvh + 1) * s.group(); ++h) {
          for (std::int64_t t = begin; t < end; ++t) {
            std::int64_t qOffset = t * s.qStride() + h * headDim;
            const T *qt = q + qOffset;
            const T *doutRow = dout + qOffset;
            double rowDot = dot(doutRow, out + qOffset, headDim);
            double rowLse = lse[s.lseIndex(t, h)];
            std::fill(dqAcc.begin(), dqAcc.end(), 0.0);
            std::int64_t last = causal ? t + 1 : end;
            for (std::int64_t j = begin; j < last; ++j) {
              const T *kj = k + j * s.kvStride() + kvOffset;
              const T *vj = v + j * s.kvStride() + kvOffset;
              double p = std::exp(scale * dot(qt, kj, headDim) - rowLse);
              double dp = dot(doutRow, vj, headDim);
              double ds = p * (dp - rowDot);
              double *dkj = dkAcc.data() + (j - begin) * headDim;
              double *dvj = dvAcc.data() + (j - begin) * headDim;
              for (std::int64_t d = 0; d < headDim; ++d) {
                dqAcc[d] += ds * static_cast<double>(kj[d]);
                dkj[d] += scale * ds * static_cast<double>(qt[d]);
                dvj[d] += p * static_cast<double>(doutRow[d]);
              }
            }
            for (std::int64_t d = 0; d < headDim; ++d)
              dq[qOffset + d] = static_cast<T>(scale * dqAcc[d]);
          }
        }
        for (std::int64_t j = begin; j < end; ++j) {
          std::int64_t kvIndex = j * s.kvStride() + kvOffset;
          for (std::int64_t d = 0; d < headDim; ++d) {
            dk[kvIndex + d] = static_cast<T>(dkAcc[(j - begin) * headDim + d]);
            dv[kvIndex + d] = static_cast<T>(dvAcc[(j - begin) * headDim + d]);
          }
        }
      }
    }
  }
}

#define KILN_INSTANTIATE(T)                                                    \
  template void attentionForward<T>(                                           \
      const T *, const T *, const T *, T *, float *, std::int64_t,             \
      std::int64_t, std::int64_t, std::int64_t, std::int64_t, double, bool,    \
      const std::int32_t *, std::int64_t);                                     \
  template void attentionBackward<T>(                                          \
      const T *, const T *, const T *, const T *, const T *, const float *,    \
      T *, T *, T *, std::int64_t, std::int64_t, std::int64_t, std::int64_t,   \
      std::int64_t, double, bool, const std::int32_t *, std::int64_t);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

} // namespace kiln::rt::host
