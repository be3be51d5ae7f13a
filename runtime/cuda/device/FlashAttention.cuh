//===- FlashAttention.cuh - FlashAttention-2 on tensor cores ---*- CUDA -*-===//
//
// FlashAttention-2 (Dao 2023) on mma.sync.m16n8k16 (BF16 operands, FP32
// accumulators), the kernels tile.flash_attention_fwd/bwd lower to when
// storage is bf16. Same layouts, masking and results as the exact kernels
// above (q, out [batch, seq, heads * headDim]; k, v [batch, seq, kvHeads *
// headDim]; lse, delta [batch, heads, seq]; documents from cuSeqlens), to
// BF16 rounding of the probabilities and dS fed to the tensor cores.
//
//   - Forward: a block owns kBlockQ query rows of one head, a warp 16 of
//     them. Q sits in registers as MMA fragments; K and V tiles of kBlockK
//     keys stream through shared memory with cp.async, kStages deep; each
//     tile is S = Q K^T on the tensor cores, an online softmax in the
//     exponent base 2 (scale * log2 e folded in), then O += P V with P
//     taken straight from the S accumulators. Only the keys some row of the
//     block sees are visited (causal and document tiles are skipped), and
//     a tile every row fully sees skips the masking arithmetic. Causal
//     blocks start with the longest rows.
//   - Backward: a block owns kBlockK keys of one kv head, a warp 16 of
//     them, and loops over the query heads of its GQA group and the query
//     tiles that can see its keys: S^T = K Q^T and dP^T = V dO^T, P^T from
//     the forward's lse, dS^T = P^T (dP^T - delta), then dV += P^T dO and
//     dK += dS^T Q in registers; dS goes through shared memory for
//     dQ += dS K, added with FP32 atomics to a zeroed accumulator
//     (attentionBackwardPreprocess zeroes it, flashAttentionFinishDq scales
//     and rounds it). dq's FP32 sums therefore depend on the order blocks
//     finish: the one result of the device library that is not bit-for-bit
//     reproducible run to run (as in FlashAttention-2).
//
// Shared tiles are rows of kWidth bf16 in 16-byte chunks, chunk c of row r
// stored at c ^ f(r) (swizzle below), so the eight row addresses of an
// ldmatrix fall in eight different bank groups. Head dims and block sizes:
// 16, 32, 64 or 128 (multiples of the 16x16 MMA tile the swizzle can
// permute); more would not fit a thread's registers. Dynamic shared memory
// of flashForwardSharedBytes / flashBackwardSharedBytes bytes.

//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_FLASH_ATTENTION_CUH
#define KILN_RUNTIME_CUDA_DEVICE_FLASH_ATTENTION_CUH

#include "Attention.cuh"
#include "Common.cuh"

namespace kiln::dev {

namespace detail {

#ifndef KILN_DEVICE_EMULATION
// The warp-level instructions. Under the CPU emulation
// (test/Runtime/cuda/device/DeviceEmulation.h) the emulator defines
// functions of the same names and semantics instead.

__device__ __forceinline__ unsigned sharedAddress(const void *p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// d += a * b for one m16n8k16 tile: a 16x16 (row-major fragments), b 16x8
/// (column-major), d 16x8 FP32, in the PTX ISA's fragment layouts.
__device__ __forceinline__ void mmaBf16(float (&d)[4], const unsigned (&a)[4],
                                        unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i;
/// r[i] receives row lane / 4, columns 2 (lane % 4) and 2 (lane % 4) + 1.
__device__ __forceinline__ void loadMatrixX4(unsigned (&r)[4],
                                             const void *row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 "
               "{%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(row)));
}

/// ldmatrix .x4 .trans: as loadMatrixX4 of the transposed matrices.
__device__ __forceinline__ void loadMatrixX4Trans(unsigned (&r)[4],
                                                  const void *row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 "
               "{%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(row)));
}

/// Starts copying 16 bytes from global `src` to shared `dst`, or zeroes
/// `dst` when !valid (src is then not read).
__device__ __forceinline__ void copyAsync16(void *dst, const void *src,
                                            bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :
               : "r"(sharedAddress(dst)), "l"(src), "r"(valid ? 16 : 0));
}

/// Closes the group of copies started since the last commit.
__device__ __forceinline__ void copyAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::);
}

/// Waits until at most kPending committed groups are still in flight.
template <int kPending> __device__ __forceinline__ void copyAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

/// Stops the kernel with an error (cudaErrorIllegalInstruction).
__device__ __forceinline__ void trap() { __trap(); }
#endif // KILN_DEVICE_EMULATION

/// Whether kWidth bf16 make rows the swizzle can permute.
template <int kWidth>
constexpr bool isFlashWidth =
    kWidth == 16 || kWidth == 32 || kWidth == 64 || kWidth == 128;

/// Element offset of (row, col) in a swizzled shared tile of rows of kWidth
/// bf16: 16-byte chunk c of row r is stored at chunk c ^ ((r / k) % n), with
/// k rows sharing one 128-byte line and n = min(8, chunks per row), so that
/// 8 consecutive rows at one chunk use 8 distinct bank groups.
template <int kWidth> __device__ __forceinline__ int swizzle(int row, int col) {
  static_assert(isFlashWidth<kWidth>, "unsupported tile width");
  constexpr int kChunks = kWidth / 8;
  constexpr int kRowsPerLine = kChunks >= 8 ? 1 : 8 / kChunks;
  constexpr int kPattern = kChunks >= 8 ? 8 : kChunks;
  const int chunk = (col / 8) ^ ((row / kRowsPerLine) % kPattern);
  return row * kWidth + chunk * 8 + col % 8;
}

/// Starts copying rows [first, first + kRows) of a row-major bf16 matrix
/// (row stride `stride` elements) into a swizzled tile; rows outside
/// [lo, hi) become zeros. The block's kThreads threads share the chunks.
template <int kRows, int kWidth, int kThreads>
__device__ __forceinline__ void
loadTileAsync(__nv_bfloat16 *tile, const __nv_bfloat16 *src, long long stride,
              long long first, long long lo, long long hi) {
  constexpr int kChunks = kWidth / 8;
  for (int i = threadIdx.x; i < kRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const long long row = first + r;
    const bool valid = row >= lo && row < hi;
    copyAsync16(tile + swizzle<kWidth>(r, c * 8),
                valid ? src + row * stride + c * 8 : src, valid);
  }
}

/// Starts loading the K and V tiles of keys [first, first + kBlockK);
/// keys outside [lo, hi) become zeros.
template <int kBlockK, int kHeadDim, int kThreads>
__device__ __forceinline__ void
loadKeyValueTiles(__nv_bfloat16 *kTile, __nv_bfloat16 *vTile,
                  const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                  long long kStride, long long vStride, long long first,
                  long long lo, long long hi) {
  loadTileAsync<kBlockK, kHeadDim, kThreads>(kTile, k, kStride, first, lo, hi);
  loadTileAsync<kBlockK, kHeadDim, kThreads>(vTile, v, vStride, first, lo, hi);
}

/// Rotates the rows of a swizzled tile that loadTileAsync filled from rows
/// [first, first + kRows) by their rope table rows, where they are in [lo,
/// hi) (the rest are zeros); rounded to BF16 as an unfused rope stores
/// them. One thread per pair; the caller synchronizes the block before and
/// after.
template <int kRows, int kWidth, int kThreads>
__device__ __forceinline__ void rotateTile(__nv_bfloat16 *tile,
                                           const float *rope, long long first,
                                           long long lo, long long hi) {
  constexpr int kHalf = kWidth / 2;
  // Not unrolled: the kernels around it hold their accumulators in
  // registers.
#pragma unroll 1
  for (int i = threadIdx.x; i < kRows * kHalf; i += kThreads) {
    const int r = i / kHalf, c = i % kHalf;
    const long long row = first + r;
    if (row < lo || row >= hi)
      continue;
    __nv_bfloat16 &a = tile[swizzle<kWidth>(r, c)];
    __nv_bfloat16 &b = tile[swizzle<kWidth>(r, c + kHalf)];
    float low = toFloat(a), high = toFloat(b);
    rotatePairByTable(low, high, rope + row * kWidth, c, kHalf, false);
    a = fromFloat<__nv_bfloat16>(low);
    b = fromFloat<__nv_bfloat16>(high);
  }
}

/// MMA fragments from swizzled tiles of rows of kWidth bf16. Each lane's
/// ldmatrix row address is its offset for the tile's first 16x16 block,
/// computed once: for a block at (row0, col0), multiples of 16, the swizzle
/// pattern is the same and the column moves by XOR, so the offset is
/// row0 * kWidth + (laneOffset ^ col0).
template <int kWidth> struct Fragments {
  int aOffset, bOffset, bTransOffset;

  __device__ __forceinline__ Fragments() {
    const int lane = threadIdx.x % 32;
    aOffset = swizzle<kWidth>(lane % 16, 8 * (lane / 16));
    bOffset = swizzle<kWidth>(lane % 8 + 8 * (lane / 16), 8 * ((lane / 8) % 2));
    bTransOffset =
        swizzle<kWidth>(lane % 8 + 8 * ((lane / 8) % 2), 8 * (lane / 16));
  }

  /// The A fragment of rows [row0, row0 + 16) x columns [col0, col0 + 16).
  __device__ __forceinline__ void
  loadA(unsigned (&a)[4], const __nv_bfloat16 *tile, int row0, int col0) const {
    loadMatrixX4(a, tile + row0 * kWidth + (aOffset ^ col0));
  }

  /// The B fragments (k [k0, k0 + 16)) of the n-tiles n0 (b[0], b[1]) and
  /// n0 + 8 (b[2], b[3]) of a tile that stores B transposed: row n, column
  /// k.
  __device__ __forceinline__ void
  loadBPair(unsigned (&b)[4], const __nv_bfloat16 *tile, int n0, int k0) const {
    loadMatrixX4(b, tile + n0 * kWidth + (bOffset ^ k0));
  }

  /// As loadBPair for a tile that stores B itself: row k, column n.
  __device__ __forceinline__ void loadBPairTrans(unsigned (&b)[4],
                                                 const __nv_bfloat16 *tile,
                                                 int k0, int n0) const {
    loadMatrixX4Trans(b, tile + k0 * kWidth + (bTransOffset ^ n0));
  }
};

/// Two floats rounded to bf16 (nearest-even) in one register, lo first.
__device__ __forceinline__ unsigned packBf16(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return static_cast<unsigned>(__bfloat16_as_ushort(pair.x)) |
         static_cast<unsigned>(__bfloat16_as_ushort(pair.y)) << 16;
}

/// The A fragment of k columns [16 kk, 16 kk + 16) from the accumulators of
/// n-tiles 2 kk (c0) and 2 kk + 1 (c1): a product feeds the next MMA
/// without leaving registers.
__device__ __forceinline__ void
accumulatorsAsA(unsigned (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = packBf16(c0[0], c0[1]);
  a[1] = packBf16(c0[2], c0[3]);
  a[2] = packBf16(c1[0], c1[1]);
  a[3] = packBf16(c1[2], c1[3]);
}

/// x clamped to [0, size]: a key offset from a tile's first key.
__device__ __forceinline__ int clampToTile(long long x, int size) {
  return x < 0 ? 0 : x > size ? size : static_cast<int>(x);
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

} // namespace detail

/// Dynamic shared memory of flashAttentionForward: the Q tile and kStages
/// K and V tiles.
__host__ __device__ constexpr int
flashForwardSharedBytes(int headDim, int blockQ, int blockK, int stages) {
  return (blockQ + 2 * stages * blockK) * headDim * 2;
}

/// Dynamic shared memory of flashAttentionBackward: K, V, Q, dO and dS
/// tiles, then per query row lse, delta (FP32) and the block's keys it sees.
__host__ __device__ constexpr int
flashBackwardSharedBytes(int headDim, int blockQ, int blockK) {
  return (2 * blockK * headDim + 2 * blockQ * headDim + blockQ * blockK) * 2 +
         blockQ * (4 + 4 + 4 + 4);
}

/// Attention forward on tensor cores: out and lse as attentionForward.
/// Launch (ceil(seq / kBlockQ), heads, batch) blocks (any smaller grid is
/// also correct) of kBlockQ / 16 warps with flashForwardSharedBytes bytes of
/// dynamic shared memory. Pointers 16-byte aligned.
template <int kHeadDim, int kBlockQ, int kBlockK, int kStages>
__device__ __forceinline__ void flashAttentionForward(
    const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
    __nv_bfloat16 *out, float *lse, int batch, int seq, int heads, int kvHeads,
    float scale, bool causal, const int *cuSeqlens, int numCuSeqlens,
    AttentionPitches pitches = {}, const float *rope = nullptr) {
  using bf16 = __nv_bfloat16;
  static_assert(detail::isFlashWidth<kHeadDim>, "head dim: 16/32/64/128");
  static_assert(kBlockQ % 16 == 0 && kBlockQ >= 16 && kBlockQ <= 128,
                "kBlockQ: a multiple of 16 up to 128 (16 rows per warp)");
  static_assert(kBlockK % 16 == 0 && kBlockK >= 16 && kBlockK <= 128,
                "kBlockK: a multiple of 16 up to 128");
  static_assert(kStages == 1 || kStages == 2, "kStages: 1 or 2");
  constexpr int kThreads = kBlockQ / 16 * 32;
  constexpr int kTileK = kBlockK * kHeadDim;

  // A launch with less shared memory would corrupt memory: stop instead.
  if (detail::dynamicSharedBytes() <
      static_cast<unsigned>(
          flashForwardSharedBytes(kHeadDim, kBlockQ, kBlockK, kStages)))
    detail::trap();
  bf16 *qTile = reinterpret_cast<bf16 *>(detail::dynamicSharedMemory());
  bf16 *kTiles = qTile + kBlockQ * kHeadDim;
  bf16 *vTiles = kTiles + kStages * kTileK;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int quadRow = lane / 4, quadCol = lane % 4;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const AttentionPitches pitch = pitches.resolve(heads, kvHeads, kHeadDim);
  const float scaleLog2 = scale * detail::kLog2e;
  const int qTiles = (seq + kBlockQ - 1) / kBlockQ;
  const detail::Fragments<kHeadDim> headTiles;

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int h = blockIdx.y; h < heads; h += gridDim.y)
      for (int x = blockIdx.x; x < qTiles; x += gridDim.x) {
        const int tile = causal ? qTiles - 1 - x : x;
        const long long rowBase = static_cast<long long>(b) * seq;
        const long long t0 = rowBase + static_cast<long long>(tile) * kBlockQ;
        const long long tEnd =
            t0 + kBlockQ < rowBase + seq ? t0 + kBlockQ : rowBase + seq;
        const bf16 *qHead = q + static_cast<long long>(h) * kHeadDim;
        const long long kvOffset = static_cast<long long>(h / group) * kHeadDim;

        // This lane's rows (quadRow and quadRow + 8 of its warp's 16) and
        // the keys any row of the block sees: the documents' begins and
        // ends grow with the token, so the first and last rows bound them.
        // Rows past the sequence see no key.
        long long row[2], begin[2] = {0, 0}, last[2] = {0, 0};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          row[r] = t0 + warp * 16 + quadRow + 8 * r;
          if (row[r] < tEnd)
            detail::visibleKeys(row[r], batch, seq, causal, cuSeqlens,
                                numCuSeqlens, begin[r], last[r]);
        }
        long long kLo, unused, kHi, lastBegin;
        detail::visibleKeys(t0, batch, seq, causal, cuSeqlens, numCuSeqlens,
                            kLo, unused);
        detail::visibleKeys(tEnd - 1, batch, seq, causal, cuSeqlens,
                            numCuSeqlens, lastBegin, kHi);
        if (kHi < kLo)
          kHi = kLo;
        const int keyTiles =
            static_cast<int>((kHi - kLo + kBlockK - 1) / kBlockK);

        detail::loadTileAsync<kBlockQ, kHeadDim, kThreads>(
            qTile, qHead, pitch.q, t0, t0, tEnd);
        if (keyTiles > 0)
          detail::loadKeyValueTiles<kBlockK, kHeadDim, kThreads>(
              kTiles, vTiles, k + kvOffset, v + kvOffset, pitch.k, pitch.v, kLo,
              kLo, kHi);
        detail::copyAsyncCommit();
        detail::copyAsyncWait<0>();
        __syncthreads();
        if (rope) { // the first K tile is rotated in the loop
          detail::rotateTile<kBlockQ, kHeadDim, kThreads>(qTile, rope, t0, t0,
                                                          tEnd);
          __syncthreads();
        }

        unsigned qFrag[kHeadDim / 16][4];
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk)
          headTiles.loadA(qFrag[kk], qTile, warp * 16, kk * 16);
        float o[kHeadDim / 8][4] = {};
        float rowMax[2] = {negativeInfinity(), negativeInfinity()};
        float rowSum[2] = {0.0f, 0.0f};

        for (int it = 0; it < keyTiles; ++it) {
          const long long j0 = kLo + static_cast<long long>(it) * kBlockK;
          if constexpr (kStages > 1) {
            if (it + 1 < keyTiles)
              detail::loadKeyValueTiles<kBlockK, kHeadDim, kThreads>(
                  kTiles + (it + 1) % kStages * kTileK,
                  vTiles + (it + 1) % kStages * kTileK, k + kvOffset,
                  v + kvOffset, pitch.k, pitch.v, j0 + kBlockK, kLo, kHi);
            detail::copyAsyncCommit();
            detail::copyAsyncWait<1>();
          } else if (it > 0) {
            detail::loadKeyValueTiles<kBlockK, kHeadDim, kThreads>(
                kTiles, vTiles, k + kvOffset, v + kvOffset, pitch.k, pitch.v,
                j0, kLo, kHi);
            detail::copyAsyncCommit();
            detail::copyAsyncWait<0>();
          }
          __syncthreads();
          if (rope) {
            detail::rotateTile<kBlockK, kHeadDim, kThreads>(
                kTiles + (it % kStages) * kTileK, rope, j0, kLo, kHi);
            __syncthreads();
          }
          const bf16 *kTile = kTiles + (it % kStages) * kTileK;
          const bf16 *vTile = vTiles + (it % kStages) * kTileK;

          // S = Q K^T for this warp's 16 rows and the tile's keys.
          float s[kBlockK / 8][4] = {};
#pragma unroll
          for (int kk = 0; kk < kHeadDim / 16; ++kk)
#pragma unroll
            for (int np = 0; np < kBlockK / 16; ++np) {
              unsigned bFrag[4];
              headTiles.loadBPair(bFrag, kTile, np * 16, kk * 16);
              detail::mmaBf16(s[2 * np], qFrag[kk], bFrag[0], bFrag[1]);
              detail::mmaBf16(s[2 * np + 1], qFrag[kk], bFrag[2], bFrag[3]);
            }

          // Online softmax in base 2; masked scores are -inf. A row that
          // has seen no key keeps max -inf and exponentiates against 0.
          int lo[2], hi[2]; // this tile's visible columns of each row
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            lo[r] = detail::clampToTile(begin[r] - j0, kBlockK);
            hi[r] = detail::clampToTile(last[r] - j0, kBlockK);
          }
          const bool seesAll =
              (lo[0] | lo[1]) == 0 && (hi[0] & hi[1]) == kBlockK;
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            float tileMax = negativeInfinity();
#pragma unroll
            for (int n = 0; n < kBlockK / 8; ++n)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int j = n * 8 + 2 * quadCol + e;
                float &x = s[n][2 * r + e];
                x = seesAll || (j >= lo[r] && j < hi[r]) ? x * scaleLog2
                                                         : negativeInfinity();
                tileMax = fmaxf(tileMax, x);
              }
            // The 4 lanes (lane % 4) holding a row share its maximum.
            const float newMax =
                fmaxf(rowMax[r], laneReduce<4>(tileMax, Max{}));
            const float base = newMax == negativeInfinity() ? 0.0f : newMax;
            const float rescale = exp2f(rowMax[r] - base);
            rowMax[r] = newMax;
            float sum = 0.0f;
#pragma unroll
            for (int n = 0; n < kBlockK / 8; ++n)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                float &x = s[n][2 * r + e];
                x = exp2f(x - base);
                sum += x;
              }
            rowSum[r] = rowSum[r] * rescale + sum;
#pragma unroll
            for (int n = 0; n < kHeadDim / 8; ++n) {
              o[n][2 * r] *= rescale;
              o[n][2 * r + 1] *= rescale;
            }
          }

          // O += P V, P from the S accumulators.
#pragma unroll
          for (int kk = 0; kk < kBlockK / 16; ++kk) {
            unsigned pFrag[4];
            detail::accumulatorsAsA(pFrag, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
            for (int np = 0; np < kHeadDim / 16; ++np) {
              unsigned bFrag[4];
              headTiles.loadBPairTrans(bFrag, vTile, kk * 16, np * 16);
              detail::mmaBf16(o[2 * np], pFrag, bFrag[0], bFrag[1]);
              detail::mmaBf16(o[2 * np + 1], pFrag, bFrag[2], bFrag[3]);
            }
          }
          __syncthreads(); // the stage is free for the next load
        }

#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float sum = laneReduce<4>(rowSum[r], Sum{});
          if (row[r] >= tEnd)
            continue;
          const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
          bf16 *outRow = out + row[r] * qStride + h * kHeadDim;
#pragma unroll
          for (int n = 0; n < kHeadDim / 8; ++n)
            *reinterpret_cast<__nv_bfloat162 *>(outRow + n * 8 + 2 * quadCol) =
                __floats2bfloat162_rn(o[n][2 * r] * inverse,
                                      o[n][2 * r + 1] * inverse);
          if (quadCol == 0)
            lse[detail::headRowIndex(row[r], h, seq, heads)] =
                sum > 0.0f ? rowMax[r] * detail::kLn2 + logf(sum)
                           : negativeInfinity();
        }
        __syncthreads(); // the Q tile is free for the next block's rows
      }
}

/// Attention backward on tensor cores: dk and dv as
/// attentionBackwardKeyValue, and dq (unscaled) added to dqAccum, which
/// attentionBackwardPreprocess zeroed and flashAttentionFinishDq turns into
/// dq. Launch (ceil(seq / kBlockK), kvHeads, batch) blocks (any smaller grid
/// is also correct) of kBlockK / 16 warps with flashBackwardSharedBytes
/// bytes of dynamic shared memory. Pointers 16-byte aligned.
template <int kHeadDim, int kBlockQ, int kBlockK>
__device__ __forceinline__ void flashAttentionBackward(
    const __nv_bfloat16 *dout, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
    const __nv_bfloat16 *v, const float *lse, const float *delta,
    float *dqAccum, __nv_bfloat16 *dk, __nv_bfloat16 *dv, int batch, int seq,
    int heads, int kvHeads, float scale, bool causal, const int *cuSeqlens,
    int numCuSeqlens, AttentionPitches pitches = {},
    const float *rope = nullptr) {
  using bf16 = __nv_bfloat16;
  static_assert(detail::isFlashWidth<kHeadDim>, "head dim: 16/32/64/128");
  static_assert(detail::isFlashWidth<kBlockK>,
                "kBlockK: 16, 32, 64 or 128 (16 keys per warp)");
  static_assert(kBlockQ % 16 == 0 && kBlockQ >= 16 && kBlockQ <= 128,
                "kBlockQ: a multiple of 16 up to 128");
  constexpr int kWarps = kBlockK / 16, kThreads = kWarps * 32;

  if (detail::dynamicSharedBytes() <
      static_cast<unsigned>(
          flashBackwardSharedBytes(kHeadDim, kBlockQ, kBlockK)))
    detail::trap();
  bf16 *kTile = reinterpret_cast<bf16 *>(detail::dynamicSharedMemory());
  bf16 *vTile = kTile + kBlockK * kHeadDim;
  bf16 *qTile = vTile + kBlockK * kHeadDim;
  bf16 *doTile = qTile + kBlockQ * kHeadDim;
  bf16 *dsTile = doTile + kBlockQ * kHeadDim;
  float *lseTile = reinterpret_cast<float *>(dsTile + kBlockQ * kBlockK);
  float *deltaTile = lseTile + kBlockQ;
  int *loTile = reinterpret_cast<int *>(deltaTile + kBlockQ);
  int *hiTile = loTile + kBlockQ;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int quadRow = lane / 4, quadCol = lane % 4;
  const int group = heads / kvHeads;
  const long long qStride = static_cast<long long>(heads) * kHeadDim;
  const AttentionPitches pitch = pitches.resolve(heads, kvHeads, kHeadDim);
  const float scaleLog2 = scale * detail::kLog2e;
  const int keyTiles = (seq + kBlockK - 1) / kBlockK;
  const detail::Fragments<kHeadDim> headTiles;
  const detail::Fragments<kBlockK> dsTiles;

  for (int b = blockIdx.z; b < batch; b += gridDim.z)
    for (int kvh = blockIdx.y; kvh < kvHeads; kvh += gridDim.y)
      for (int x = blockIdx.x; x < keyTiles; x += gridDim.x) {
        const long long rowBase = static_cast<long long>(b) * seq;
        const long long j0 = rowBase + static_cast<long long>(x) * kBlockK;
        const long long jEnd =
            j0 + kBlockK < rowBase + seq ? j0 + kBlockK : rowBase + seq;
        const long long kvOffset = static_cast<long long>(kvh) * kHeadDim;
        // The queries that see some key of the block: from the first key
        // (causal) or its document's start, to the last key's document end.
        long long firstBegin, firstEnd, lastBegin, lastEnd;
        detail::documentOf(j0, batch, seq, cuSeqlens, numCuSeqlens, firstBegin,
                           firstEnd);
        detail::documentOf(jEnd - 1, batch, seq, cuSeqlens, numCuSeqlens,
                           lastBegin, lastEnd);
        const long long qLo = causal ? j0 : firstBegin;
        const long long qHi = lastEnd > qLo ? lastEnd : qLo;
        // This lane's keys: rows quadRow and quadRow + 8 of its warp's 16.
        const int keyCol[2] = {warp * 16 + quadRow, warp * 16 + quadRow + 8};

        detail::loadKeyValueTiles<kBlockK, kHeadDim, kThreads>(
            kTile, vTile, k + kvOffset, v + kvOffset, pitch.k, pitch.v, j0, j0,
            jEnd);
        detail::copyAsyncCommit();
        if (rope) { // K rotated once, before any query tile reads it
          detail::copyAsyncWait<0>();
          __syncthreads();
          detail::rotateTile<kBlockK, kHeadDim, kThreads>(kTile, rope, j0, j0,
                                                          jEnd);
        }

        float dkAcc[kHeadDim / 8][4] = {}, dvAcc[kHeadDim / 8][4] = {};

        for (int hh = 0; hh < group; ++hh) {
          const int h = kvh * group + hh;
          const long long qOffset = static_cast<long long>(h) * kHeadDim;
          for (long long qt = qLo; qt < qHi; qt += kBlockQ) {
            detail::loadTileAsync<kBlockQ, kHeadDim, kThreads>(
                qTile, q + qOffset, pitch.q, qt, qt, qHi);
            detail::loadTileAsync<kBlockQ, kHeadDim, kThreads>(
                doTile, dout + qOffset, qStride, qt, qt, qHi);
            detail::copyAsyncCommit();
            for (int i = threadIdx.x; i < kBlockQ; i += kThreads) {
              const long long t = qt + i;
              long long visibleBegin = 0, visibleLast = 0;
              float rowLse = 0.0f, rowDelta = 0.0f;
              if (t < qHi) {
                detail::visibleKeys(t, batch, seq, causal, cuSeqlens,
                                    numCuSeqlens, visibleBegin, visibleLast);
                const long long index = detail::headRowIndex(t, h, seq, heads);
                rowLse = lse[index] * detail::kLog2e;
                rowDelta = delta[index];
              }
              // The block's keys row t sees: [lo, hi) from j0.
              loTile[i] = detail::clampToTile(visibleBegin - j0, kBlockK);
              hiTile[i] = detail::clampToTile(
                  (visibleLast < jEnd ? visibleLast : jEnd) - j0, kBlockK);
              lseTile[i] = rowLse;
              deltaTile[i] = rowDelta;
            }
            detail::copyAsyncWait<0>();
            __syncthreads();
            if (rope) {
              detail::rotateTile<kBlockQ, kHeadDim, kThreads>(qTile, rope, qt,
                                                              qt, qHi);
              __syncthreads();
            }

            // 16 queries at a time (so that S and dP take 16 registers per
            // thread whatever the query block): S^T = K Q^T and dP^T =
            // V dO^T for this warp's 16 keys, P^T (0 where masked) and dS^T
            // = P^T (dP^T - delta), then dV += P^T dO and dK += dS^T Q
            // (scaled at the end), and dS (queries x keys) to shared memory
            // for dQ, rounded as dK used it.
#pragma unroll 1
            for (int q0 = 0; q0 < kBlockQ; q0 += 16) {
              float s[2][4] = {}, dp[2][4] = {};
#pragma unroll 2
              for (int kk = 0; kk < kHeadDim / 16; ++kk) {
                unsigned kFrag[4], vFrag[4], bFrag[4];
                headTiles.loadA(kFrag, kTile, warp * 16, kk * 16);
                headTiles.loadBPair(bFrag, qTile, q0, kk * 16);
                detail::mmaBf16(s[0], kFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(s[1], kFrag, bFrag[2], bFrag[3]);
                headTiles.loadA(vFrag, vTile, warp * 16, kk * 16);
                headTiles.loadBPair(bFrag, doTile, q0, kk * 16);
                detail::mmaBf16(dp[0], vFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(dp[1], vFrag, bFrag[2], bFrag[3]);
              }
#pragma unroll
              for (int n = 0; n < 2; ++n)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                  const int c = q0 + n * 8 + 2 * quadCol + e;
#pragma unroll
                  for (int r = 0; r < 2; ++r) {
                    const bool visible =
                        keyCol[r] >= loTile[c] && keyCol[r] < hiTile[c];
                    const float p =
                        visible
                            ? exp2f(s[n][2 * r + e] * scaleLog2 - lseTile[c])
                            : 0.0f;
                    s[n][2 * r + e] = p;
                    dp[n][2 * r + e] = p * (dp[n][2 * r + e] - deltaTile[c]);
                    dsTile[detail::swizzle<kBlockK>(c, keyCol[r])] =
                        __float2bfloat16_rn(dp[n][2 * r + e]);
                  }
                }
              unsigned pFrag[4], dsFrag[4];
              detail::accumulatorsAsA(pFrag, s[0], s[1]);
              detail::accumulatorsAsA(dsFrag, dp[0], dp[1]);
#pragma unroll
              for (int np = 0; np < kHeadDim / 16; ++np) {
                unsigned bFrag[4];
                headTiles.loadBPairTrans(bFrag, doTile, q0, np * 16);
                detail::mmaBf16(dvAcc[2 * np], pFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(dvAcc[2 * np + 1], pFrag, bFrag[2], bFrag[3]);
                headTiles.loadBPairTrans(bFrag, qTile, q0, np * 16);
                detail::mmaBf16(dkAcc[2 * np], dsFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(dkAcc[2 * np + 1], dsFrag, bFrag[2], bFrag[3]);
              }
            }
            __syncthreads();

            // dQ += dS K, 16 queries x 16 dims per warp and step.
            for (int unit = warp; unit < kBlockQ / 16 * (kHeadDim / 16);
                 unit += kWarps) {
              const int rows = unit / (kHeadDim / 16) * 16;
              const int cols = unit % (kHeadDim / 16) * 16;
              float acc[2][4] = {};
#pragma unroll
              for (int kk = 0; kk < kBlockK / 16; ++kk) {
                unsigned aFrag[4], bFrag[4];
                dsTiles.loadA(aFrag, dsTile, rows, kk * 16);
                headTiles.loadBPairTrans(bFrag, kTile, kk * 16, cols);
                detail::mmaBf16(acc[0], aFrag, bFrag[0], bFrag[1]);
                detail::mmaBf16(acc[1], aFrag, bFrag[2], bFrag[3]);
              }
#pragma unroll
              for (int r = 0; r < 2; ++r) {
                const long long t = qt + rows + quadRow + 8 * r;
                if (t >= qHi)
                  continue;
                float *dqRow = dqAccum + t * qStride + qOffset + cols;
#pragma unroll
                for (int n = 0; n < 2; ++n)
#pragma unroll
                  for (int e = 0; e < 2; ++e)
                    atomicAdd(dqRow + n * 8 + 2 * quadCol + e,
                              acc[n][2 * r + e]);
              }
            }
            __syncthreads(); // the Q, dO and dS tiles are free again
          }
        }

#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const long long key = j0 + keyCol[r];
          if (key >= jEnd)
            continue;
          bf16 *dkRow = dk + key * pitch.dk + kvOffset;
          bf16 *dvRow = dv + key * pitch.dv + kvOffset;
          // With a rope table, the gradient of the unrotated k: a lane holds
          // both elements of each pair (n and n + kHeadDim / 16).
          float dkOut[kHeadDim / 8][2];
#pragma unroll
          for (int n = 0; n < kHeadDim / 8; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e)
              dkOut[n][e] = scale * dkAcc[n][2 * r + e];
          if (rope) {
#pragma unroll
            for (int n = 0; n < kHeadDim / 16; ++n)
#pragma unroll
              for (int e = 0; e < 2; ++e)
                detail::rotatePairByTable(
                    dkOut[n][e], dkOut[n + kHeadDim / 16][e],
                    rope + key * kHeadDim, n * 8 + 2 * quadCol + e,
                    kHeadDim / 2, true);
          }
#pragma unroll
          for (int n = 0; n < kHeadDim / 8; ++n) {
            const int col = n * 8 + 2 * quadCol;
            *reinterpret_cast<__nv_bfloat162 *>(dkRow + col) =
                __floats2bfloat162_rn(dkOut[n][0], dkOut[n][1]);
            *reinterpret_cast<__nv_bfloat162 *>(dvRow + col) =
                __floats2bfloat162_rn(dvAcc[n][2 * r], dvAcc[n][2 * r + 1]);
          }
        }
        detail::copyAsyncWait<0>(); // (no query tile: K and V still landing)
        __syncthreads();            // the K and V tiles are free again
      }
}

/// dq = scale * dqAccum, rounded to T: the last step of
/// flashAttentionBackward. Grid-stride over the n elements; dq's rows of
/// `width` elements are `pitch` apart (0: contiguous).
template <typename T>
__device__ __forceinline__ void
flashAttentionFinishDq(const float *dqAccum, T *dq, long long n, float scale,
                       long long width = 0, long long pitch = 0) {
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i =
           static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += stride)
    dq[pitch ? i / width * pitch + i % width : i] =
        fromFloat<T>(scale * dqAccum[i]);
}

/// flashAttentionFinishDq of an attention with a rope table: dq of the
/// unrotated queries, each pair (i, i + headDim / 2) of a head rotated back
/// by the inverse angles of its token's row, then rounded. Grid-stride over
/// the n / 2 pairs; rows of `width` (heads x headDim) elements `pitch`
/// apart (0: contiguous).
template <typename T>
__device__ __forceinline__ void
flashAttentionFinishDqRope(const float *dqAccum, T *dq, const float *rope,
                           long long n, float scale, int headDim,
                           long long width, long long pitch = 0) {
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  const int half = headDim / 2;
  for (long long p =
           static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       p < n / 2; p += stride) {
    // Pair p: token t, head h, frequency i.
    const long long t = p / (width / 2);
    const long long inRow = p % (width / 2);
    const long long head = inRow / half;
    const int i = static_cast<int>(inRow % half);
    const long long lo = t * width + head * headDim + i;
    float low = scale * dqAccum[lo], high = scale * dqAccum[lo + half];
    detail::rotatePairByTable(low, high, rope + t * headDim, i, half, true);
    const long long out = (pitch ? t * pitch : t * width) + head * headDim + i;
    dq[out] = fromFloat<T>(low);
    dq[out + half] = fromFloat<T>(high);
  }
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_FLASH_ATTENTION_CUH
