//===- DeviceKernels.cu - Every kiln::dev template behind a wrapper -------===//
//
// The `extern "C" __global__` wrappers a generated kernel module would hold,
// one per template instantiation Kiln uses: both storage types (f32, bf16),
// head dims 32 (flash), 64 and 128, and the block sizes the launches below name (the
// flash kernels: bf16, the tile sizes in their names). Two
// tests share this file:
//   - compile_check.sh compiles it with nvcc for sm_80 and sm_90a (-Xptxas
//     -v, warnings as errors) and with NVRTC, and fails on any spill;
//   - DeviceKernelTest.cpp compiles it with NVRTC on a GPU machine and
//     launches each wrapper against the host reference kernels.
// Wrapper names are <function>_<dtype>[_d<headDim>][_t<threads>]; every
// wrapper is launched with blockDim.x equal to its KILN_*_THREADS constant.
//
//===----------------------------------------------------------------------===//

#include "kiln_device.cuh"

using bf16 = __nv_bfloat16;

/// Block sizes of the launches (the GPU test uses the same numbers).
#define KILN_ROW_THREADS 256       // block per row (also _t32 and _t1024)
#define KILN_COLUMN_THREADS 256    // thread per column and grid-stride
#define KILN_SINGLE_THREADS 1024   // single-block reductions
#define KILN_ATTENTION_THREADS 128 // attention: 4 warps per row

#define KILN_LAUNCH(threads)                                                   \
  extern "C" __global__ void __launch_bounds__(threads)
/// The flash kernels, as the code generator declares them: one block per SM
/// at least, so ptxas may use every register the block size allows.
#define KILN_FLASH_LAUNCH(threads)                                             \
  extern "C" __global__ void __launch_bounds__(threads, 1)

//===----------------------------------------------------------------------===//
// Elementwise bodies (what a generated fused kernel does per element)
//===----------------------------------------------------------------------===//

#define KILN_ELEMENTWISE(T, N)                                                 \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  fill_##N(T *out, long long n, float value) {                                 \
    kiln::dev::fill<T>(out, n, value);                                         \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  gelu_##N(const T *x, T *y, long long n, bool tanhApprox) {                   \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;       \
         i < n; i += (long long)gridDim.x * blockDim.x)                        \
      y[i] = kiln::dev::fromFloat<T>(                                          \
          kiln::dev::gelu(kiln::dev::toFloat(x[i]), tanhApprox));              \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  geluGrad_##N(const T *dy, const T *x, T *dx, long long n, bool tanhApprox) { \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;       \
         i < n; i += (long long)gridDim.x * blockDim.x)                        \
      dx[i] = kiln::dev::fromFloat<T>(kiln::dev::geluGrad(                     \
          kiln::dev::toFloat(dy[i]), kiln::dev::toFloat(x[i]), tanhApprox));   \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  swiglu_##N(const T *gate, const T *up, T *y, long long n) {                  \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;       \
         i < n; i += (long long)gridDim.x * blockDim.x)                        \
      y[i] = kiln::dev::fromFloat<T>(kiln::dev::swiglu(                        \
          kiln::dev::toFloat(gate[i]), kiln::dev::toFloat(up[i])));            \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  swigluGrad_##N(const T *dy, const T *gate, const T *up, T *dgate, T *dup,    \
                 long long n) {                                                \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;       \
         i < n; i += (long long)gridDim.x * blockDim.x) {                      \
      float d = kiln::dev::toFloat(dy[i]), g = kiln::dev::toFloat(gate[i]);    \
      dgate[i] = kiln::dev::fromFloat<T>(                                      \
          kiln::dev::swigluGate(d, g, kiln::dev::toFloat(up[i])));             \
      dup[i] = kiln::dev::fromFloat<T>(kiln::dev::swigluUp(d, g));             \
    }                                                                          \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  silu_##N(const T *x, T *y, long long n) {                                    \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;       \
         i < n; i += (long long)gridDim.x * blockDim.x)                        \
      y[i] =                                                                   \
          kiln::dev::fromFloat<T>(kiln::dev::silu(kiln::dev::toFloat(x[i])));  \
  }

//===----------------------------------------------------------------------===//
// Block per row: every function at 256 threads, and at the extremes the
// code generator picks from (32: the most registers per thread; 1024: at
// most 64), suffixed _t32 and _t1024.
//===----------------------------------------------------------------------===//

#define KILN_ROW_KERNELS(T, N, THREADS, SUFFIX)                                \
  KILN_LAUNCH(THREADS)                                                         \
  rmsNorm_##N##SUFFIX(const T *x, const T *w, T *y, long long rows, int dim,   \
                      float eps) {                                             \
    kiln::dev::rmsNorm<T, THREADS>(x, w, y, rows, dim, eps);                   \
  }                                                                            \
  KILN_LAUNCH(THREADS)                                                         \
  rmsNormGrad_##N##SUFFIX(const T *dy, const T *x, const T *w, T *dx,          \
                          long long rows, int dim, float eps) {                \
    kiln::dev::rmsNormGrad<T, THREADS>(dy, x, w, dx, rows, dim, eps);          \
  }                                                                            \
  KILN_LAUNCH(THREADS)                                                         \
  layerNorm_##N##SUFFIX(const T *x, const T *w, const T *b, T *y,              \
                        long long rows, int dim, float eps) {                  \
    kiln::dev::layerNorm<T, THREADS>(x, w, b, y, rows, dim, eps);              \
  }                                                                            \
  KILN_LAUNCH(THREADS)                                                         \
  layerNormGrad_##N##SUFFIX(const T *dy, const T *x, const T *w, T *dx,        \
                            long long rows, int dim, float eps) {              \
    kiln::dev::layerNormGrad<T, THREADS>(dy, x, w, dx, rows, dim, eps);        \
  }                                                                            \
  KILN_LAUNCH(THREADS)                                                         \
  rmsRowStats_##N##SUFFIX(const T *x, float *rstd, long long rows, int dim,    \
                          float eps) {                                         \
    kiln::dev::rmsRowStats<T, THREADS>(x, rstd, rows, dim, eps);               \
  }                                                                            \
  KILN_LAUNCH(THREADS)                                                         \
  layerRowStats_##N##SUFFIX(const T *x, float *mean, float *rstd,              \
                            long long rows, int dim, float eps) {              \
    kiln::dev::layerRowStats<T, THREADS>(x, mean, rstd, rows, dim, eps);       \
  }                                                                            \
  KILN_LAUNCH(THREADS)                                                         \
  rope_##N##SUFFIX(const T *x, const int *positions, T *y, int batch, int seq, \
                   int heads, int headDim, float theta, bool inverse) {        \
    kiln::dev::rope<T, THREADS>(x, positions, y, batch, seq, heads, headDim,   \
                                theta, inverse);                               \
  }                                                                            \
  KILN_LAUNCH(THREADS)                                                         \
  embedding_##N##SUFFIX(const T *table, const int *ids, T *y,                  \
                        long long numIds, int vocab, int dim,                  \
                        int *errorFlag) {                                      \
    kiln::dev::embedding<T, THREADS>(table, ids, y, numIds, vocab, dim,        \
                                     errorFlag);                               \
  }                                                                            \
  KILN_LAUNCH(THREADS)                                                         \
  crossEntropyRows_##N##SUFFIX(const T *logits, const int *targets,            \
                               float *rowLoss, long long rows, int vocab,      \
                               long long ignoreIndex, int *errorFlag) {        \
    kiln::dev::crossEntropyRows<T, THREADS>(logits, targets, rowLoss, rows,    \
                                            vocab, ignoreIndex, errorFlag);    \
  }                                                                            \
  KILN_LAUNCH(THREADS)                                                         \
  crossEntropyGrad_##N##SUFFIX(const float *dloss, const float *count,         \
                               const T *logits, const int *targets,            \
                               T *dlogits, long long rows, int vocab,          \
                               long long ignoreIndex) {                        \
    kiln::dev::crossEntropyGrad<T, THREADS>(                                   \
        dloss, count, logits, targets, dlogits, rows, vocab, ignoreIndex);     \
  }

#define KILN_ROWS(T, N)                                                        \
  KILN_ROW_KERNELS(T, N, KILN_ROW_THREADS, )                                   \
  KILN_ROW_KERNELS(T, N, 32, _t32)                                             \
  KILN_ROW_KERNELS(T, N, 1024, _t1024)

//===----------------------------------------------------------------------===//
// Thread per column and grid-stride
//===----------------------------------------------------------------------===//

#define KILN_COLUMNS(T, N)                                                     \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  rmsNormWeightGradPartials_##N(const T *dy, const T *x, const float *rstd,    \
                                float *partials, long long rows, int dim) {    \
    kiln::dev::rmsNormWeightGradPartials<T>(dy, x, rstd, partials, rows, dim); \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  layerNormWeightGradPartials_##N(const T *dy, const T *x, const float *mean,  \
                                  const float *rstd, float *partials,          \
                                  long long rows, int dim) {                   \
    kiln::dev::layerNormWeightGradPartials<T>(dy, x, mean, rstd, partials,     \
                                              rows, dim);                      \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  columnSumPartials_##N(const T *x, float *partials, long long rows,           \
                        int cols) {                                            \
    kiln::dev::columnSumPartials<T>(x, partials, rows, cols);                  \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  finishColumns_##N(const float *partials, T *y, int chunks, long long cols) { \
    kiln::dev::finishColumns<T>(partials, y, chunks, cols);                    \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  embeddingGradColumns_##N(const T *dy, const int *ids, float *dtable,         \
                           long long numIds, int vocab, int dim) {             \
    kiln::dev::embeddingGradColumns<T>(dy, ids, dtable, numIds, vocab, dim);   \
  }                                                                            \
  KILN_LAUNCH(KILN_COLUMN_THREADS)                                             \
  squaredNormPartial_##N(const T *x, long long n, float *partials) {           \
    kiln::dev::squaredNormPartial<T, KILN_COLUMN_THREADS>(x, n, partials);     \
  }

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

#define KILN_ATTENTION(T, N, D)                                                \
  KILN_LAUNCH(KILN_ATTENTION_THREADS)                                          \
  attentionForward_##N##_d##D(const T *q, const T *k, const T *v, T *out,      \
                              float *lse, int batch, int seq, int heads,       \
                              int kvHeads, float scale, bool causal,           \
                              const int *cuSeqlens, int numCuSeqlens) {        \
    kiln::dev::attentionForward<T, D, KILN_ATTENTION_THREADS>(                 \
        q, k, v, out, lse, batch, seq, heads, kvHeads, scale, causal,          \
        cuSeqlens, numCuSeqlens);                                              \
  }                                                                            \
  KILN_LAUNCH(KILN_ATTENTION_THREADS)                                          \
  attentionBackwardQuery_##N##_d##D(                                           \
      const T *dout, const T *q, const T *k, const T *v, const float *lse,     \
      const float *delta, T *dq, int batch, int seq, int heads, int kvHeads,   \
      float scale, bool causal, const int *cuSeqlens, int numCuSeqlens) {      \
    kiln::dev::attentionBackwardQuery<T, D, KILN_ATTENTION_THREADS>(           \
        dout, q, k, v, lse, delta, dq, batch, seq, heads, kvHeads, scale,      \
        causal, cuSeqlens, numCuSeqlens);                                      \
  }                                                                            \
  KILN_LAUNCH(KILN_ATTENTION_THREADS)                                          \
  attentionBackwardKeyValue_##N##_d##D(                                        \
      const T *dout, const T *q, const T *k, const T *v, const float *lse,     \
      const float *delta, T *dk, T *dv, int batch, int seq, int heads,         \
      int kvHeads, float scale, bool causal, const int *cuSeqlens,             \
      int numCuSeqlens) {                                                      \
    kiln::dev::attentionBackwardKeyValue<T, D, KILN_ATTENTION_THREADS>(        \
        dout, q, k, v, lse, delta, dk, dv, batch, seq, heads, kvHeads, scale,  \
        causal, cuSeqlens, numCuSeqlens);                                      \
  }

#define KILN_ATTENTION_PREPROCESS_THREADS(T, N, THREADS, SUFFIX)               \
  KILN_LAUNCH(THREADS)                                                         \
  attentionBackwardPreprocess_##N##SUFFIX(const T *dout, const T *out,         \
                                          float *delta, int batch, int seq,    \
                                          int heads, int headDim) {            \
    kiln::dev::attentionBackwardPreprocess<T, THREADS>(                        \
        dout, out, delta, batch, seq, heads, headDim);                         \
  }

/// 1-D grid-stride with KILN_ROW_THREADS, and the code generator's launch:
/// a warp per row on a (seq, heads, batch) grid.
#define KILN_ATTENTION_PREPROCESS(T, N)                                        \
  KILN_ATTENTION_PREPROCESS_THREADS(T, N, KILN_ROW_THREADS, )                  \
  KILN_ATTENTION_PREPROCESS_THREADS(T, N, 32, _t32)

#define KILN_ALL(T, N)                                                         \
  KILN_ELEMENTWISE(T, N)                                                       \
  KILN_ROWS(T, N)                                                              \
  KILN_COLUMNS(T, N)                                                           \
  KILN_ATTENTION_PREPROCESS(T, N)                                              \
  KILN_ATTENTION(T, N, 64)                                                     \
  KILN_ATTENTION(T, N, 128)

KILN_ALL(float, f32)
KILN_ALL(bf16, bf16)

//===----------------------------------------------------------------------===//
// FlashAttention on tensor cores (bf16): the cost model's tile sizes for
// head dims 32 (the tiny Llama), 64 and 128 on A100/H100, and small blocks
//===----------------------------------------------------------------------===//

#define KILN_FLASH_FORWARD(D, Q, K, S)                                         \
  KILN_FLASH_LAUNCH(Q / 16 * 32)                                               \
  flashAttentionForward_d##D##_q##Q##_k##K##_s##S(                             \
      const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, float *lse,      \
      int batch, int seq, int heads, int kvHeads, float scale, bool causal,    \
      const int *cuSeqlens, int numCuSeqlens) {                                \
    kiln::dev::flashAttentionForward<D, Q, K, S>(q, k, v, out, lse, batch,     \
                                                 seq, heads, kvHeads, scale,   \
                                                 causal, cuSeqlens,            \
                                                 numCuSeqlens);                \
  }

#define KILN_FLASH_BACKWARD(D, Q, K)                                           \
  KILN_FLASH_LAUNCH(K / 16 * 32)                                               \
  flashAttentionBackward_d##D##_q##Q##_k##K(                                   \
      const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,           \
      const float *lse, const float *delta, float *dqAccum, bf16 *dk,          \
      bf16 *dv, int batch, int seq, int heads, int kvHeads, float scale,       \
      bool causal, const int *cuSeqlens, int numCuSeqlens) {                   \
    kiln::dev::flashAttentionBackward<D, Q, K>(                                \
        dout, q, k, v, lse, delta, dqAccum, dk, dv, batch, seq, heads,         \
        kvHeads, scale, causal, cuSeqlens, numCuSeqlens);                      \
  }

KILN_FLASH_FORWARD(32, 64, 64, 2)
KILN_FLASH_FORWARD(64, 128, 128, 2)
KILN_FLASH_FORWARD(128, 128, 64, 2)
KILN_FLASH_FORWARD(64, 16, 16, 1)
KILN_FLASH_FORWARD(128, 64, 32, 1)
KILN_FLASH_BACKWARD(32, 64, 64)
KILN_FLASH_BACKWARD(64, 64, 128)
KILN_FLASH_BACKWARD(128, 64, 128)
KILN_FLASH_BACKWARD(64, 32, 32)
KILN_FLASH_BACKWARD(128, 32, 32)

/// The code generator's delta launch, zeroing the dq accumulator.
KILN_LAUNCH(32)
flashAttentionPreprocess_bf16(const bf16 *dout, const bf16 *out, float *delta,
                              int batch, int seq, int heads, int headDim,
                              float *dqAccum) {
  kiln::dev::attentionBackwardPreprocess<bf16, 32>(dout, out, delta, batch, seq,
                                                   heads, headDim, dqAccum);
}

KILN_LAUNCH(KILN_COLUMN_THREADS)
flashAttentionFinishDq_bf16(const float *dqAccum, bf16 *dq, long long n,
                            float scale) {
  kiln::dev::flashAttentionFinishDq<bf16>(dqAccum, dq, n, scale);
}

//===----------------------------------------------------------------------===//
// Type-independent kernels
//===----------------------------------------------------------------------===//

KILN_LAUNCH(KILN_SINGLE_THREADS)
crossEntropyReduce(const float *rowLoss, const int *targets, float *loss,
                   long long rows, long long ignoreIndex) {
  kiln::dev::crossEntropyReduce<KILN_SINGLE_THREADS>(rowLoss, targets, loss,
                                                     rows, ignoreIndex);
}

KILN_LAUNCH(KILN_SINGLE_THREADS)
countValid(const int *targets, long long rows, long long ignoreIndex,
           float *count) {
  kiln::dev::countValid<KILN_SINGLE_THREADS>(targets, rows, ignoreIndex, count);
}

KILN_LAUNCH(KILN_SINGLE_THREADS)
finishNorm(const float *partials, int count, float *out) {
  kiln::dev::finishNorm<KILN_SINGLE_THREADS>(partials, count, out);
}

KILN_LAUNCH(KILN_COLUMN_THREADS)
adamw(float *param, const float *grad, float *expAvg, float *expAvgSq,
      long long n, const float *lr, const float *step, const float *gradNorm,
      double beta1, double beta2, double eps, double weightDecay,
      double maxGradNorm) {
  kiln::dev::adamw(param, grad, expAvg, expAvgSq, n, lr, step, gradNorm, beta1,
                   beta2, eps, weightDecay, maxGradNorm);
}
