//===- DeviceEmulationRowTest.cpp - Fused row regions on the CPU ----------===//
//
// The fused row regions (runtime/cuda/device/RowRegion.cuh) under the CPU
// emulation (DeviceEmulation.h), against the host reference kernels
// composed as the region's ops, each result rounded to its dtype as the
// host rounds it, with DeviceEmulationTest.cpp's bounds:
//   - the per-row functions composed by hand as a generated kernel composes
//     them, f32 and bf16, widths of no whole vectors and of several passes
//     of blocks of one, two and eight warps, more rows than blocks;
//   - the kernels the code generator emits for row-regions.mlir
//     (generated_row_regions.py, in builds with the compiler), so that what
//     runs on a GPU is what is tested here.
//
//===----------------------------------------------------------------------===//

#include "DeviceEmulationTestSupport.h"

#include "runtime/host/Kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#ifdef KILN_GENERATED_ROW_REGIONS
#include KILN_GENERATED_ROW_REGIONS
#endif

using kiln::rt::host::testing::KernelTest;
using kiln::rt::host::testing::randomIds;
using namespace kiln::dev::testing;
namespace dev = kiln::dev;
namespace host = kiln::rt::host;

namespace {

template <typename T> class DeviceEmulationRowTest : public KernelTest {};
TYPED_TEST_SUITE(DeviceEmulationRowTest, StorageTypes, StorageTypeNames);

//===----------------------------------------------------------------------===//
// The row functions composed as a generated kernel composes them
//===----------------------------------------------------------------------===//

/// The shared-memory row of a T temporary of a fused row region.
template <typename T>
using SharedRow =
    std::conditional_t<std::is_same_v<T, float>, float, dev::RoundedBf16>;

/// The dynamic shared bytes of `count` temporary rows of `dim` (16-byte
/// multiples, as RowRegion.cpp lays them out).
std::size_t sharedRowBytes(int count, int dim) {
  return static_cast<std::size_t>(count) * ((dim * 4 + 15) / 16 * 16);
}

/// What a generated elementwise stage of nn.add does over one row
/// (RowRegion.cpp): V = 8 elements per access when the width allows, FP32,
/// a T result rounded to T.
template <typename T, int kThreads, typename TA, typename TB, typename TO>
void addRow(const TA *a, const TB *b, TO *out, int dim) {
  auto stage = [&](auto width) {
    constexpr int V = decltype(width)::value;
    for (int j = threadIdx.x * V; j < dim; j += kThreads * V) {
      float x[V], y[V], z[V];
      dev::loadElements<V>(a + j, x);
      dev::loadElements<V>(b + j, y);
      for (int e = 0; e < V; ++e)
        z[e] = std::is_same_v<T, float> ? x[e] + y[e]
                                        : dev::roundBf16(x[e] + y[e]);
      dev::storeElements<V>(out + j, z);
    }
  };
  if (dim % 8 == 0)
    stage(std::integral_constant<int, 8>{});
  else
    stage(std::integral_constant<int, 1>{});
}

/// The host's composition: a + b, rounded to T as the host rounds the op's
/// result.
template <typename T>
std::vector<double> addRef(const std::vector<double> &a,
                           const std::vector<double> &b) {
  std::vector<double> sum(a.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    sum[i] = representable<T>(a[i] + b[i]);
  return sum;
}

template <typename T> std::vector<double> rounded(std::vector<double> v) {
  for (double &x : v)
    x = representable<T>(x);
  return v;
}

/// Residual add + RMSNorm or LayerNorm (with or without bias) in one
/// region: the sum yielded (written, then re-read by the norm) or kept in
/// a shared row. Buffers aligned, as the plan aligns them.
template <typename T, int kThreads>
void checkAddNorm(std::int64_t rows, int dim) {
  SCOPED_TRACE("rows " + std::to_string(rows) + " dim " + std::to_string(dim) +
               " threads " + std::to_string(kThreads));
  const float eps = 1e-5f;
  const std::int64_t n = rows * dim;
  std::vector<double> h = randomValues<T>(n, 0.5, 2), o = randomValues<T>(n);
  std::vector<double> w = randomValues<T>(dim, 0.5, 1.5),
                      b = randomValues<T>(dim);
  Buffer<T> dH(h, 0), dO(o, 0), dW(w, 0), dB(b, 0);
  const std::vector<double> sumRef = addRef<T>(h, o);
  const EmulatedDim3 grid{
      static_cast<unsigned>(std::max<std::int64_t>(1, rows / 2))};
  enum class Norm { Rms, Layer, LayerNoBias };
  for (Norm norm : {Norm::Rms, Norm::Layer, Norm::LayerNoBias})
    for (bool yieldSum : {true, false}) {
      SCOPED_TRACE("norm " + std::to_string(static_cast<int>(norm)) +
                   " yield sum " + std::to_string(yieldSum));
      Buffer<T> sum(n, 0), out(n, 0);
      emulateKernel(
          grid, kThreads,
          [&] {
            __shared__ float scratch[kThreads / 32];
            SharedRow<T> *s0 = dev::sharedRow<SharedRow<T>>(0);
            for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
              auto stages = [&](auto *sumRow) {
                addRow<T, kThreads>(dH.data() + row * dim,
                                    dO.data() + row * dim, sumRow, dim);
                __syncthreads();
                T *outRow = out.data() + row * dim;
                if (norm == Norm::Rms)
                  dev::rmsNormOfRow<kThreads>(sumRow, dW.data(), outRow, dim,
                                              eps, scratch);
                else
                  dev::layerNormOfRow<kThreads>(sumRow, dW.data(),
                                                norm == Norm::Layer ? dB.data()
                                                                    : nullptr,
                                                outRow, dim, eps, scratch);
                __syncthreads();
              };
              if (yieldSum)
                stages(sum.data() + row * dim);
              else
                stages(s0);
            }
          },
          yieldSum ? 0 : sharedRowBytes(1, dim));
      std::vector<double> ref(n);
      if (norm == Norm::Rms)
        host::rmsNorm<double>(sumRef.data(), w.data(), ref.data(), rows, dim,
                              eps);
      else
        host::layerNorm<double>(sumRef.data(), w.data(),
                                norm == Norm::Layer ? b.data() : nullptr,
                                ref.data(), rows, dim, eps);
      EXPECT_CLOSE(out.values(), ref, kTolerance<T>);
      if (yieldSum) {
        EXPECT_CLOSE(sum.values(), sumRef, kTolerance<T>);
      }
    }
}

/// Backward: a = g1 + g2 (yielded), d = the RMSNorm or LayerNorm input
/// gradient of a (a shared row, rounded to T), r = resid + d (yielded).
template <typename T, int kThreads>
void checkNormGradAdd(std::int64_t rows, int dim) {
  SCOPED_TRACE("rows " + std::to_string(rows) + " dim " + std::to_string(dim) +
               " threads " + std::to_string(kThreads));
  const float eps = 1e-5f;
  const std::int64_t n = rows * dim;
  std::vector<double> g1 = randomValues<T>(n), g2 = randomValues<T>(n),
                      x = randomValues<T>(n, 1, 3), resid = randomValues<T>(n);
  std::vector<double> w = randomValues<T>(dim, 0.5, 1.5);
  Buffer<T> dG1(g1, 0), dG2(g2, 0), dX(x, 0), dW(w, 0), dResid(resid, 0);
  const std::vector<double> aRef = addRef<T>(g1, g2);
  for (bool layer : {false, true}) {
    SCOPED_TRACE(layer ? "layer_norm_grad" : "rms_norm_grad");
    Buffer<T> a(n, 0), r(n, 0);
    emulateKernel(
        {static_cast<unsigned>(std::max<std::int64_t>(1, rows / 2))}, kThreads,
        [&] {
          __shared__ float scratch[kThreads / 32];
          SharedRow<T> *s0 = dev::sharedRow<SharedRow<T>>(0);
          for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
            const long long at = row * dim;
            addRow<T, kThreads>(dG1.data() + at, dG2.data() + at, a.data() + at,
                                dim);
            __syncthreads();
            if (layer)
              dev::layerNormGradOfRow<kThreads>(a.data() + at, dX.data() + at,
                                                dW.data(), s0, dim, eps,
                                                scratch);
            else
              dev::rmsNormGradOfRow<kThreads>(a.data() + at, dX.data() + at,
                                              dW.data(), s0, dim, eps, scratch);
            __syncthreads();
            addRow<T, kThreads>(dResid.data() + at, s0, r.data() + at, dim);
            __syncthreads();
          }
        },
        sharedRowBytes(1, dim));
    std::vector<double> dRef(n);
    if (layer)
      host::layerNormGrad<double>(aRef.data(), x.data(), w.data(), dRef.data(),
                                  rows, dim, eps);
    else
      host::rmsNormGrad<double>(aRef.data(), x.data(), w.data(), dRef.data(),
                                rows, dim, eps);
    EXPECT_CLOSE(a.values(), aRef, kTolerance<T>);
    EXPECT_CLOSE(r.values(), addRef<T>(resid, rounded<T>(dRef)), kTolerance<T>);
  }
}

// Widths shorter than a warp's vectors, not a multiple of the vector width
// (scalar access), several passes of a block of two warps; rows more than
// the blocks (the row loop strides).
TYPED_TEST(DeviceEmulationRowTest, Norms) {
  using T = TypeParam;
  const std::pair<std::int64_t, int> shapes[] = {
      {3, 7}, {5, 64}, {7, 1000}, {3, 1004}};
  for (auto [rows, dim] : shapes) {
    checkAddNorm<T, 32>(rows, dim);
    checkAddNorm<T, 64>(rows, dim);
    checkNormGradAdd<T, 32>(rows, dim);
    checkNormGradAdd<T, 64>(rows, dim);
  }
  checkAddNorm<T, 256>(4, 2048);
  checkNormGradAdd<T, 256>(4, 2048);
}

/// Two RoPEs of one region sharing positions: q and k of different widths,
/// the same rows (tokens), forward and inverse, with positions or without
/// (the index within the sequence).
TYPED_TEST(DeviceEmulationRowTest, TwoRopes) {
  using T = TypeParam;
  const int batch = 2, seq = 5, headDim = 64, qHeads = 4, kHeads = 2;
  const float theta = 500000;
  const std::int64_t tokens = batch * seq;
  const int qWidth = qHeads * headDim, kWidth = kHeads * headDim;
  std::vector<double> q = randomValues<T>(tokens * qWidth),
                      k = randomValues<T>(tokens * kWidth);
  std::vector<std::int32_t> positions = randomIds(tokens, 200000);
  Buffer<T> dQ(q, 0), dK(k, 0);
  for (bool withPositions : {true, false})
    for (bool inverse : {false, true}) {
      SCOPED_TRACE("positions " + std::to_string(withPositions) + " inverse " +
                   std::to_string(inverse));
      Buffer<T> q2(tokens * qWidth, 0), k2(tokens * kWidth, 0);
      emulateKernel({3}, 32, [&] {
        for (long long row = blockIdx.x; row < tokens; row += gridDim.x) {
          const long long position = withPositions ? positions[row] : row % seq;
          dev::ropeOfRow<32>(dQ.data() + row * qWidth, q2.data() + row * qWidth,
                             position, qHeads, headDim, theta, inverse);
          __syncthreads();
          dev::ropeOfRow<32>(dK.data() + row * kWidth, k2.data() + row * kWidth,
                             position, kHeads, headDim, theta, inverse);
          __syncthreads();
        }
      });
      const std::int32_t *pos = withPositions ? positions.data() : nullptr;
      std::vector<double> qRef(tokens * qWidth), kRef(tokens * kWidth);
      host::rope<double>(q.data(), pos, qRef.data(), batch, seq, qHeads,
                         headDim, theta, inverse);
      host::rope<double>(k.data(), pos, kRef.data(), batch, seq, kHeads,
                         headDim, theta, inverse);
      EXPECT_CLOSE(q2.values(), qRef, kTolerance<T>);
      EXPECT_CLOSE(k2.values(), kRef, kTolerance<T>);
    }
}

/// GPT-2's embedding in one region: the token and position gathers into
/// shared rows, their sum yielded; a bad id sets the error flag and gathers
/// zeros.
TYPED_TEST(DeviceEmulationRowTest, EmbeddingAdd) {
  using T = TypeParam;
  const int vocab = 50, maxPositions = 16;
  const std::int64_t rows = 13;
  for (int dim : {7, 64, 200}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    std::vector<double> wte = randomValues<T>(vocab * dim),
                        wpe = randomValues<T>(maxPositions * dim);
    std::vector<std::int32_t> ids = randomIds(rows, vocab),
                              positions = randomIds(rows, maxPositions);
    ids[5] = vocab;
    Buffer<T> dWte(wte, 0), dWpe(wpe, 0), h(rows * dim, 0);
    int flag = 0;
    emulateKernel(
        {4}, 32,
        [&] {
          SharedRow<T> *s0 = dev::sharedRow<SharedRow<T>>(0);
          SharedRow<T> *s1 =
              dev::sharedRow<SharedRow<T>>(sharedRowBytes(1, dim));
          for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
            dev::embeddingOfRow<32>(dWte.data(), ids[row], vocab, s0, dim,
                                    &flag, row);
            __syncthreads();
            dev::embeddingOfRow<32>(dWpe.data(), positions[row], maxPositions,
                                    s1, dim, &flag, row);
            __syncthreads();
            addRow<T, 32>(s0, s1, h.data() + row * dim, dim);
            __syncthreads();
          }
        },
        sharedRowBytes(2, dim));
    EXPECT_EQ(flag, 6);
    std::vector<double> te(rows * dim, 0.0), pe(rows * dim);
    for (std::int64_t p = 0; p < rows; ++p)
      for (int j = 0; j < dim; ++j) {
        if (p != 5)
          te[p * dim + j] = wte[ids[p] * dim + j];
        pe[p * dim + j] = wpe[positions[p] * dim + j];
      }
    EXPECT_CLOSE(h.values(), addRef<T>(te, pe), kTolerance<T>);
  }
}

//===----------------------------------------------------------------------===//
// The generated kernels of row-regions.mlir
//===----------------------------------------------------------------------===//

#ifdef KILN_GENERATED_ROW_REGIONS

class GeneratedRowRegionTest : public KernelTest {};

using bf16 = __nv_bfloat16;
constexpr float kEps = 1e-5f;
/// Enough dynamic shared memory for any region below (the lit tests check
/// the sizes the plan declares).
constexpr std::size_t kGeneratedSharedBytes = 16 * 1024;

/// The grid of a generated launch: fewer blocks than rows, so the row loop
/// strides.
EmulatedDim3 gridFor(std::int64_t rows) {
  return {static_cast<unsigned>(std::max<std::int64_t>(1, rows / 2))};
}

// Residual add + RMSNorm (bf16) and + LayerNorm with bias (f32, width 36:
// scalar access).
TEST_F(GeneratedRowRegionTest, AddAndNorm) {
  {
    const std::int64_t rows = 15, dim = 64, n = rows * dim;
    std::vector<double> h = randomValues<bf16>(n, 0.5, 2),
                        o = randomValues<bf16>(n),
                        w = randomValues<bf16>(dim, 0.5, 1.5);
    Buffer<bf16> dH(h, 0), dO(o, 0), dW(w, 0), s(n, 0), y(n, 0);
    emulateKernel(gridFor(rows), kGeneratedRowRegionThreads0, [&] {
      kiln_generated_row_region_0(dH.data(), dO.data(), dW.data(), s.data(),
                                  y.data(), rows, kEps);
    });
    std::vector<double> sumRef = addRef<bf16>(h, o), ref(n);
    host::rmsNorm<double>(sumRef.data(), w.data(), ref.data(), rows, dim, kEps);
    EXPECT_CLOSE(s.values(), sumRef, kTolerance<bf16>);
    EXPECT_CLOSE(y.values(), ref, kTolerance<bf16>);
  }
  {
    const std::int64_t rows = 7, dim = 36, n = rows * dim;
    std::vector<double> h = randomValues<float>(n, 0.5, 2),
                        o = randomValues<float>(n),
                        w = randomValues<float>(dim, 0.5, 1.5),
                        b = randomValues<float>(dim);
    Buffer<float> dH(h, 0), dO(o, 0), dW(w, 0), dB(b, 0), s(n, 0), y(n, 0);
    emulateKernel(gridFor(rows), kGeneratedRowRegionThreads1, [&] {
      kiln_generated_row_region_1(dH.data(), dO.data(), dW.data(), dB.data(),
                                  s.data(), y.data(), rows, kEps);
    });
    std::vector<double> sumRef = addRef<float>(h, o), ref(n);
    host::layerNorm<double>(sumRef.data(), w.data(), b.data(), ref.data(), rows,
                            dim, kEps);
    EXPECT_CLOSE(s.values(), sumRef, kTolerance<float>);
    EXPECT_CLOSE(y.values(), ref, kTolerance<float>);
  }
}

/// Gradients summed, the norm's input gradient in a shared row, the
/// residual added: RMSNorm in bf16 (kernel 2), LayerNorm in f32 (kernel 3,
/// four warps).
template <typename T, typename Kernel>
void checkGeneratedNormGrad(Kernel kernel, int threads, std::int64_t rows,
                            std::int64_t dim, bool layer) {
  const std::int64_t n = rows * dim;
  std::vector<double> g1 = randomValues<T>(n), g2 = randomValues<T>(n),
                      x = randomValues<T>(n, 1, 3), resid = randomValues<T>(n),
                      w = randomValues<T>(dim, 0.5, 1.5);
  Buffer<T> dG1(g1, 0), dG2(g2, 0), dX(x, 0), dW(w, 0), dResid(resid, 0),
      a(n, 0), r(n, 0);
  emulateKernel(
      gridFor(rows), threads,
      [&] {
        kernel(dG1.data(), dG2.data(), dX.data(), dW.data(), dResid.data(),
               a.data(), r.data(), rows, kEps);
      },
      kGeneratedSharedBytes);
  std::vector<double> aRef = addRef<T>(g1, g2), dRef(n);
  if (layer)
    host::layerNormGrad<double>(aRef.data(), x.data(), w.data(), dRef.data(),
                                rows, dim, kEps);
  else
    host::rmsNormGrad<double>(aRef.data(), x.data(), w.data(), dRef.data(),
                              rows, dim, kEps);
  EXPECT_CLOSE(a.values(), aRef, kTolerance<T>);
  EXPECT_CLOSE(r.values(), addRef<T>(resid, rounded<T>(dRef)), kTolerance<T>);
}

TEST_F(GeneratedRowRegionTest, NormGradAndResidual) {
  checkGeneratedNormGrad<bf16>(kiln_generated_row_region_2,
                               kGeneratedRowRegionThreads2, 6, 200, false);
  checkGeneratedNormGrad<float>(kiln_generated_row_region_3,
                                kGeneratedRowRegionThreads3, 5, 1000, true);
}

// Inverse RoPE of q and k sharing positions (bf16).
TEST_F(GeneratedRowRegionTest, TwoRopes) {
  const int batch = 2, seq = 5, headDim = 64;
  const std::int64_t tokens = batch * seq;
  const float theta = 500000;
  std::vector<double> q = randomValues<bf16>(tokens * 128),
                      k = randomValues<bf16>(tokens * 64);
  std::vector<std::int32_t> positions = randomIds(tokens, 200000);
  Buffer<bf16> dQ(q, 0), dK(k, 0), q2(tokens * 128, 0), k2(tokens * 64, 0);
  emulateKernel(gridFor(tokens), kGeneratedRowRegionThreads4, [&] {
    kiln_generated_row_region_4(dQ.data(), dK.data(), positions.data(),
                                q2.data(), k2.data(), tokens, theta, theta);
  });
  std::vector<double> qRef(tokens * 128), kRef(tokens * 64);
  host::rope<double>(q.data(), positions.data(), qRef.data(), batch, seq, 2,
                     headDim, theta, /*inverse=*/true);
  host::rope<double>(k.data(), positions.data(), kRef.data(), batch, seq, 1,
                     headDim, theta, /*inverse=*/true);
  EXPECT_CLOSE(q2.values(), qRef, kTolerance<bf16>);
  EXPECT_CLOSE(k2.values(), kRef, kTolerance<bf16>);
}

// Token and position embeddings summed (bf16), a bad id at position 5.
TEST_F(GeneratedRowRegionTest, EmbeddingSum) {
  const int vocab = 50, maxPositions = 16, dim = 72;
  const std::int64_t rows = 13;
  std::vector<double> wte = randomValues<bf16>(vocab * dim),
                      wpe = randomValues<bf16>(maxPositions * dim);
  std::vector<std::int32_t> ids = randomIds(rows, vocab),
                            positions = randomIds(rows, maxPositions);
  ids[5] = -1;
  Buffer<bf16> dWte(wte, 0), dWpe(wpe, 0), h(rows * dim, 0);
  int flag = 0;
  emulateKernel(
      gridFor(rows), kGeneratedRowRegionThreads5,
      [&] {
        kiln_generated_row_region_5(dWte.data(), ids.data(), dWpe.data(),
                                    positions.data(), h.data(), rows, &flag);
      },
      kGeneratedSharedBytes);
  EXPECT_EQ(flag, 6);
  std::vector<double> te(rows * dim, 0.0), pe(rows * dim);
  for (std::int64_t p = 0; p < rows; ++p)
    for (int j = 0; j < dim; ++j) {
      if (p != 5)
        te[p * dim + j] = wte[ids[p] * dim + j];
      pe[p * dim + j] = wpe[positions[p] * dim + j];
    }
  EXPECT_CLOSE(h.values(), addRef<bf16>(te, pe), kTolerance<bf16>);
}

// An f32 residual cast to bf16 and added, RMSNorm into a shared row, then
// squared and GELU (tanh) in registers.
TEST_F(GeneratedRowRegionTest, ElementwiseAroundANorm) {
  const std::int64_t rows = 4, dim = 64, n = rows * dim;
  std::vector<double> x = randomValues<float>(n), h = randomValues<bf16>(n),
                      w = randomValues<bf16>(dim, 0.5, 1.5);
  Buffer<float> dX(x, 0);
  Buffer<bf16> dH(h, 0), dW(w, 0), s(n, 0), y(n, 0);
  emulateKernel(
      gridFor(rows), kGeneratedRowRegionThreads6,
      [&] {
        kiln_generated_row_region_6(dX.data(), dH.data(), dW.data(), s.data(),
                                    y.data(), rows, kEps);
      },
      kGeneratedSharedBytes);
  std::vector<double> sumRef = addRef<bf16>(h, rounded<bf16>(x)), norm(n),
                      squared(n), ref(n);
  host::rmsNorm<double>(sumRef.data(), w.data(), norm.data(), rows, dim, kEps);
  norm = rounded<bf16>(norm);
  for (std::int64_t i = 0; i < n; ++i)
    squared[i] = representable<bf16>(norm[i] * norm[i]);
  host::gelu<double>(squared.data(), ref.data(), n, /*tanhApprox=*/true);
  EXPECT_CLOSE(s.values(), sumRef, kTolerance<bf16>);
  EXPECT_CLOSE(y.values(), rounded<bf16>(ref), kTolerance<bf16>);
}

// SwiGLU reading gate and up in place from the packed gate|up output (rows
// 192 elements apart; bf16), and its gradient writing dgate and dup into
// the packed gradient (f32): the rows' pitch is in the generated code.
TEST_F(GeneratedRowRegionTest, RowStridedViewsInAndOut) {
  const std::int64_t rows = 6, width = 96, pitch = 2 * width;
  std::vector<double> gu = randomValues<bf16>(rows * pitch);
  Buffer<bf16> dGu(gu, 0), y(rows * width, 0);
  emulateKernel(
      gridFor(rows), kGeneratedRowRegionThreads7,
      [&] {
        kiln_generated_row_region_7(dGu.data(), dGu.data() + width, y.data(),
                                    rows);
      },
      kGeneratedSharedBytes);
  std::vector<double> g(rows * width), u(rows * width), ref(rows * width);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < width; ++j) {
      g[r * width + j] = gu[r * pitch + j];
      u[r * width + j] = gu[r * pitch + width + j];
    }
  host::swiglu<double>(g.data(), u.data(), ref.data(), ref.size());
  EXPECT_CLOSE(y.values(), rounded<bf16>(ref), kTolerance<bf16>);

  std::vector<double> dy = randomValues<float>(rows * width),
                      g32 = randomValues<float>(rows * width),
                      u32 = randomValues<float>(rows * width);
  Buffer<float> dDy(dy, 0), dG(g32, 0), dU(u32, 0), packed(rows * pitch, 0);
  emulateKernel(
      gridFor(rows), kGeneratedRowRegionThreads8,
      [&] {
        kiln_generated_row_region_8(dDy.data(), dG.data(), dU.data(),
                                    packed.data(), packed.data() + width, rows);
      },
      kGeneratedSharedBytes);
  std::vector<double> dg(rows * width), du(rows * width),
      packedRef(rows * pitch);
  host::swigluGrad<double>(dy.data(), g32.data(), u32.data(), dg.data(),
                           du.data(), dg.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < width; ++j) {
      packedRef[r * pitch + j] = dg[r * width + j];
      packedRef[r * pitch + width + j] = du[r * width + j];
    }
  EXPECT_CLOSE(packed.values(), packedRef, kTolerance<float>);
}

#endif // KILN_GENERATED_ROW_REGIONS

} // namespace
