//===- CublasLt.h - Row-major GEMMs through cuBLASLt ------------*- C++ -*-===//
//
// The cuda backend's GEMM: the host backend's gemm (host/Kernels.h) with
// the same row-major operands, run by cuBLASLt with FP32 accumulation.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_CUBLASLT_H
#define KILN_RUNTIME_CUDA_CUBLASLT_H

#include "runtime/plan/Plan.h"

#include <cublasLt.h>
#include <cuda.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

namespace kiln::rt::cuda {

/// A cuBLASLt handle and the algorithm it chose for each GEMM shape. Not
/// thread-safe; the device's context must be current.
class LtGemm {
public:
  /// Creates the handle; throws Error if cuBLASLt is missing or fails.
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm &) = delete;
  LtGemm &operator=(const LtGemm &) = delete;

  /// For each p < batch, on `stream`:
  ///
  ///   C_p[m, n] = op(A_p) op(B_p) (+ bias[n] on every row)
  ///
  /// all row-major and contiguous: op(A_p) is A_p stored [m, k], or with
  /// transA stored [k, m]; op(B_p) is B_p stored [k, n], or with transB
  /// stored [n, k]; batch strides m*k, k*n and m*n elements. `bias` (n
  /// elements, the dtype of C) may be null. `dtype` is F32 (exact FP32: no
  /// TF32) or BF16 (BF16 in and out); both accumulate in FP32. Throws Error
  /// for another dtype, a negative size, or a failed cuBLASLt call (such as
  /// no algorithm fitting `workspaceBytes`).
  void run(CUstream stream, ElemType dtype, std::int64_t batch, std::int64_t m,
           std::int64_t n, std::int64_t k, bool transA, bool transB,
           const void *a, const void *b, void *c, const void *bias,
           void *workspace, std::size_t workspaceBytes) {
    run(stream, dtype, dtype, batch, m, n, k, transA, transB, a, b, c, bias,
        workspace, workspaceBytes);
  }

  /// The same with A and B in `inputType` and C in `outputType`: BF16
  /// operands may write the FP32 accumulator (a weight gradient kept in
  /// FP32 for the optimizer). A bias needs one dtype throughout. With
  /// `accumulate` the product is added to C (beta = 1: a weight gradient
  /// summed over chunks of tokens).
  void run(CUstream stream, ElemType inputType, ElemType outputType,
           std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k,
           bool transA, bool transB, const void *a, const void *b, void *c,
           const void *bias, void *workspace, std::size_t workspaceBytes,
           bool accumulate = false);

  /// What follows the product, with its buffers (plan::GemmEpilogue, on
  /// the row-major C[m, n]): `bias` (n elements) for none and gelu_tanh;
  /// `aux` the pre-activation [m, n], written by gelu_tanh where not null,
  /// read by dgelu_tanh; `biasGrad` the m (bgrad_a) or n (bgrad_b) sums,
  /// in C's dtype. gelu_tanh and dgelu_tanh need n divisible by 8
  /// (cuBLASLt's rule for the aux leading dimension).
  struct Epilogue {
    plan::GemmEpilogue kind = plan::GemmEpilogue::None;
    const void *bias = nullptr;
    void *aux = nullptr;
    void *biasGrad = nullptr;
  };

  /// The general form: C = op(A) op(B), then `epilogue`.
  void run(CUstream stream, ElemType inputType, ElemType outputType,
           std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k,
           bool transA, bool transB, const void *a, const void *b, void *c,
           const Epilogue &epilogue, void *workspace,
           std::size_t workspaceBytes, bool accumulate = false);

  /// How many shapes have an algorithm chosen.
  std::size_t cachedAlgorithms() const { return algorithms_.size(); }

private:
  /// Everything the heuristic's choice depends on: the problem, and the
  /// alignment of each buffer that it may assume.
  using ShapeKey =
      std::tuple<ElemType, ElemType, std::int64_t, std::int64_t, std::int64_t,
                 std::int64_t, bool, bool, int, bool, bool, std::size_t,
                 std::uint32_t, std::uint32_t, std::uint32_t, std::uint32_t>;

  cublasLtHandle_t handle_ = nullptr;
  std::map<ShapeKey, cublasLtMatmulAlgo_t> algorithms_;
};

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_CUBLASLT_H
