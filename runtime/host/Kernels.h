//===- Kernels.h - The host backend's reference compute kernels -*- C++ -*-===//
//
// Every step kind of a training plan has a C++ implementation here: GEMMs
// through OpenBLAS, everything else as plain loops parallelised with OpenMP
// over independent rows, heads or columns. GPU kernels are tested against
// these, so they favour clarity and exactness over speed.
//
// Conventions shared by every kernel:
//   - Each kernel computes in the precision of its template parameter T and is
//     instantiated for T = float and T = double. Storage formats (BF16, FP8)
//     are the caller's business: it widens buffers to T before a call and
//     rounds the results after.
//   - Reductions (norm statistics, dot products, softmax denominators, column
//     sums) are accumulated in double, each in one fixed order, so results do
//     not depend on the number of OpenMP threads (GEMMs depend on OpenBLAS).
//   - Tensors are dense and row-major; sizes are element counts. Outputs must
//     not alias inputs unless a kernel says so.
//   - Bad input that data can reach (a token id outside the vocabulary,
//     malformed cu_seqlens, a negative size) throws kiln::rt::Error naming
//     the kernel, the value and where it was found.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_HOST_KERNELS_H
#define KILN_RUNTIME_HOST_KERNELS_H

#include "runtime/plan/Schema.h"

#include <cstdint>

namespace kiln::rt::host {

//===----------------------------------------------------------------------===//
// Linear algebra
//===----------------------------------------------------------------------===//

/// Batched matrix product: for each p < batch,
///   C_p[m, n] = op(A_p) * op(B_p) (+ bias[n] on every row) (+ C_p),
/// where op(A_p) is A_p stored [m, k], or with `transA` stored [k, m] and
/// transposed; op(B_p) is B_p stored [k, n], or with `transB` stored [n, k]
/// and transposed (x W^T of a linear layer). Batch strides are m*k, k*n and
/// m*n. `bias` may be null; with `accumulate` the product is added to the
/// previous contents of C (gradient accumulation), otherwise C is
/// overwritten. Uses cblas_sgemm / cblas_dgemm; m, n and k must fit in int.
template <typename T>
void gemm(const T *a, const T *b, T *c, std::int64_t batch, std::int64_t m,
          std::int64_t n, std::int64_t k, bool transA, bool transB,
          const T *bias, bool accumulate);

/// y[j] = sum over rows of x[row, j]: the gradient of a broadcast bias.
template <typename T>
void columnSum(const T *x, T *y, std::int64_t rows, std::int64_t cols);

/// A gemm step's epilogue (plan::GemmEpilogue) on the product `c` that gemm
/// wrote (batch x m x n), from the same A and B: gelu_tanh copies c to
/// `extra` (the pre-activation; may be null) and applies the tanh GELU;
/// dgelu_tanh multiplies c by GELU's derivative at `aux`; bgrad_a writes
/// to `extra` the m column sums of A stored [k, m], bgrad_b the n column
/// sums of B stored [k, n] (batch 1). The kernels the unfused ops run
/// (gelu, geluGrad, columnSum): FP32 results are bitwise theirs.
template <typename T>
void gemmEpilogue(plan::GemmEpilogue epilogue, const T *a, const T *b,
                  const T *aux, T *c, T *extra, std::int64_t batch,
                  std::int64_t m, std::int64_t n, std::int64_t k);

//===----------------------------------------------------------------------===//
// Normalisation over the last dimension
//===----------------------------------------------------------------------===//

/// RMSNorm (Llama): y = x / sqrt(mean(x^2) + eps) * w, per row of `dim`.
template <typename T>
void rmsNorm(const T *x, const T *w, T *y, std::int64_t rows, std::int64_t dim,
             double eps);

/// The input gradient of rmsNorm: dx from dy, x and w.
template <typename T>
void rmsNormGrad(const T *dy, const T *x, const T *w, T *dx, std::int64_t rows,
                 std::int64_t dim, double eps);

/// The weight gradient of rmsNorm: dw[j] = sum over rows of dy * x * r, with
/// r = 1 / sqrt(mean(x^2) + eps) of the row.
template <typename T>
void rmsNormWeightGrad(const T *dy, const T *x, T *dw, std::int64_t rows,
                       std::int64_t dim, double eps);

/// LayerNorm (GPT-2): y = (x - mean) / sqrt(var + eps) * w + b per row, with
/// the biased variance (as torch.nn.LayerNorm). `b` may be null.
template <typename T>
void layerNorm(const T *x, const T *w, const T *b, T *y, std::int64_t rows,
               std::int64_t dim, double eps);

/// The input gradient of layerNorm: dx from dy, x and w.
template <typename T>
void layerNormGrad(const T *dy, const T *x, const T *w, T *dx,
                   std::int64_t rows, std::int64_t dim, double eps);

/// The weight gradient of layerNorm: dw[j] = sum over rows of dy * xhat, with
/// xhat the normalised input. The bias gradient is columnSum(dy).
template <typename T>
void layerNormWeightGrad(const T *dy, const T *x, T *dw, std::int64_t rows,
                         std::int64_t dim, double eps);

/// layerNormWeightGrad and the bias gradient columnSum(dy) in one pass over
/// dy (nn-fuse's norm-param-grads): bitwise the two kernels.
template <typename T>
void layerNormParamGrad(const T *dy, const T *x, T *dw, T *db,
                        std::int64_t rows, std::int64_t dim, double eps);

//===----------------------------------------------------------------------===//
// Rotary embeddings and attention
//===----------------------------------------------------------------------===//

/// Rotary position embedding of x [batch, seq, heads * headDim] in the
/// Hugging Face Llama "rotate_half" convention: for i < headDim / 2, with
/// angle = pos * theta^(-2i / headDim) (computed in double),
///   y[i]         = x[i] * cos(angle) - x[i + headDim/2] * sin(angle)
///   y[i + hd/2]  = x[i + headDim/2] * cos(angle) + x[i] * sin(angle).
/// `positions` [batch, seq] may be null: the position is then the index
/// within the sequence. `inverse` rotates by -angle, which is the transpose
/// of the forward rotation and therefore also its gradient. headDim must be
/// even. y may alias x.
template <typename T>
void rope(const T *x, const std::int32_t *positions, T *y, std::int64_t batch,
          std::int64_t seq, std::int64_t heads, std::int64_t headDim,
          double theta, bool inverse);

/// The factors of rope as a table [batch, seq, headDim]: row t holds the
/// cosines of its angles (computed in double as rope computes them, rounded
/// to FP32) in its first half and the sines in its second. `positions` as
/// for rope.
void ropeTable(const std::int32_t *positions, float *table, std::int64_t batch,
               std::int64_t seq, std::int64_t headDim, double theta);

/// Exact softmax attention, naive O(seq^2) per head.
///
/// q and out are [batch, seq, heads * headDim]; k and v are
/// [batch, seq, kvHeads * headDim]; query head h reads kv head
/// h / (heads / kvHeads) (grouped-query attention; kvHeads divides heads).
/// Scores are scale * q.k. `lse` [batch, heads, seq] receives, per query, the
/// natural log of the softmax denominator of the scaled, masked scores.
///
/// Without cuSeqlens every batch row is its own sequence. With cuSeqlens
/// (numCuSeqlens entries, non-decreasing from 0 to batch * seq) the rows are
/// ignored: the entries mark document boundaries in the flattened
/// batch * seq token stream, a document may continue from one batch row into
/// the next, and a query attends only to keys of its own document. `causal`
/// additionally hides keys after the query in that stream. Every query thus
/// sees at least its own key; should a row ever see none it gets out = 0 and
/// lse = -inf, never NaN. Malformed cuSeqlens throw Error.
template <typename T>
void attentionForward(const T *q, const T *k, const T *v, T *out, float *lse,
                      std::int64_t batch, std::int64_t seq, std::int64_t heads,
                      std::int64_t kvHeads, std::int64_t headDim, double scale,
                      bool causal, const std::int32_t *cuSeqlens,
                      std::int64_t numCuSeqlens);

/// The gradients of attentionForward with respect to q, k and v, from dout,
/// the forward's inputs, its out and its lse. P is recomputed as
/// exp(scale * q.k - lse); dS = P * (dP - rowsum(dout * out)) with
/// dP = dout . v; dq = scale * dS k; dk = scale * dS^T q and dv = P^T dout,
/// each summed over the query heads sharing the kv head. dq, dk and dv are
/// overwritten. Work is split by (document, kv head), so every element of
/// dk and dv has one writer and the result does not depend on the threads.
template <typename T>
void attentionBackward(const T *dout, const T *q, const T *k, const T *v,
                       const T *out, const float *lse, T *dq, T *dk, T *dv,
                       std::int64_t batch, std::int64_t seq, std::int64_t heads,
                       std::int64_t kvHeads, std::int64_t headDim, double scale,
                       bool causal, const std::int32_t *cuSeqlens,
                       std::int64_t numCuSeqlens);

//===----------------------------------------------------------------------===//
// Elementwise activations
//===----------------------------------------------------------------------===//

/// SwiGLU (Llama MLP): y = gate * sigmoid(gate) * up, over n elements.
template <typename T>
void swiglu(const T *gate, const T *up, T *y, std::int64_t n);

/// The gradients of swiglu: with s = sigmoid(gate),
/// dgate = dy * up * s * (1 + gate * (1 - s)) and dup = dy * gate * s.
template <typename T>
void swigluGrad(const T *dy, const T *gate, const T *up, T *dgate, T *dup,
                std::int64_t n);

/// GELU over n elements: exact, 0.5 x (1 + erf(x / sqrt(2))), or with
/// `tanhApprox` (GPT-2) 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
template <typename T>
void gelu(const T *x, T *y, std::int64_t n, bool tanhApprox);

/// dx = dy * d/dx gelu(x), for the same mode as the forward.
template <typename T>
void geluGrad(const T *dy, const T *x, T *dx, std::int64_t n, bool tanhApprox);

//===----------------------------------------------------------------------===//
// Embedding and loss
//===----------------------------------------------------------------------===//

/// y[i, :] = table[ids[i], :] for a [vocab, dim] table. Throws Error for an
/// id outside [0, vocab), naming the id and its position.
template <typename T>
void embedding(const T *table, const std::int32_t *ids, T *y,
               std::int64_t numIds, std::int64_t vocab, std::int64_t dim);

/// The table gradient of embedding: dtable [vocab, dim] is overwritten with
/// zeros, then dy[i, :] is added to row ids[i] in ascending i. Throws like
/// embedding.
template <typename T>
void embeddingGrad(const T *dy, const std::int32_t *ids, T *dtable,
                   std::int64_t numIds, std::int64_t vocab, std::int64_t dim);

/// Mean token cross-entropy of logits [rows, vocab]: the mean over rows whose
/// target is not ignoreIndex of logsumexp(row) - row[target]; 0 when every
/// row is ignored. Throws Error for any other target outside [0, vocab).
template <typename T>
double crossEntropy(const T *logits, const std::int32_t *targets,
                    std::int64_t rows, std::int64_t vocab,
                    std::int64_t ignoreIndex);

/// The logits gradient of crossEntropy scaled by dloss:
/// dlogits = dloss * (softmax(row) - onehot(target)) / count, with count the
/// number of rows not ignored; ignored rows get zeros. Throws like
/// crossEntropy.
template <typename T>
void crossEntropyGrad(double dloss, const T *logits,
                      const std::int32_t *targets, T *dlogits,
                      std::int64_t rows, std::int64_t vocab,
                      std::int64_t ignoreIndex);

/// The LM head, crossEntropy and both GEMMs of its gradient in one pass
/// over chunks of `chunkRows` tokens, without the [rows, vocab] logits:
/// for each chunk, scratch[chunk, vocab] = x_chunk w^T (w is [vocab,
/// hidden]), passed to `roundLogits` when not null (the BF16 rounding of
/// the logits the unfused step stores), each row's loss as crossEntropy
/// computes it, the row's gradient as crossEntropyGrad computes it (in
/// place; then passed to `roundGrad` when not null, as the unfused step
/// rounds the stored dlogits), dx_chunk = dlogits w, and dw += dlogits^T
/// x_chunk. Returns the mean loss (the row losses summed in row order, as
/// crossEntropy does). dx and dw are overwritten; scratch holds chunkRows x
/// vocab elements; dx and dw both null: the loss alone (an evaluation).
/// Throws like crossEntropy, before any output is written.
/// `gemmSeconds`, when not null, accumulates the wall time of its GEMMs
/// (KILN_PROFILE's GEMM share).
template <typename T>
double linearCrossEntropy(const T *x, const T *w, const std::int32_t *targets,
                          double dloss, T *scratch, T *dx, T *dw,
                          std::int64_t rows, std::int64_t hidden,
                          std::int64_t vocab, std::int64_t chunkRows,
                          std::int64_t ignoreIndex,
                          void (*roundLogits)(T *, std::int64_t),
                          void (*roundGrad)(T *, std::int64_t),
                          double *gemmSeconds = nullptr);

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

/// sum(x^2) over n elements, in double: the caller adds it over every
/// gradient and takes the square root for the global gradient norm.
template <typename T> double sumOfSquares(const T *x, std::int64_t n);

/// Gradient accumulation over micro-batches, in place: acc = grad for the
/// first micro-batch, acc + grad after.
template <typename T>
void accumulateGrad(T *acc, const T *grad, std::int64_t n, bool first);

/// One AdamW step over n elements, in torch's order: gradients are scaled by
/// min(1, maxGradNorm / (gradNorm + 1e-6)) when maxGradNorm > 0
/// (torch.nn.utils.clip_grad_norm_), then, as torch.optim.AdamW,
///   param *= 1 - lr * weightDecay
///   expAvg += (1 - beta1) * (g - expAvg)
///   expAvgSq = beta2 * expAvgSq + (1 - beta2) * g^2
///   param -= lr / (1 - beta1^step) * expAvg
///            / (sqrt(expAvgSq) / sqrt(1 - beta2^step) + eps).
/// `step` counts from 1 (the step being taken); a smaller step throws Error.
template <typename T>
void adamw(T *param, const T *grad, T *expAvg, T *expAvgSq, std::int64_t n,
           double lr, double step, double gradNorm, double beta1, double beta2,
           double eps, double weightDecay, double maxGradNorm);

//===----------------------------------------------------------------------===//
// Tiled attention (FlashAttention-2)
//===----------------------------------------------------------------------===//

/// The tile sizes of the flash kernels: queries per tile (blockQ) and keys
/// per tile (blockK). Any positive sizes work, whatever the sequence length.
struct FlashBlocks {
  std::int64_t blockQ = 64;
  std::int64_t blockK = 64;
};

/// Elements between consecutive tokens' rows of q, k and v (and of dq, dk
/// and dv) when they are row-strided views into a packed tensor (GPT-2's
/// QKV); 0 where a tensor is contiguous (heads x headDim per token).
struct RowStrides {
  std::int64_t q = 0, k = 0, v = 0;
  std::int64_t dq = 0, dk = 0, dv = 0;
};

/// Rotary embedding on load (nn-fuse's rope-attention): q and k rows rotated
/// by a ropeTable ([batch * seq, headDim]) as the flash kernels load them,
/// then rounded by `round` (may be null) to the precision the unfused RoPE
/// would have stored; dq and dk rotated back by the inverse angles as they
/// are stored. No table: none of it.
struct RopeOnLoad {
  const float *table = nullptr;
  float (*round)(float) = nullptr;
};

/// attentionForward by the FlashAttention-2 algorithm: the same arguments,
/// layouts, GQA mapping, causal and cu_seqlens semantics and lse, computed
/// tile by tile (blockQ queries against blockK keys, never crossing a
/// document) with the online softmax, in a per-thread workspace of
/// flashWorkspaceBytes; nothing of size seq^2 is allocated. With `causal`,
/// key tiles that lie entirely after every query of a query tile are
/// skipped. Unlike the reference kernels it accumulates in T, as the GPU
/// kernels accumulate in FP32; every output still has one writer and one
/// summation order, so results do not depend on the number of threads.
template <typename T>
void flashAttentionForward(const T *q, const T *k, const T *v, T *out,
                           float *lse, std::int64_t batch, std::int64_t seq,
                           std::int64_t heads, std::int64_t kvHeads,
                           std::int64_t headDim, double scale, bool causal,
                           const std::int32_t *cuSeqlens,
                           std::int64_t numCuSeqlens, FlashBlocks blocks,
                           const RowStrides &strides = {},
                           const RopeOnLoad &rope = {});

/// attentionBackward by the FlashAttention-2 algorithm: D = rowsum(dout *
/// out) first; then dk and dv per (document, kv head, key tile) over every
/// query head of the group and every query tile that sees the keys; then dq
/// per (document, query head, query tile) over the key tiles. P is
/// recomputed from lse in both passes, so each of dq, dk and dv has one
/// writer per element. Besides the per-thread workspace it allocates D,
/// batch * seq * heads values of T. dq, dk and dv are overwritten.
template <typename T>
void flashAttentionBackward(const T *dout, const T *q, const T *k, const T *v,
                            const T *out, const float *lse, T *dq, T *dk, T *dv,
                            std::int64_t batch, std::int64_t seq,
                            std::int64_t heads, std::int64_t kvHeads,
                            std::int64_t headDim, double scale, bool causal,
                            const std::int32_t *cuSeqlens,
                            std::int64_t numCuSeqlens, FlashBlocks blocks,
                            const RowStrides &strides = {},
                            const RopeOnLoad &rope = {});

/// Bytes of working memory the flash kernels use per thread (the larger of
/// the forward's and the backward's tiles), for elements of `elementBytes`
/// (sizeof(T)). It depends on headDim and the blocks only, never on seq.
std::int64_t flashWorkspaceBytes(std::int64_t headDim, FlashBlocks blocks,
                                 std::int64_t elementBytes = sizeof(float));

/// The number of score tiles (one query tile of one head against one key
/// tile) that the calling thread's last flashAttentionForward or
/// flashAttentionBackward skipped because causality hid all of them. The
/// backward counts each of its two passes: twice the forward's number.
std::int64_t lastSkippedTiles();

} // namespace kiln::rt::host

#endif // KILN_RUNTIME_HOST_KERNELS_H
