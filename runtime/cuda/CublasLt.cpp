//===- CublasLt.cpp - Row-major GEMMs through cuBLASLt --------------------===//
//
// cuBLASLt is column-major; Kiln's tensors are row-major. A row-major
// [r, c] matrix with leading dimension c is, in the same memory, the
// column-major [c, r] matrix: its transpose. So
//
//   C[m, n] = op(A) op(B)   is computed as   C^T[n, m] = op(B)^T op(A)^T
//
// with cuBLASLt's first operand our B and its second our A:
//
//   our B, stored [k, n] (no transB): column-major [n, k], ld n, which is
//          B^T = op(B)^T: CUBLAS_OP_N.
//   our B, stored [n, k] (transB):    column-major [k, n], ld k, whose
//          transpose is the stored matrix = op(B)^T: CUBLAS_OP_T.
//   our A, stored [m, k] (no transA): column-major [k, m], ld k = A^T =
//          op(A)^T: CUBLAS_OP_N.
//   our A, stored [k, m] (transA):    column-major [m, k], ld m, whose
//          transpose is the stored matrix = op(A)^T: CUBLAS_OP_T.
//   C, stored [m, n]:                 column-major D = C^T [n, m], ld n.
//
// CUBLASLT_EPILOGUE_BIAS adds bias[i] to row i of D, in every column: row i
// of D is column i of C, so bias[j] goes to C[:, j] on every row, as the
// host gemm does, and the bias has n elements (the rows of D).
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/CublasLt.h"

#include "runtime/Error.h"
#include "runtime/cuda/CudaApi.h"

#include <fmt/format.h>

#include <limits>

namespace kiln::rt::cuda {

namespace {

/// The largest power of two up to 256 that divides `pointer` and, when
/// there are several batches, the batch stride in bytes: the alignment
/// every batch's operand has. The heuristic assumes 256 unless told.
std::uint32_t alignmentOf(const void *pointer, std::uint64_t strideBytes,
                          std::int64_t batch) {
  std::uint64_t bits = reinterpret_cast<std::uintptr_t>(pointer);
  if (batch > 1)
    bits |= strideBytes;
  std::uint32_t alignment = 256;
  while (alignment > 1 && bits % alignment != 0)
    alignment /= 2;
  return alignment;
}

/// A matrix layout: `rows` x `cols` column-major with leading dimension
/// `rows`, `batch` of them `stride` elements apart.
struct Layout {
  cublasLtMatrixLayout_t layout = nullptr;

  Layout(cudaDataType type, std::int64_t rows, std::int64_t cols,
         std::int64_t batch, std::int64_t stride) {
    const CublasLtApi &api = cublasLt();
    KILN_CUBLAS_CHECK(
        api.cublasLtMatrixLayoutCreate(&layout, type, rows, cols, rows));
    auto count = static_cast<std::int32_t>(batch);
    KILN_CUBLAS_CHECK(api.cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    KILN_CUBLAS_CHECK(api.cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
        sizeof(stride)));
  }
  ~Layout() {
    if (layout)
      cublasLt().cublasLtMatrixLayoutDestroy(layout);
  }
  Layout(const Layout &) = delete;
  Layout &operator=(const Layout &) = delete;
};

/// A matmul description: FP32 compute and scale, the two operations, and
/// the epilogue.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;

  MatmulDesc(cublasOperation_t opA, cublasOperation_t opB) {
    const CublasLtApi &api = cublasLt();
    // CUBLAS_COMPUTE_32F, not _FAST_TF32: F32 GEMMs stay exact FP32.
    KILN_CUBLAS_CHECK(
        api.cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    set(CUBLASLT_MATMUL_DESC_TRANSA, opA);
    set(CUBLASLT_MATMUL_DESC_TRANSB, opB);
  }
  ~MatmulDesc() {
    if (desc)
      cublasLt().cublasLtMatmulDescDestroy(desc);
  }
  MatmulDesc(const MatmulDesc &) = delete;
  MatmulDesc &operator=(const MatmulDesc &) = delete;

  template <typename T> void set(cublasLtMatmulDescAttributes_t name, T value) {
    KILN_CUBLAS_CHECK(cublasLt().cublasLtMatmulDescSetAttribute(
        desc, name, &value, sizeof(value)));
  }
};

/// cuBLASLt's epilogue for ours, on D = C^T [n, m] (the file comment): a
/// bias of C's n columns is one of D's n rows; the pre-activation has C's
/// layout, so D's leading dimension n; our A is cuBLASLt's B, so summing A
/// over k is BGRADB (a bias of D's m columns) and summing B is BGRADA.
cublasLtEpilogue_t ltEpilogue(const LtGemm::Epilogue &e) {
  using plan::GemmEpilogue;
  switch (e.kind) {
  case GemmEpilogue::None:
    return e.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  case GemmEpilogue::GeluTanh:
    if (e.aux)
      return e.bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                    : CUBLASLT_EPILOGUE_GELU_AUX;
    return e.bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  case GemmEpilogue::DgeluTanh:
    return CUBLASLT_EPILOGUE_DGELU;
  case GemmEpilogue::BgradA:
    return CUBLASLT_EPILOGUE_BGRADB;
  case GemmEpilogue::BgradB:
    return CUBLASLT_EPILOGUE_BGRADA;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

/// The heuristic's constraints: workspace size and buffer alignments.
struct Preference {
  cublasLtMatmulPreference_t preference = nullptr;

  Preference() {
    KILN_CUBLAS_CHECK(cublasLt().cublasLtMatmulPreferenceCreate(&preference));
  }
  ~Preference() {
    if (preference)
      cublasLt().cublasLtMatmulPreferenceDestroy(preference);
  }
  Preference(const Preference &) = delete;
  Preference &operator=(const Preference &) = delete;

  template <typename T>
  void set(cublasLtMatmulPreferenceAttributes_t name, T value) {
    KILN_CUBLAS_CHECK(cublasLt().cublasLtMatmulPreferenceSetAttribute(
        preference, name, &value, sizeof(value)));
  }
};

} // namespace

LtGemm::LtGemm() { KILN_CUBLAS_CHECK(cublasLt().cublasLtCreate(&handle_)); }

LtGemm::~LtGemm() {
  if (handle_)
    cublasLt().cublasLtDestroy(handle_);
}

void LtGemm::run(CUstream stream, ElemType inputType, ElemType outputType,
                 std::int64_t batch, std::int64_t m, std::int64_t n,
                 std::int64_t k, bool transA, bool transB, const void *a,
                 const void *b, void *c, const void *bias, void *workspace,
                 std::size_t workspaceBytes, bool accumulate) {
  Epilogue epilogue;
  epilogue.bias = bias;
  run(stream, inputType, outputType, batch, m, n, k, transA, transB, a, b, c,
      epilogue, workspace, workspaceBytes, accumulate);
}

void LtGemm::run(CUstream stream, ElemType inputType, ElemType outputType,
                 std::int64_t batch, std::int64_t m, std::int64_t n,
                 std::int64_t k, bool transA, bool transB, const void *a,
                 const void *b, void *c, const Epilogue &epilogue,
                 void *workspace, std::size_t workspaceBytes, bool accumulate) {
  using plan::GemmEpilogue;
  for (ElemType dtype : {inputType, outputType})
    if (dtype != ElemType::F32 && dtype != ElemType::BF16)
      throw Error(fmt::format("LtGemm: unsupported dtype {} (F32 or BF16)",
                              elemName(dtype)));
  if (inputType != outputType &&
      (inputType != ElemType::BF16 || outputType != ElemType::F32))
    throw Error(fmt::format("LtGemm: {} operands with a {} result are not "
                            "supported (BF16 operands may write F32)",
                            elemName(inputType), elemName(outputType)));
  if (inputType != outputType && epilogue.bias)
    throw Error("LtGemm: a bias needs the operands' dtype in the result");
  bool gelu = epilogue.kind == GemmEpilogue::GeluTanh ||
              epilogue.kind == GemmEpilogue::DgeluTanh;
  bool bgrad = epilogue.kind == GemmEpilogue::BgradA ||
               epilogue.kind == GemmEpilogue::BgradB;
  std::string_view name = plan::gemmEpilogueName(epilogue.kind);
  if (epilogue.kind == GemmEpilogue::DgeluTanh && !epilogue.aux)
    throw Error("LtGemm: the dgelu_tanh epilogue needs the pre-activation");
  if (gelu && n % 8 != 0)
    throw Error(fmt::format("LtGemm: the {} epilogue needs n divisible by 8 "
                            "(cuBLASLt's aux leading dimension), got n = {}",
                            name, n));
  if (bgrad && (!epilogue.biasGrad || batch != 1 || accumulate))
    throw Error(fmt::format("LtGemm: the {} epilogue needs a bias gradient "
                            "buffer, one problem and no accumulation",
                            name));
  if (batch < 0 || m < 0 || n < 0 || k < 0 ||
      batch > std::numeric_limits<std::int32_t>::max())
    throw Error(fmt::format("LtGemm: invalid shape batch {} m {} n {} k {}",
                            batch, m, n, k));
  if (batch == 0 || m == 0 || n == 0)
    return;
  if (k == 0)
    throw Error("LtGemm: k = 0 is not supported");

  const CublasLtApi &api = cublasLt();
  auto cudaType = [](ElemType dtype) {
    return dtype == ElemType::F32 ? CUDA_R_32F : CUDA_R_16BF;
  };
  cudaDataType type = cudaType(inputType), outType = cudaType(outputType);
  std::uint64_t elem = elemSize(inputType), outElem = elemSize(outputType);

  // The mapping of the file comment: cuBLASLt's A is our B, its B our A,
  // its D (and C, read only when accumulating) is C^T.
  Layout ltA(type, transB ? k : n, transB ? n : k, batch, k * n);
  Layout ltB(type, transA ? m : k, transA ? k : m, batch, m * k);
  Layout ltD(outType, n, m, batch, m * n);
  MatmulDesc desc(transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                  transA ? CUBLAS_OP_T : CUBLAS_OP_N);
  cublasLtEpilogue_t lt = ltEpilogue(epilogue);
  if (lt != CUBLASLT_EPILOGUE_DEFAULT)
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, lt);
  if (const void *vector = bgrad ? epilogue.biasGrad : epilogue.bias) {
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, vector);
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
             static_cast<std::int32_t>(outType));
  }
  if (gelu && epilogue.aux) {
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, epilogue.aux);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
             static_cast<std::int64_t>(n));
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE,
             static_cast<std::int64_t>(m * n));
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE,
             static_cast<std::int32_t>(outType));
  }

  std::uint32_t alignB = alignmentOf(b, elem * k * n, batch);
  std::uint32_t alignA = alignmentOf(a, elem * m * k, batch);
  std::uint32_t alignC = alignmentOf(c, outElem * m * n, batch);
  ShapeKey key{inputType,
               outputType,
               batch,
               m,
               n,
               k,
               transA,
               transB,
               static_cast<int>(epilogue.kind),
               epilogue.bias != nullptr,
               epilogue.aux != nullptr,
               workspaceBytes,
               alignB,
               alignA,
               alignC,
               alignC};
  auto found = algorithms_.find(key);
  if (found == algorithms_.end()) {
    Preference preference;
    preference.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                   static_cast<std::uint64_t>(workspaceBytes));
    preference.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignB);
    preference.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignA);
    preference.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignC);
    preference.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignC);
    cublasLtMatmulHeuristicResult_t result = {};
    int count = 0;
    KILN_CUBLAS_CHECK(api.cublasLtMatmulAlgoGetHeuristic(
        handle_, desc.desc, ltA.layout, ltB.layout, ltD.layout, ltD.layout,
        preference.preference, 1, &result, &count));
    if (count == 0)
      throw Error(fmt::format(
          "LtGemm: cuBLASLt has no algorithm for {} -> {} batch {} m {} n {} "
          "k {} transA {} transB {} bias {} epilogue {} within {} bytes of "
          "workspace",
          elemName(inputType), elemName(outputType), batch, m, n, k, transA,
          transB, epilogue.bias != nullptr, name, workspaceBytes));
    found = algorithms_.emplace(key, result.algo).first;
  }

  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  KILN_CUBLAS_CHECK(
      api.cublasLtMatmul(handle_, desc.desc, &alpha, b, ltA.layout, a,
                         ltB.layout, &beta, c, ltD.layout, c, ltD.layout,
                         &found->second, workspace, workspaceBytes, stream));
}

} // namespace kiln::rt::cuda
