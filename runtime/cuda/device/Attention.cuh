//===- Attention.cuh - Exact attention -------------------------*- CUDA -*-===//
//
// Attention (runtime/host/Attention.cpp), forward and backward, exact and
// naive: the kernels for FP32 storage and for head dims the tensor-core
// kernels (FlashAttention.cuh) do not take.
//
// Exact and naive: a block owns one row of one head; its warps take the
// keys (or queries) in turn, each lane holding headDim / 32 dimensions
// (d = lane + 32 e), and the warps' partial results are combined in warp
// order through shared memory. The head dimension is the template's
// kHeadDim (any value up to 512; multiples of 32 waste no lanes). q and out
// are [batch, seq, heads * kHeadDim], k and v [batch, seq, kvHeads *
// kHeadDim], lse and delta [batch, heads, seq] (FP32); query head h reads kv
// head h / (heads / kvHeads). Each row's result depends on neither the grid
// nor the other rows: any grid gives the same bits.
//
// A query at flattened token t = b * seq + i of document [begin, end) sees
// the keys [begin, causal ? t + 1 : end). Documents are the batch rows, or
// with cuSeqlens (non-decreasing from 0 to batch * seq) its intervals of the
// flattened token stream. cuSeqlens is not validated here (the host checks
// it); a malformed one cannot make a kernel read out of bounds: a token
// outside every interval sees no key (out = 0, lse = -inf).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_ATTENTION_CUH
#define KILN_RUNTIME_CUDA_DEVICE_ATTENTION_CUH

#include "Common.cuh"
#include "Reductions.cuh"
#include "Rope.cuh"

namespace kiln::dev {

namespace detail {

/// The document [begin, end) of flattened token t; begin <= t < end unless
/// cuSeqlens puts t in none (then begin = end = t).
__device__ __forceinline__ void documentOf(long long t, int batch, int seq,
                                           const int *cuSeqlens,
                                           int numCuSeqlens, long long &begin,
                                           long long &end) {
  if (!cuSeqlens) {
    begin = (t / seq) * seq;
    end = begin + seq;
    return;
  }
  // lo = the number of leading entries <= t (upper bound of t).
  int lo = 0, hi = numCuSeqlens;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (cuSeqlens[mid] <= t)
      lo = mid + 1;
    else
      hi = mid;
  }
  // The search saw cuSeqlens[lo - 1] <= t < cuSeqlens[lo] when both exist,
  // sorted or not, so clamping to the token range keeps every read inside.
  if (lo == 0 || lo == numCuSeqlens) {
    begin = end = t;
    return;
  }
  const long long tokens = static_cast<long long>(batch) * seq;
  begin = cuSeqlens[lo - 1] < 0 ? 0 : cuSeqlens[lo - 1];
  end = cuSeqlens[lo] > tokens ? tokens : cuSeqlens[lo];
}

/// The keys flattened token t sees: [begin, last) of its document, up to t
/// itself when causal.
__device__ __forceinline__ void visibleKeys(long long t, int batch, int seq,
                                            bool causal, const int *cuSeqlens,
                                            int numCuSeqlens, long long &begin,
                                            long long &last) {
  long long end;
  documentOf(t, batch, seq, cuSeqlens, numCuSeqlens, begin, end);
  last = causal && t + 1 < end ? t + 1 : end;
}

/// Index into [batch, heads, seq] of flattened token t and head h.
__device__ __forceinline__ long long headRowIndex(long long t, int h, int seq,
                                                  int heads) {
  return ((t / seq) * heads + h) * seq + t % seq;
}

/// Loads this lane's dimensions (lane + 32 e) of a head row as FP32; lanes
/// past kHeadDim get 0.
template <int kHeadDim, typename T>
__device__ __forceinline__ void
loadHeadRow(const T *p, int lane, float (&out)[(kHeadDim + 31) / 32]) {
#pragma unroll
  for (int e = 0; e < (kHeadDim + 31) / 32; ++e) {
    const int d = lane + 32 * e;
    out[e] = (kHeadDim % 32 == 0 || d < kHeadDim) ? toFloat(p[d]) : 0.0f;
  }
}

/// loadHeadRow of a head row `p` rotated by its rope table row (null: as
/// loaded) and rounded to T, as an unfused rope would have stored it; each
/// lane reads its elements' partners (d +- kHeadDim / 2) too.
template <int kHeadDim, typename T>
__device__ __forceinline__ void
loadRotatedHeadRow(const T *p, const float *tableRow, int lane,
                   float (&out)[(kHeadDim + 31) / 32]) {
  loadHeadRow<kHeadDim>(p, lane, out);
  if (!tableRow)
    return;
  constexpr int kHalf = kHeadDim / 2;
#pragma unroll
  for (int e = 0; e < (kHeadDim + 31) / 32; ++e) {
    const int d = lane + 32 * e;
    if (kHeadDim % 32 == 0 || d < kHeadDim)
      out[e] = toFloat(fromFloat<T>(
          rotatedByTable(out[e], toFloat(p[d < kHalf ? d + kHalf : d - kHalf]),
                         tableRow, d, kHeadDim, false)));
  }
}

/// Element d of a head's gradient from the warps' partial sums: scale x
/// their sum (in warp order) and, with a rope table row, rotated back by the
/// inverse angles (the gradient of the unrotated operand) with the sum of
/// the element it pairs with.
template <int kWarps, int kHeadDim>
__device__ __forceinline__ float
scaledGradient(const float (&partials)[kWarps][kHeadDim], int d, float scale,
               const float *tableRow) {
  const int partner = d < kHeadDim / 2 ? d + kHeadDim / 2 : d - kHeadDim / 2;
  float total = 0.0f, partnerTotal = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    total += partials[w][d];
    if (tableRow)
      partnerTotal += partials[w][partner];
  }
  return tableRow ? rotatedByTable(scale * total, scale * partnerTotal,
                                   tableRow, d, kHeadDim, true)
                  : scale * total;
}

/// The row of a rope table for token t, or null without one.
__device__ __forceinline__ const float *ropeRow(const float *rope, long long t,
                                                int headDim) {
  return rope ? rope + t * headDim : nullptr;
}

/// The compile-time checks of the attention templates' parameters.
template <int kHeadDim, int kThreads> struct AttentionShapeCheck {
  static_assert(kThreads % 32 == 0 && kThreads >= 32 && kThreads <= 1024,
                "kThreads must be a multiple of 32 in [32, 1024]");
  static_assert(kHeadDim > 0 && kHeadDim <= 512, "kHeadDim out of range");
  static constexpr bool ok = true;
};

} // namespace detail

/// Elements between consecutive tokens' rows of q, k and v and of their
/// gradients, where they are row-strided views into a packed tensor (GPT-2's
/// QKV); 0 for a contiguous tensor (heads x head dim per token). out and
/// dout are always contiguous.
struct AttentionPitches {
  long long q = 0, k = 0, v = 0, dq = 0, dk = 0, dv = 0;

  /// With the contiguous pitches filled in.
  __device__ __forceinline__ AttentionPitches resolve(int heads, int kvHeads,
                                                      int headDim) const {
    const long long qs = static_cast<long long>(heads) * headDim;
    const long long kvs = static_cast<long long>(kvHeads) * headDim;
    return {q ? q : qs,   k ? k : kvs,   v ? v : kvs,
            dq ? dq : qs, dk ? dk : kvs, dv ? dv : kvs};
  }
};

/// Exact softmax attention forward: out and lse (the natural log of the
/// softmax denominator of the scaled, masked scores; -inf with out = 0 for a
/// row that sees no key). Grid (seq, heads, batch): a block per query row
/// and head, warps taking the visible keys in turn with an online softmax
/// each, combined in warp order.
template <typename T, int kHeadDim, int kThreads>
__device__ __forceinline__ void
attentionForward(const T *q, const T *k, const T *v, T *out, float *lse,
                 int batch, int seq, int heads, int kvHeads, float scale,
                 bool causal, const int *cuSeqlens, int numCuSeqlens,
                 AttentionPitches pitches = {}, const float *rope = nullptr) {
  static_assert(detail::AttentionShapeCheck<kHeadDim, kThreads>::ok);
  constexpr int kWarps = kThreads / 32;
  constexpr int kPerLane = (kHeadDim + 31) / 32;
  static_assert(kWarps * (kHeadDim + 2) * 4 <= 48 * 1024,
                "attentionForward: shared memory over 48 KiB");
  __shared__ float warpMaxes[kWarps], warpSums[kWarps];
  __shared__ float warpAcc[kWarps][kHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const AttentionPitches pitch = pitches.resolve(heads, kvHeads, kHeadDim);

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int h = blockIdx.y; h < heads; h += gridDim.y)
      for (int i = blockIdx.x; i < seq; i += gridDim.x) {
        const long long t = static_cast<long long>(b) * seq + i;
        const long long kvOffset = static_cast<long long>(h / group) * kHeadDim;
        long long begin, last;
        detail::visibleKeys(t, batch, seq, causal, cuSeqlens, numCuSeqlens,
                            begin, last);

        float qr[kPerLane];
        detail::loadRotatedHeadRow<kHeadDim>(q + t * pitch.q + h * kHeadDim,
                                             detail::ropeRow(rope, t, kHeadDim),
                                             lane, qr);
        float max = negativeInfinity(), sum = 0.0f, acc[kPerLane];
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          acc[e] = 0.0f;
        for (long long j = begin + warp; j < last; j += kWarps) {
          float kr[kPerLane], vr[kPerLane];
          detail::loadRotatedHeadRow<kHeadDim>(
              k + j * pitch.k + kvOffset, detail::ropeRow(rope, j, kHeadDim),
              lane, kr);
          detail::loadHeadRow<kHeadDim>(v + j * pitch.v + kvOffset, lane, vr);
          float partial = 0.0f;
#pragma unroll
          for (int e = 0; e < kPerLane; ++e)
            partial += qr[e] * kr[e];
          const float score = scale * warpSum(partial);
          if (score > max) {
            const float rescale = expf(max - score);
            sum = sum * rescale + 1.0f;
#pragma unroll
            for (int e = 0; e < kPerLane; ++e)
              acc[e] = acc[e] * rescale + vr[e];
            max = score;
          } else {
            const float p = expf(score - max);
            sum += p;
#pragma unroll
            for (int e = 0; e < kPerLane; ++e)
              acc[e] += p * vr[e];
          }
        }

        if (lane == 0) {
          warpMaxes[warp] = max;
          warpSums[warp] = sum;
        }
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          if (kHeadDim % 32 == 0 || lane + 32 * e < kHeadDim)
            warpAcc[warp][lane + 32 * e] = acc[e];
        __syncthreads();
        float rowMax = negativeInfinity();
#pragma unroll
        for (int w = 0; w < kWarps; ++w)
          rowMax = fmaxf(rowMax, warpMaxes[w]);
        float weights[kWarps], denominator = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
          weights[w] = warpSums[w] > 0.0f ? expf(warpMaxes[w] - rowMax) : 0.0f;
          denominator += warpSums[w] * weights[w];
        }
        T *outRow = out + t * qStride + h * kHeadDim;
        for (int d = threadIdx.x; d < kHeadDim; d += kThreads) {
          float o = 0.0f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w)
            o += warpAcc[w][d] * weights[w];
          outRow[d] = fromFloat<T>(denominator > 0.0f ? o / denominator : 0.0f);
        }
        if (threadIdx.x == 0)
          lse[detail::headRowIndex(t, h, seq, heads)] =
              denominator > 0.0f ? rowMax + logf(denominator)
                                 : negativeInfinity();
        __syncthreads(); // the shared partials are free again
      }
}

/// delta[b, h, i] = sum over d of dout * out: the row term of the softmax
/// gradient. Warp per (token, head) row: the warps of the whole grid, in
/// any shape (1-D, or (seq, heads, batch) with 32 threads: a warp per row),
/// stride over the batch * seq * heads rows in (token, head) order. With
/// dqAccum (the FP32 dq accumulator of flashAttentionBackward, laid out as
/// dout) the same warps zero its rows.
template <typename T, int kThreads>
__device__ __forceinline__ void
attentionBackwardPreprocess(const T *dout, const T *out, float *delta,
                            int batch, int seq, int heads, int headDim,
                            float *dqAccum = nullptr) {
  static_assert(kThreads % 32 == 0 && kThreads >= 32 && kThreads <= 1024,
                "kThreads must be a multiple of 32 in [32, 1024]");
  constexpr int kWarps = kThreads / 32;
  const long long rows = static_cast<long long>(batch) * seq * heads;
  const long long block =
      blockIdx.x +
      static_cast<long long>(gridDim.x) *
          (blockIdx.y + static_cast<long long>(gridDim.y) * blockIdx.z);
  const long long blocks =
      static_cast<long long>(gridDim.x) * gridDim.y * gridDim.z;
  const int lane = threadIdx.x % 32;
  for (long long row = block * kWarps + threadIdx.x / 32; row < rows;
       row += blocks * kWarps) {
    const T *doutRow = dout + row * headDim;
    const T *outRow = out + row * headDim;
    float partial = 0.0f;
    for (int d = lane; d < headDim; d += 32)
      partial += toFloat(doutRow[d]) * toFloat(outRow[d]);
    if (dqAccum)
      for (int d = lane; d < headDim; d += 32)
        dqAccum[row * headDim + d] = 0.0f;
    const float total = warpSum(partial);
    if (lane == 0)
      delta[detail::headRowIndex(row / heads, static_cast<int>(row % heads),
                                 seq, heads)] = total;
  }
}

/// dq of attention: for the visible keys j, with P = exp(scale q.k_j - lse)
/// and dS = P (dout.v_j - delta), dq = scale * sum_j dS k_j. Grid
/// (seq, heads, batch): a block per query row and head, warps taking the
/// keys in turn, combined in warp order. Rows with lse = -inf (no visible
/// key) get dq = 0.
template <typename T, int kHeadDim, int kThreads>
__device__ __forceinline__ void attentionBackwardQuery(
    const T *dout, const T *q, const T *k, const T *v, const float *lse,
    const float *delta, T *dq, int batch, int seq, int heads, int kvHeads,
    float scale, bool causal, const int *cuSeqlens, int numCuSeqlens,
    AttentionPitches pitches = {}, const float *rope = nullptr) {
  static_assert(detail::AttentionShapeCheck<kHeadDim, kThreads>::ok);
  constexpr int kWarps = kThreads / 32;
  constexpr int kPerLane = (kHeadDim + 31) / 32;
  static_assert(kWarps * kHeadDim * 4 <= 48 * 1024,
                "attentionBackwardQuery: shared memory over 48 KiB");
  __shared__ float warpAcc[kWarps][kHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const AttentionPitches pitch = pitches.resolve(heads, kvHeads, kHeadDim);

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int h = blockIdx.y; h < heads; h += gridDim.y)
      for (int i = blockIdx.x; i < seq; i += gridDim.x) {
        const long long t = static_cast<long long>(b) * seq + i;
        const long long kvOffset = static_cast<long long>(h / group) * kHeadDim;
        long long begin, last;
        detail::visibleKeys(t, batch, seq, causal, cuSeqlens, numCuSeqlens,
                            begin, last);
        const long long rowIndex = detail::headRowIndex(t, h, seq, heads);
        const float rowLse = lse[rowIndex], rowDelta = delta[rowIndex];
        const long long headOffset = static_cast<long long>(h) * kHeadDim;

        float qr[kPerLane], dor[kPerLane], acc[kPerLane];
        detail::loadRotatedHeadRow<kHeadDim>(q + t * pitch.q + headOffset,
                                             detail::ropeRow(rope, t, kHeadDim),
                                             lane, qr);
        detail::loadHeadRow<kHeadDim>(dout + t * qStride + headOffset, lane,
                                      dor);
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          acc[e] = 0.0f;
        if (rowLse > negativeInfinity()) {
          for (long long j = begin + warp; j < last; j += kWarps) {
            float kr[kPerLane], vr[kPerLane];
            detail::loadRotatedHeadRow<kHeadDim>(
                k + j * pitch.k + kvOffset, detail::ropeRow(rope, j, kHeadDim),
                lane, kr);
            detail::loadHeadRow<kHeadDim>(v + j * pitch.v + kvOffset, lane, vr);
            float qk = 0.0f, dp = 0.0f;
#pragma unroll
            for (int e = 0; e < kPerLane; ++e) {
              qk += qr[e] * kr[e];
              dp += dor[e] * vr[e];
            }
            qk = warpSum(qk);
            dp = warpSum(dp);
            const float p = expf(scale * qk - rowLse);
            const float ds = p * (dp - rowDelta);
#pragma unroll
            for (int e = 0; e < kPerLane; ++e)
              acc[e] += ds * kr[e];
          }
        }
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          if (kHeadDim % 32 == 0 || lane + 32 * e < kHeadDim)
            warpAcc[warp][lane + 32 * e] = acc[e];
        __syncthreads();
        // With a rope table: the gradient of the unrotated q.
        const float *tableRow = detail::ropeRow(rope, t, kHeadDim);
        for (int d = threadIdx.x; d < kHeadDim; d += kThreads)
          dq[t * pitch.dq + headOffset + d] =
              fromFloat<T>(detail::scaledGradient(warpAcc, d, scale, tableRow));
        __syncthreads();
      }
}

/// dk and dv of attention for one key row j and kv head: over the query
/// heads h of the group and the queries t that see j, with P and dS as in
/// attentionBackwardQuery, dk = scale * sum dS q_t and dv = sum P dout_t.
/// Grid (seq, kvHeads, batch): a block per key row and kv head, so each
/// element of dk and dv has one writer; warps take the (head, query) pairs
/// in turn, combined in warp order.
template <typename T, int kHeadDim, int kThreads>
__device__ __forceinline__ void
attentionBackwardKeyValue(const T *dout, const T *q, const T *k, const T *v,
                          const float *lse, const float *delta, T *dk, T *dv,
                          int batch, int seq, int heads, int kvHeads,
                          float scale, bool causal, const int *cuSeqlens,
                          int numCuSeqlens, AttentionPitches pitches = {},
                          const float *rope = nullptr) {
  static_assert(detail::AttentionShapeCheck<kHeadDim, kThreads>::ok);
  constexpr int kWarps = kThreads / 32;
  constexpr int kPerLane = (kHeadDim + 31) / 32;
  static_assert(2 * kWarps * kHeadDim * 4 <= 48 * 1024,
                "attentionBackwardKeyValue: shared memory over 48 KiB");
  __shared__ float warpDk[kWarps][kHeadDim], warpDv[kWarps][kHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const AttentionPitches pitch = pitches.resolve(heads, kvHeads, kHeadDim);

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int kvh = blockIdx.y; kvh < kvHeads; kvh += gridDim.y)
      for (int i = blockIdx.x; i < seq; i += gridDim.x) {
        const long long j = static_cast<long long>(b) * seq + i;
        const long long kvOffset = static_cast<long long>(kvh) * kHeadDim;
        long long begin, end;
        detail::documentOf(j, batch, seq, cuSeqlens, numCuSeqlens, begin, end);
        // The queries that see key j: [causal ? j : begin, end), or none
        // when j lies in no document.
        const long long first = causal ? j : begin;
        const long long count = begin <= j && j < end ? end - first : 0;

        float kr[kPerLane], vr[kPerLane], dkAcc[kPerLane], dvAcc[kPerLane];
        detail::loadRotatedHeadRow<kHeadDim>(k + j * pitch.k + kvOffset,
                                             detail::ropeRow(rope, j, kHeadDim),
                                             lane, kr);
        detail::loadHeadRow<kHeadDim>(v + j * pitch.v + kvOffset, lane, vr);
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          dkAcc[e] = dvAcc[e] = 0.0f;
        for (long long item = warp; item < group * count; item += kWarps) {
          const int h = kvh * group + static_cast<int>(item / count);
          const long long t = first + item % count;
          const long long rowIndex = detail::headRowIndex(t, h, seq, heads);
          const float rowLse = lse[rowIndex];
          if (!(rowLse > negativeInfinity()))
            continue;
          const float rowDelta = delta[rowIndex];
          const long long headOffset = static_cast<long long>(h) * kHeadDim;
          float qr[kPerLane], dor[kPerLane];
          detail::loadRotatedHeadRow<kHeadDim>(
              q + t * pitch.q + headOffset, detail::ropeRow(rope, t, kHeadDim),
              lane, qr);
          detail::loadHeadRow<kHeadDim>(dout + t * qStride + headOffset, lane,
                                        dor);
          float qk = 0.0f, dp = 0.0f;
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) {
            qk += qr[e] * kr[e];
            dp += dor[e] * vr[e];
          }
          qk = warpSum(qk);
          dp = warpSum(dp);
          const float p = expf(scale * qk - rowLse);
          const float ds = p * (dp - rowDelta);
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) {
            dkAcc[e] += ds * qr[e];
            dvAcc[e] += p * dor[e];
          }
        }
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          if (kHeadDim % 32 == 0 || lane + 32 * e < kHeadDim) {
            warpDk[warp][lane + 32 * e] = dkAcc[e];
            warpDv[warp][lane + 32 * e] = dvAcc[e];
          }
        __syncthreads();
        // With a rope table: the gradient of the unrotated k.
        const float *tableRow = detail::ropeRow(rope, j, kHeadDim);
        for (int d = threadIdx.x; d < kHeadDim; d += kThreads) {
          float dvTotal = 0.0f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w)
            dvTotal += warpDv[w][d];
          dk[j * pitch.dk + kvOffset + d] =
              fromFloat<T>(detail::scaledGradient(warpDk, d, scale, tableRow));
          dv[j * pitch.dv + kvOffset + d] = fromFloat<T>(dvTotal);
        }
        __syncthreads();
      }
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_ATTENTION_CUH
