//===- Gemm.cpp - Batched GEMM through OpenBLAS, and column sums ----------===//

#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <cblas.h>

#include <algorithm>
#include <limits>
#include <type_traits>

namespace kiln::rt::host {

using detail::checkSize;

namespace {

/// Throws Error unless a GEMM dimension fits CBLAS's int.
void checkBlasDim(const char *name, std::int64_t value) {
  checkSize("gemm", name, value);
  if (value > std::numeric_limits<int>::max())
    throw Error(fmt::format("gemm: {} = {} exceeds the BLAS limit {}", name,
                            value, std::numeric_limits<int>::max()));
}

/// C = A * B + beta * C through cblas_sgemm or cblas_dgemm.
template <typename T>
void blasGemm(bool transA, bool transB, int m, int n, int k, const T *a,
              int lda, const T *b, int ldb, T beta, T *c, int ldc) {
  CBLAS_TRANSPOSE opA = transA ? CblasTrans : CblasNoTrans;
  CBLAS_TRANSPOSE opB = transB ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, opA, opB, m, n, k, 1.0f, a, lda, b, ldb, beta, c,
                ldc);
  else
    cblas_dgemm(CblasRowMajor, opA, opB, m, n, k, 1.0, a, lda, b, ldb, beta, c,
                ldc);
}

} // namespace

template <typename T>
void gemm(const T *a, const T *b, T *c, std::int64_t batch, std::int64_t m,
          std::int64_t n, std::int64_t k, bool transA, bool transB,
          const T *bias, bool accumulate) {
  checkSize("gemm", "batch", batch);
  checkBlasDim("m", m);
  checkBlasDim("n", n);
  checkBlasDim("k", k);
  if (batch == 0 || m == 0 || n == 0)
    return;

  // OpenBLAS threads each call itself; the batch loop stays sequential so
  // that BLAS is never entered from inside an OpenMP region.
  for (std::int64_t p = 0; p < batch; ++p) {
    T *cp = c + p * m * n;
    // The bias goes into C first and the product is added to it (beta = 1).
    if (bias) {
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j)
          cp[i * n + j] = accumulate ? cp[i * n + j] + bias[j] : bias[j];
    }
    bool keepC = accumulate || bias;
    if (k == 0) {
      // An empty product; CBLAS would reject the leading dimension 0.
      if (!keepC)
        std::fill(cp, cp + m * n, T(0));
      continue;
    }
    blasGemm<T>(transA, transB, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), a + p * m * k,
                static_cast<int>(transA ? m : k), b + p * k * n,
                static_cast<int>(transB ? k : n), keepC ? T(1) : T(0), cp,
                static_cast<int>(n));
  }
}

template <typename T>
void columnSum(const T *x, T *y, std::int64_t rows, std::int64_t cols) {
  checkSize("columnSum", "rows", rows);
  checkSize("columnSum", "cols", cols);
  detail::reduceColumns(rows, cols, y, [&](std::int64_t r, std::int64_t j) {
    return static_cast<double>(x[r * cols + j]);
  });
}

template <typename T>
void gemmEpilogue(plan::GemmEpilogue epilogue, const T *a, const T *b,
                  const T *aux, T *c, T *extra, std::int64_t batch,
                  std::int64_t m, std::int64_t n, std::int64_t k) {
  using plan::GemmEpilogue;
  checkSize("gemmEpilogue", "batch", batch);
  std::int64_t elements = batch * m * n;
  switch (epilogue) {
  case GemmEpilogue::None:
    return;
  case GemmEpilogue::GeluTanh:
    if (extra)
      std::copy_n(c, elements, extra);
    gelu<T>(c, c, elements, /*tanhApprox=*/true);
    return;
  case GemmEpilogue::DgeluTanh:
    if (!aux)
      throw Error("gemmEpilogue: dgelu_tanh needs the pre-activation");
    geluGrad<T>(c, aux, c, elements, /*tanhApprox=*/true);
    return;
  case GemmEpilogue::BgradA:
  case GemmEpilogue::BgradB:
    if (batch != 1 || !extra)
      throw Error(fmt::format("gemmEpilogue: {} needs one problem and a bias "
                              "gradient, got batch {}",
                              plan::gemmEpilogueName(epilogue), batch));
    if (epilogue == GemmEpilogue::BgradA)
      columnSum<T>(a, extra, k, m);
    else
      columnSum<T>(b, extra, k, n);
    return;
  }
}

#define KILN_INSTANTIATE(T)                                                    \
  template void gemmEpilogue<T>(plan::GemmEpilogue, const T *, const T *,      \
                                const T *, T *, T *, std::int64_t,             \
                                std::int64_t, std::int64_t, std::int64_t);     \
  template void gemm<T>(const T *, const T *, T *, std::int64_t, std::int64_t, \
                        std::int64_t, std::int64_t, bool, bool, const T *,     \
                        bool);                                                 \
  template void columnSum<T>(const T *, T *, std::int64_t, std::int64_t);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

} // namespace kiln::rt::host
