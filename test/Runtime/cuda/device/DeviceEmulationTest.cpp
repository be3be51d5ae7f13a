//===- DeviceEmulationTest.cpp - The device library on the CPU ------------===//
//
// Every kiln::dev kernel function, run under DeviceEmulation.h (blocks in
// turn, threads as fibers) on fresh random data with poisoned outputs and
// compared with the host reference kernels in FP64, for f32 and bf16
// storage: the logic of the GPU code (row and column splits, vector and
// scalar paths, block reductions, online softmax, GQA, causal and packed
// documents, error flags, the row functions composed as a fused row region
// composes them) is tested on machines without a GPU. Bounds are
// DeviceKernelTest.cpp's: 1e-5 for f32 outputs and FP32 results of exact
// inputs, 2e-2 for bf16 outputs. Shapes are small (emulation switches
// fibers at every shuffle) but cover several warps and blocks per row.
//
//===----------------------------------------------------------------------===//

#include "DeviceEmulation.h"

#include "runtime/cuda/FlashAttention.h"
#include "runtime/cuda/device/kiln_device.cuh"
#include "runtime/host/Kernels.h"

#include "../../host/KernelTestSupport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

using kiln::rt::host::testing::KernelTest;
using kiln::rt::host::testing::randomIds;
using kiln::rt::host::testing::randomVector;
using kiln::rt::host::testing::relativeError;
namespace dev = kiln::dev;
namespace host = kiln::rt::host;

namespace {

template <typename T>
constexpr double kTolerance = std::is_same_v<T, float> ? 1e-5 : 2e-2;
/// FP32 results (statistics, lse, losses, norms) of exact inputs.
constexpr double kFloatTolerance = 1e-5;

/// The value T holds for x.
template <typename T> double representable(double x) {
  return dev::toFloat(dev::fromFloat<T>(static_cast<float>(x)));
}

/// n values uniform in [lo, hi) that T holds exactly.
template <typename T>
std::vector<double> randomValues(std::int64_t n, double lo = -1.0,
                                 double hi = 1.0) {
  std::vector<double> values = randomVector<double>(n, lo, hi);
  for (double &x : values)
    x = representable<T>(x);
  return values;
}

template <typename T> std::vector<double> widen(const T *p, std::int64_t n) {
  std::vector<double> values(n);
  for (std::int64_t i = 0; i < n; ++i)
    values[i] = dev::toFloat(p[i]);
  return values;
}

/// A device-style buffer of T: NaN-poisoned, its data starting `offset`
/// elements past a 16-byte boundary (1 makes the vector path impossible).
template <typename T> class Buffer {
public:
  Buffer(std::int64_t n, int offset)
      : n(n), offset(offset), storage(new (std::align_val_t(16)) T[n + 8]) {
    std::fill(storage.get(), storage.get() + n + 8,
              dev::fromFloat<T>(std::numeric_limits<float>::quiet_NaN()));
  }
  Buffer(const std::vector<double> &values, int offset)
      : Buffer(static_cast<std::int64_t>(values.size()), offset) {
    for (std::int64_t i = 0; i < n; ++i)
      data()[i] = dev::fromFloat<T>(static_cast<float>(values[i]));
  }
  T *data() { return storage.get() + offset; }
  std::vector<double> values() { return widen(data(), n); }

private:
  struct AlignedDelete {
    void operator()(T *p) const {
      ::operator delete[](p, std::align_val_t(16));
    }
  };
  std::int64_t n;
  int offset;
  std::unique_ptr<T[], AlignedDelete> storage;
};

/// FP32 outputs (statistics, losses) poisoned with NaN.
std::vector<float> poisonedFloats(std::int64_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

std::vector<double> widen(const std::vector<float> &v) {
  return std::vector<double>(v.begin(), v.end());
}

template <typename T> class DeviceEmulationTest : public KernelTest {};
using StorageTypes = ::testing::Types<float, __nv_bfloat16>;
struct StorageTypeNames {
  template <typename T> static std::string GetName(int) {
    return std::is_same_v<T, float> ? "f32" : "bf16";
  }
};
TYPED_TEST_SUITE(DeviceEmulationTest, StorageTypes, StorageTypeNames);

#define EXPECT_CLOSE(got, ref, tolerance)                                      \
  EXPECT_LE(relativeError((got), (ref)), (tolerance)) << #got

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

/// Every norm function on rows x dim with kThreads per row block; offset 1
/// forces the scalar path. The row grid is half the rows (the row loop
/// strides), the column grid at most two blocks of 64 by three row chunks
/// (two-stage column reductions: the last chunk short or empty).
template <typename T, int kThreads>
void checkNorms(std::int64_t rows, int dim, int offset) {
  SCOPED_TRACE("rows " + std::to_string(rows) + " dim " + std::to_string(dim) +
               " offset " + std::to_string(offset) + " threads " +
               std::to_string(kThreads));
  const float eps = 1e-5f;
  const std::int64_t n = rows * dim;
  std::vector<double> x = randomValues<T>(n, 1, 3), dy = randomValues<T>(n);
  std::vector<double> w = randomValues<T>(dim, 0.5, 1.5),
                      b = randomValues<T>(dim);
  Buffer<T> dX(x, offset), dDy(dy, offset), dW(w, offset), dB(b, offset);
  const EmulatedDim3 rowGrid{
      static_cast<unsigned>(std::max<std::int64_t>(1, rows / 2))};
  const unsigned chunks = 3;
  const EmulatedDim3 columnGrid{
      std::min(2u, static_cast<unsigned>((dim + 63) / 64)), chunks};
  std::vector<float> partials = poisonedFloats(chunks * dim);
  auto finish = [&](Buffer<T> &y) {
    emulateKernel({columnGrid.x}, 64, [&] {
      dev::finishColumns<T>(partials.data(), y.data(), chunks, dim);
    });
  };
  std::vector<double> ref(n), columnRef(dim);

  Buffer<T> y(n, offset);
  emulateKernel(rowGrid, kThreads, [&] {
    dev::rmsNorm<T, kThreads>(dX.data(), dW.data(), y.data(), rows, dim, eps);
  });
  host::rmsNorm<double>(x.data(), w.data(), ref.data(), rows, dim, eps);
  EXPECT_CLOSE(y.values(), ref, kTolerance<T>);

  Buffer<T> dx(n, offset);
  emulateKernel(rowGrid, kThreads, [&] {
    dev::rmsNormGrad<T, kThreads>(dDy.data(), dX.data(), dW.data(), dx.data(),
                                  rows, dim, eps);
  });
  host::rmsNormGrad<double>(dy.data(), x.data(), w.data(), ref.data(), rows,
                            dim, eps);
  EXPECT_CLOSE(dx.values(), ref, kTolerance<T>);

  for (bool withBias : {true, false}) {
    Buffer<T> ln(n, offset);
    emulateKernel(rowGrid, kThreads, [&] {
      dev::layerNorm<T, kThreads>(dX.data(), dW.data(),
                                  withBias ? dB.data() : nullptr, ln.data(),
                                  rows, dim, eps);
    });
    host::layerNorm<double>(x.data(), w.data(), withBias ? b.data() : nullptr,
                            ref.data(), rows, dim, eps);
    EXPECT_CLOSE(ln.values(), ref, kTolerance<T>) << "bias " << withBias;
  }

  Buffer<T> lnDx(n, offset);
  emulateKernel(rowGrid, kThreads, [&] {
    dev::layerNormGrad<T, kThreads>(dDy.data(), dX.data(), dW.data(),
                                    lnDx.data(), rows, dim, eps);
  });
  host::layerNormGrad<double>(dy.data(), x.data(), w.data(), ref.data(), rows,
                              dim, eps);
  EXPECT_CLOSE(lnDx.values(), ref, kTolerance<T>);

  std::vector<float> rstd = poisonedFloats(rows);
  Buffer<T> dw(dim, offset);
  emulateKernel(rowGrid, kThreads, [&] {
    dev::rmsRowStats<T, kThreads>(dX.data(), rstd.data(), rows, dim, eps);
  });
  emulateKernel(columnGrid, 64, [&] {
    dev::rmsNormWeightGradPartials<T>(dDy.data(), dX.data(), rstd.data(),
                                      partials.data(), rows, dim);
  });
  finish(dw);
  host::rmsNormWeightGrad<double>(dy.data(), x.data(), columnRef.data(), rows,
                                  dim, eps);
  EXPECT_CLOSE(dw.values(), columnRef, kTolerance<T>);

  std::vector<float> mean = poisonedFloats(rows),
                     layerRstd = poisonedFloats(rows);
  Buffer<T> lnDw(dim, offset);
  emulateKernel(rowGrid, kThreads, [&] {
    dev::layerRowStats<T, kThreads>(dX.data(), mean.data(), layerRstd.data(),
                                    rows, dim, eps);
  });
  emulateKernel(columnGrid, 64, [&] {
    dev::layerNormWeightGradPartials<T>(dDy.data(), dX.data(), mean.data(),
                                        layerRstd.data(), partials.data(), rows,
                                        dim);
  });
  finish(lnDw);
  host::layerNormWeightGrad<double>(dy.data(), x.data(), columnRef.data(), rows,
                                    dim, eps);
  EXPECT_CLOSE(lnDw.values(), columnRef, kTolerance<T>);

  Buffer<T> bias(dim, offset);
  emulateKernel(columnGrid, 64, [&] {
    dev::columnSumPartials<T>(dDy.data(), partials.data(), rows, dim);
  });
  finish(bias);
  host::columnSum<double>(dy.data(), columnRef.data(), rows, dim);
  EXPECT_CLOSE(bias.values(), columnRef, kTolerance<T>);
}

// Rows shorter than a vector, shorter and longer than the block, of whole
// vectors and not. (No row under 3: see DeviceKernelTest.cpp.)
TYPED_TEST(DeviceEmulationTest, Norms) {
  using T = TypeParam;
  const std::pair<std::int64_t, int> shapes[] = {
      {1, 3}, {3, 7}, {5, 64}, {7, 1000}, {3, 4104}};
  for (auto [rows, dim] : shapes)
    for (int offset : {0, 1}) {
      checkNorms<T, 32>(rows, dim, offset);
      checkNorms<T, 64>(rows, dim, offset);
    }
  checkNorms<T, 256>(4, 2048, 0);
}

//===----------------------------------------------------------------------===//
// Elementwise math and fill
//===----------------------------------------------------------------------===//

TYPED_TEST(DeviceEmulationTest, ElementwiseAndFill) {
  using T = TypeParam;
  const std::int64_t n = 1001;
  std::vector<double> x = randomValues<T>(n, -4, 4),
                      up = randomValues<T>(n, -2, 2), dy = randomValues<T>(n);
  std::vector<double> got(n), got2(n), ref(n), ref2(n);
  auto stored = [](float value) { return representable<T>(value); };
  for (bool tanhApprox : {false, true}) {
    for (std::int64_t i = 0; i < n; ++i)
      got[i] = stored(dev::gelu(x[i], tanhApprox));
    host::gelu<double>(x.data(), ref.data(), n, tanhApprox);
    EXPECT_CLOSE(got, ref, kTolerance<T>);
    for (std::int64_t i = 0; i < n; ++i)
      got[i] = stored(dev::geluGrad(dy[i], x[i], tanhApprox));
    host::geluGrad<double>(dy.data(), x.data(), ref.data(), n, tanhApprox);
    EXPECT_CLOSE(got, ref, kTolerance<T>);
  }
  for (std::int64_t i = 0; i < n; ++i)
    got[i] = stored(dev::swiglu(x[i], up[i]));
  host::swiglu<double>(x.data(), up.data(), ref.data(), n);
  EXPECT_CLOSE(got, ref, kTolerance<T>);
  for (std::int64_t i = 0; i < n; ++i) {
    got[i] = stored(dev::swigluGate(dy[i], x[i], up[i]));
    got2[i] = stored(dev::swigluUp(dy[i], x[i]));
  }
  host::swigluGrad<double>(dy.data(), x.data(), up.data(), ref.data(),
                           ref2.data(), n);
  EXPECT_CLOSE(got, ref, kTolerance<T>);
  EXPECT_CLOSE(got2, ref2, kTolerance<T>);

  Buffer<T> filled(n, 1);
  emulateKernel({3}, 64, [&] { dev::fill<T>(filled.data(), n, 0.3f); });
  EXPECT_EQ(filled.values(), std::vector<double>(n, stored(0.3f)));
}

/// The element access of generated elementwise bodies (loadElements,
/// storeElements, roundBf16): widening is exact and stores round to
/// nearest-even, the same bits in groups of 8 (two vectors of f32, one of
/// bf16) as one by one.
TYPED_TEST(DeviceEmulationTest, ElementAccessOfGeneratedBodies) {
  using T = TypeParam;
  constexpr int V = 8;
  constexpr std::int64_t n = 3 * V;
  std::vector<double> x = randomValues<T>(n, -4.0, 4.0);
  std::vector<double> unrounded = randomVector<double>(n, -4.0, 4.0);
  Buffer<T> in(x, 0), vectorOut(n, 0), scalarOut(n, 0);
  for (std::int64_t base = 0; base < n; base += V) {
    float loaded[V], values[V];
    dev::loadElements<V>(in.data() + base, loaded);
    for (int e = 0; e < V; ++e) {
      float one[1];
      dev::loadElements<1>(in.data() + base + e, one);
      EXPECT_EQ(loaded[e], static_cast<float>(x[base + e]));
      EXPECT_EQ(one[0], loaded[e]);
      values[e] = static_cast<float>(unrounded[base + e]);
      const float single[1] = {values[e]};
      dev::storeElements<1>(scalarOut.data() + base + e, single);
    }
    dev::storeElements<V>(vectorOut.data() + base, values);
  }
  std::vector<double> expected(n);
  for (std::int64_t i = 0; i < n; ++i)
    expected[i] = representable<T>(unrounded[i]);
  EXPECT_EQ(vectorOut.values(), expected);
  EXPECT_EQ(scalarOut.values(), expected);

  // roundBf16 against round-to-nearest-even on the bits.
  for (double u : unrounded) {
    const float f = static_cast<float>(u);
    std::uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
    float rounded;
    std::memcpy(&rounded, &bits, sizeof rounded);
    EXPECT_EQ(dev::roundBf16(f), rounded) << "x = " << f;
  }
}

//===----------------------------------------------------------------------===//
// Fused row regions (RowRegion.cuh): the row functions composed as the
// generated kernel composes them
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
TYPED_TEST(DeviceEmulationTest, RowRegionNorms) {
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
TYPED_TEST(DeviceEmulationTest, RowRegionTwoRopes) {
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
TYPED_TEST(DeviceEmulationTest, RowRegionEmbeddingAdd) {
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
// Rope, embedding, cross-entropy
//===----------------------------------------------------------------------===//

TYPED_TEST(DeviceEmulationTest, Rope) {
  using T = TypeParam;
  struct RopeCase {
    int batch, seq, heads, headDim;
    float theta;
    bool positions, inverse, inPlace;
  };
  const RopeCase cases[] = {{2, 5, 3, 64, 10000, false, false, false},
                            {1, 7, 4, 128, 500000, true, true, true},
                            {1, 3, 2, 256, 10000, true, false, false},
                            {3, 2, 2, 6, 10000, true, true, false}};
  for (const RopeCase &c : cases) {
    SCOPED_TRACE("headDim " + std::to_string(c.headDim));
    const std::int64_t tokens = std::int64_t(c.batch) * c.seq;
    const std::int64_t n = tokens * c.heads * c.headDim;
    std::vector<double> x = randomValues<T>(n);
    std::vector<std::int32_t> positions = randomIds(tokens, 200000);
    Buffer<T> dX(x, 0), y(n, 0);
    T *out = c.inPlace ? dX.data() : y.data();
    emulateKernel(
        {static_cast<unsigned>(std::max<std::int64_t>(1, tokens / 2))}, 32,
        [&] {
          dev::rope<T, 32>(dX.data(), c.positions ? positions.data() : nullptr,
                           out, c.batch, c.seq, c.heads, c.headDim, c.theta,
                           c.inverse);
        });
    std::vector<double> ref(n);
    host::rope<double>(x.data(), c.positions ? positions.data() : nullptr,
                       ref.data(), c.batch, c.seq, c.heads, c.headDim, c.theta,
                       c.inverse);
    EXPECT_CLOSE(c.inPlace ? dX.values() : y.values(), ref, kTolerance<T>);
  }
}

TYPED_TEST(DeviceEmulationTest, EmbeddingAndItsGradient) {
  using T = TypeParam;
  const int vocab = 50;
  const std::int64_t numIds = 67;
  for (int dim : {7, 64, 200})
    for (int offset : {0, 1}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + " offset " +
                   std::to_string(offset));
      std::vector<double> table = randomValues<T>(vocab * dim);
      std::vector<std::int32_t> ids = randomIds(numIds, vocab);
      ids[5] = -1;
      ids[9] = vocab;
      Buffer<T> dTable(table, offset), y(numIds * dim, offset);
      int flag = 0;
      emulateKernel({30}, 32, [&] {
        dev::embedding<T, 32>(dTable.data(), ids.data(), y.data(), numIds,
                              vocab, dim, &flag);
      });
      EXPECT_EQ(flag, 6); // blocks run in order: position 5 comes first
      std::vector<double> got = y.values();
      for (std::int64_t p = 0; p < numIds; ++p)
        for (int j = 0; j < dim; ++j)
          ASSERT_EQ(got[p * dim + j],
                    (p == 5 || p == 9) ? 0.0 : table[ids[p] * dim + j]);

      ids[5] = ids[6]; // repeats, all valid
      ids[9] = ids[6];
      std::vector<double> dy = randomValues<T>(numIds * dim);
      Buffer<T> dDy(dy, offset);
      std::vector<float> dtable = poisonedFloats(vocab * dim);
      // Three vocabulary ranges: every block scans every id.
      emulateKernel({2, 3}, 64, [&] {
        dev::embeddingGradColumns<T>(dDy.data(), ids.data(), dtable.data(),
                                     numIds, vocab, dim);
      });
      std::vector<double> ref(vocab * dim);
      host::embeddingGrad<double>(dy.data(), ids.data(), ref.data(), numIds,
                                  vocab, dim);
      EXPECT_CLOSE(widen(dtable), ref, kFloatTolerance);
    }
}

template <typename T, int kThreads> void checkCrossEntropy(int vocab) {
  SCOPED_TRACE("vocab " + std::to_string(vocab) + " threads " +
               std::to_string(kThreads));
  const std::int64_t rows = 13, ignoreIndex = -100;
  std::vector<double> logits = randomValues<T>(rows * vocab, -4, 4);
  std::vector<std::int32_t> targets = randomIds(rows, vocab);
  for (std::int64_t r = 0; r < rows; r += 5)
    targets[r] = ignoreIndex;
  Buffer<T> dLogits(logits, 0);
  std::vector<float> rowLoss = poisonedFloats(rows), loss = poisonedFloats(1),
                     count = poisonedFloats(1);
  int flag = 0;
  emulateKernel({5}, kThreads, [&] {
    dev::crossEntropyRows<T, kThreads>(dLogits.data(), targets.data(),
                                       rowLoss.data(), rows, vocab, ignoreIndex,
                                       &flag);
  });
  EXPECT_EQ(flag, 0);
  emulateKernel({1}, 64, [&] {
    dev::crossEntropyReduce<64>(rowLoss.data(), targets.data(), loss.data(),
                                rows, ignoreIndex);
  });
  emulateKernel({1}, 32, [&] {
    dev::countValid<32>(targets.data(), rows, ignoreIndex, count.data());
  });
  EXPECT_CLOSE(widen(loss),
               std::vector<double>{host::crossEntropy<double>(
                   logits.data(), targets.data(), rows, vocab, ignoreIndex)},
               kFloatTolerance);
  EXPECT_EQ(count[0], static_cast<float>(std::count_if(
                          targets.begin(), targets.end(),
                          [&](std::int32_t t) { return t != ignoreIndex; })));

  const float dloss = 0.75f;
  Buffer<T> dlogits(rows * vocab, 0);
  emulateKernel({4}, kThreads, [&] {
    dev::crossEntropyGrad<T, kThreads>(&dloss, count.data(), dLogits.data(),
                                       targets.data(), dlogits.data(), rows,
                                       vocab, ignoreIndex);
  });
  std::vector<double> ref(rows * vocab);
  host::crossEntropyGrad<double>(dloss, logits.data(), targets.data(),
                                 ref.data(), rows, vocab, ignoreIndex);
  EXPECT_CLOSE(dlogits.values(), ref, kTolerance<T>);
}

TYPED_TEST(DeviceEmulationTest, CrossEntropy) {
  using T = TypeParam;
  for (int vocab : {8, 1000, 5003}) {
    checkCrossEntropy<T, 32>(vocab);
    checkCrossEntropy<T, 128>(vocab);
  }
  // A target outside the vocabulary: flagged (row + 1), NaN loss.
  const std::int64_t rows = 4;
  const int vocab = 10;
  Buffer<T> logits(randomValues<T>(rows * vocab), 0);
  std::vector<std::int32_t> targets = {1, 2, vocab, 3};
  std::vector<float> rowLoss = poisonedFloats(rows);
  int flag = 0;
  emulateKernel({4}, 32, [&] {
    dev::crossEntropyRows<T, 32>(logits.data(), targets.data(), rowLoss.data(),
                                 rows, vocab, -100, &flag);
  });
  EXPECT_EQ(flag, 3);
  EXPECT_TRUE(std::isnan(rowLoss[2]));
  EXPECT_TRUE(std::isfinite(rowLoss[3]));
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

/// One attention case: its shape, random inputs that T holds exactly, and
/// the FP64 host reference (host::attentionForward, then
/// host::attentionBackward from the reference's out as T stores it).
template <typename T> struct AttentionCase {
  int batch, seq, heads, kvHeads, headDim;
  bool causal;
  std::vector<std::int32_t> cuSeqlens; ///< empty: none
  std::int64_t qSize, kvSize, rows;
  float scale;
  std::vector<double> q, k, v, dout, out, outStored, dq, dk, dv;
  std::vector<float> lse;

  AttentionCase(int batch, int seq, int heads, int kvHeads, int headDim,
                bool causal, std::vector<std::int32_t> cuSeqlensIn)
      : batch(batch), seq(seq), heads(heads), kvHeads(kvHeads),
        headDim(headDim), causal(causal), cuSeqlens(std::move(cuSeqlensIn)),
        qSize(std::int64_t(batch) * seq * heads * headDim),
        kvSize(std::int64_t(batch) * seq * kvHeads * headDim),
        rows(std::int64_t(batch) * heads * seq),
        scale(1.0f / std::sqrt(static_cast<float>(headDim))),
        q(randomValues<T>(qSize, -2, 2)), k(randomValues<T>(kvSize, -2, 2)),
        v(randomValues<T>(kvSize)), dout(randomValues<T>(qSize)), out(qSize),
        dq(qSize), dk(kvSize), dv(kvSize), lse(rows) {
    host::attentionForward<double>(q.data(), k.data(), v.data(), out.data(),
                                   lse.data(), batch, seq, heads, kvHeads,
                                   headDim, scale, causal, cu(), numCu());
    outStored = out;
    for (double &x : outStored)
      x = representable<T>(x);
    host::attentionBackward<double>(
        dout.data(), q.data(), k.data(), v.data(), outStored.data(), lse.data(),
        dq.data(), dk.data(), dv.data(), batch, seq, heads, kvHeads, headDim,
        scale, causal, cu(), numCu());
  }

  const std::int32_t *cu() const {
    return cuSeqlens.empty() ? nullptr : cuSeqlens.data();
  }
  int numCu() const { return static_cast<int>(cuSeqlens.size()); }
  std::string describe() const {
    return "batch " + std::to_string(batch) + " seq " + std::to_string(seq) +
           " heads " + std::to_string(heads) + " kvHeads " +
           std::to_string(kvHeads) + " headDim " + std::to_string(headDim) +
           (causal ? " causal" : " full") +
           (cuSeqlens.empty() ? "" : " cu_seqlens");
  }
};

/// Forward, both delta launches, and the backward of one case against
/// the host reference.
template <typename T, int kHeadDim, int kThreads>
void checkAttention(int batch, int seq, int heads, int kvHeads, bool causal,
                    std::vector<std::int32_t> cuSeqlens = {}) {
  const AttentionCase<T> c(batch, seq, heads, kvHeads, kHeadDim, causal,
                           std::move(cuSeqlens));
  SCOPED_TRACE(c.describe());
  const EmulatedDim3 grid{unsigned(seq), unsigned(heads), unsigned(batch)};
  const EmulatedDim3 kvGrid{unsigned(seq), unsigned(kvHeads), unsigned(batch)};

  Buffer<T> dQ(c.q, 0), dK(c.k, 0), dV(c.v, 0), dDout(c.dout, 0),
      out(c.qSize, 0);
  std::vector<float> lse = poisonedFloats(c.rows);
  emulateKernel(grid, kThreads, [&] {
    dev::attentionForward<T, kHeadDim, kThreads>(
        dQ.data(), dK.data(), dV.data(), out.data(), lse.data(), batch, seq,
        heads, kvHeads, c.scale, causal, c.cu(), c.numCu());
  });
  EXPECT_CLOSE(out.values(), c.out, kTolerance<T>);
  EXPECT_CLOSE(widen(lse), widen(c.lse), kFloatTolerance);

  // The backward reads the reference's out as T stores it, and its lse.
  Buffer<T> dOut(c.outStored, 0);
  std::vector<float> delta = poisonedFloats(c.rows),
                     delta1d = poisonedFloats(c.rows);
  emulateKernel(grid, 32, [&] {
    dev::attentionBackwardPreprocess<T, 32>(
        dDout.data(), dOut.data(), delta.data(), batch, seq, heads, kHeadDim);
  });
  emulateKernel({3}, 64, [&] {
    dev::attentionBackwardPreprocess<T, 64>(
        dDout.data(), dOut.data(), delta1d.data(), batch, seq, heads, kHeadDim);
  });
  EXPECT_EQ(widen(delta1d), widen(delta));

  Buffer<T> dq(c.qSize, 0), dk(c.kvSize, 0), dv(c.kvSize, 0);
  emulateKernel(grid, kThreads, [&] {
    dev::attentionBackwardQuery<T, kHeadDim, kThreads>(
        dDout.data(), dQ.data(), dK.data(), dV.data(), c.lse.data(),
        delta.data(), dq.data(), batch, seq, heads, kvHeads, c.scale, causal,
        c.cu(), c.numCu());
  });
  emulateKernel(kvGrid, kThreads, [&] {
    dev::attentionBackwardKeyValue<T, kHeadDim, kThreads>(
        dDout.data(), dQ.data(), dK.data(), dV.data(), c.lse.data(),
        delta.data(), dk.data(), dv.data(), batch, seq, heads, kvHeads, c.scale,
        causal, c.cu(), c.numCu());
  });
  EXPECT_CLOSE(dq.values(), c.dq, kTolerance<T>);
  EXPECT_CLOSE(dk.values(), c.dk, kTolerance<T>);
  EXPECT_CLOSE(dv.values(), c.dv, kTolerance<T>);
}

// GQA groups 1, 2 and 4; sequences shorter and longer than the warps of a
// block; packed documents (an empty one, one crossing batch rows, single
// tokens); head dims 64 and 128.
TYPED_TEST(DeviceEmulationTest, Attention) {
  using T = TypeParam;
  for (bool causal : {false, true}) {
    for (int kvHeads : {4, 2, 1})
      for (int seq : {1, 3, 9})
        checkAttention<T, 64, 64>(2, seq, 4, kvHeads, causal);
    checkAttention<T, 128, 128>(1, 6, 2, 1, causal);
    checkAttention<T, 64, 128>(2, 10, 2, 1, causal, {0, 3, 3, 14, 20});
    checkAttention<T, 128, 64>(2, 6, 2, 2, causal, {0, 12});
    checkAttention<T, 64, 32>(1, 4, 2, 2, causal, {0, 1, 2, 3, 4});
  }
}

//===----------------------------------------------------------------------===//
// FlashAttention on tensor cores
//===----------------------------------------------------------------------===//

/// Bounds of the flash kernels: BF16 outputs, from probabilities and dS
/// rounded to BF16 for the tensor cores (worst seen: 4.5e-3), and lse,
/// from FP32 sums of exact products (worst seen: 1.8e-7).
constexpr double kFlashTolerance = 1e-2, kFlashLseTolerance = 1e-6;

/// Tile sizes of one flash configuration: forward (block_q, block_k,
/// stages) and backward (block_q, block_k).
template <int Q, int K, int S, int BQ, int BK> struct FlashTiles {
  static constexpr int kBlockQ = Q, kBlockK = K, kStages = S, kBwdBlockQ = BQ,
                       kBwdBlockK = BK;
};

/// The flash kernels (BF16 storage) of one case against the host's FP64
/// reference: forward out and lse, then delta with the dq accumulator
/// zeroed, the backward and the dq finish. `fullGrid` false launches a
/// single block, which must stride over all the work.
template <int kHeadDim, typename Tiles>
void checkFlashAttention(int batch, int seq, int heads, int kvHeads,
                         bool causal, std::vector<std::int32_t> cuSeqlens = {},
                         bool fullGrid = true) {
  using T = __nv_bfloat16;
  const AttentionCase<T> c(batch, seq, heads, kvHeads, kHeadDim, causal,
                           std::move(cuSeqlens));
  SCOPED_TRACE(
      c.describe() + " blocks " + std::to_string(Tiles::kBlockQ) + "x" +
      std::to_string(Tiles::kBlockK) + "/" + std::to_string(Tiles::kBwdBlockQ) +
      "x" + std::to_string(Tiles::kBwdBlockK) + (fullGrid ? "" : " one block"));
  auto grid = [&](int block, int y) {
    return fullGrid ? EmulatedDim3{unsigned((seq + block - 1) / block),
                                   unsigned(y), unsigned(batch)}
                    : EmulatedDim3{1, 1, 1};
  };

  Buffer<T> dQ(c.q, 0), dK(c.k, 0), dV(c.v, 0), dDout(c.dout, 0),
      out(c.qSize, 0);
  std::vector<float> lse = poisonedFloats(c.rows);
  emulateKernel(
      grid(Tiles::kBlockQ, heads), Tiles::kBlockQ / 16 * 32,
      [&] {
        dev::flashAttentionForward<kHeadDim, Tiles::kBlockQ, Tiles::kBlockK,
                                   Tiles::kStages>(
            dQ.data(), dK.data(), dV.data(), out.data(), lse.data(), batch, seq,
            heads, kvHeads, c.scale, causal, c.cu(), c.numCu());
      },
      dev::flashForwardSharedBytes(kHeadDim, Tiles::kBlockQ, Tiles::kBlockK,
                                   Tiles::kStages));
  EXPECT_CLOSE(out.values(), c.out, kFlashTolerance);
  EXPECT_CLOSE(widen(lse), widen(c.lse), kFlashLseTolerance);

  Buffer<T> dOut(c.outStored, 0);
  std::vector<float> delta = poisonedFloats(c.rows),
                     dqAccum = poisonedFloats(c.qSize);
  emulateKernel({3}, 64, [&] {
    dev::attentionBackwardPreprocess<T, 64>(dDout.data(), dOut.data(),
                                            delta.data(), batch, seq, heads,
                                            kHeadDim, dqAccum.data());
  });
  Buffer<T> dq(c.qSize, 0), dk(c.kvSize, 0), dv(c.kvSize, 0);
  emulateKernel(
      grid(Tiles::kBwdBlockK, kvHeads), Tiles::kBwdBlockK / 16 * 32,
      [&] {
        dev::flashAttentionBackward<kHeadDim, Tiles::kBwdBlockQ,
                                    Tiles::kBwdBlockK>(
            dDout.data(), dQ.data(), dK.data(), dV.data(), c.lse.data(),
            delta.data(), dqAccum.data(), dk.data(), dv.data(), batch, seq,
            heads, kvHeads, c.scale, causal, c.cu(), c.numCu());
      },
      dev::flashBackwardSharedBytes(kHeadDim, Tiles::kBwdBlockQ,
                                    Tiles::kBwdBlockK));
  emulateKernel({2}, 64, [&] {
    dev::flashAttentionFinishDq<T>(dqAccum.data(), dq.data(), c.qSize, c.scale);
  });
  EXPECT_CLOSE(dq.values(), c.dq, kFlashTolerance);
  EXPECT_CLOSE(dk.values(), c.dk, kFlashTolerance);
  EXPECT_CLOSE(dv.values(), c.dv, kFlashTolerance);
}

// Sequences around and across the block sizes, GQA 1, 2 and 4, causal and
// not, packed documents (uneven, one crossing the batch rows, an empty one),
// head dims 16 to 128, one and two pipeline stages, several warps, and a
// single block striding over everything.
TEST(DeviceEmulationFlashTest, FlashAttention) {
  using Small = FlashTiles<16, 16, 2, 16, 16>;
  using Warps = FlashTiles<32, 16, 1, 16, 32>;
  using Wide = FlashTiles<32, 32, 2, 32, 32>;
  for (bool causal : {false, true}) {
    for (int seq : {1, 15, 16, 17, 33})
      checkFlashAttention<64, Small>(2, seq, 4, seq % 2 ? 1 : 4, causal);
    checkFlashAttention<64, Warps>(2, 37, 4, 2, causal);
    checkFlashAttention<128, Wide>(1, 40, 2, 1, causal);
    checkFlashAttention<32, Wide>(2, 70, 2, 2, causal);
    checkFlashAttention<16, Small>(1, 24, 2, 1, causal);
    checkFlashAttention<64, Warps>(2, 20, 2, 1, causal, {0, 7, 7, 29, 40});
    checkFlashAttention<64, Small>(2, 19, 4, 2, causal, {0, 5, 38}, false);
  }
}

// The host's copy of the flash kernels' shared-memory sizes
// (runtime/cuda/FlashAttention.h: the cost model, the code generator and the
// GPU tests use it) is the device library's, over every tile the kernels
// take.
TEST(DeviceEmulationFlashTest, SharedMemorySizesMatchTheHost) {
  for (int headDim : {16, 32, 64, 128})
    for (int blockQ = 16; blockQ <= 128; blockQ += 16)
      for (int blockK = 16; blockK <= 128; blockK += 16) {
        for (int stages : {1, 2})
          EXPECT_EQ(
              dev::flashForwardSharedBytes(headDim, blockQ, blockK, stages),
              kiln::rt::cuda::flashForwardSharedBytes(headDim, blockQ, blockK,
                                                      stages));
        EXPECT_EQ(
            dev::flashBackwardSharedBytes(headDim, blockQ, blockK),
            kiln::rt::cuda::flashBackwardSharedBytes(headDim, blockQ, blockK));
      }
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

TYPED_TEST(DeviceEmulationTest, GradientNorm) {
  using T = TypeParam;
  for (int offset : {0, 1})
    for (std::int64_t n : {1, 1001, 70000}) {
      SCOPED_TRACE("n " + std::to_string(n) + " offset " +
                   std::to_string(offset));
      std::vector<double> x = randomValues<T>(n);
      Buffer<T> dX(x, offset);
      std::vector<float> partials = poisonedFloats(16),
                         norm = poisonedFloats(1);
      emulateKernel({16}, 64, [&] {
        dev::squaredNormPartial<T, 64>(dX.data(), n, partials.data());
      });
      emulateKernel({1}, 64, [&] {
        dev::finishNorm<64>(partials.data(), 16, norm.data());
      });
      EXPECT_CLOSE(widen(norm),
                   std::vector<double>{
                       std::sqrt(host::sumOfSquares<double>(x.data(), n))},
                   kFloatTolerance);
    }
}

// AdamW is FP32 only; the updates (not the barely moving parameters) are
// compared.
TEST(DeviceEmulationAdamWTest, MatchesHost) {
  kiln::rt::host::testing::seedFromTestName();
  struct AdamCase {
    float step;
    double beta2, maxGradNorm;
  };
  const AdamCase cases[] = {{1, 0.95, 1.0}, {3, 0.999, 0.0}, {7, 0.95, 10.0}};
  const std::int64_t n = 3001;
  const float lr = 0.05f, gradNorm = 2.5f;
  for (const AdamCase &c : cases) {
    SCOPED_TRACE("step " + std::to_string(c.step));
    std::vector<double> param = randomValues<float>(n),
                        grad = randomValues<float>(n),
                        m = randomValues<float>(n, -0.1, 0.1),
                        v = randomValues<float>(n, 0, 0.01);
    std::vector<float> p(param.begin(), param.end()),
        g(grad.begin(), grad.end()), m32(m.begin(), m.end()),
        v32(v.begin(), v.end());
    emulateKernel({3}, 64, [&] {
      dev::adamw(p.data(), g.data(), m32.data(), v32.data(), n, &lr, &c.step,
                 &gradNorm, 0.9, c.beta2, 1e-8, 0.1, c.maxGradNorm);
    });
    std::vector<double> paramRef = param, mRef = m, vRef = v;
    host::adamw<double>(paramRef.data(), grad.data(), mRef.data(), vRef.data(),
                        n, lr, c.step, gradNorm, 0.9, c.beta2, 1e-8, 0.1,
                        c.maxGradNorm);
    std::vector<double> update(n), updateRef(n);
    for (std::int64_t i = 0; i < n; ++i) {
      update[i] = p[i] - param[i];
      updateRef[i] = paramRef[i] - param[i];
    }
    EXPECT_CLOSE(update, updateRef, kFloatTolerance);
    EXPECT_CLOSE(widen(m32), mRef, kFloatTolerance);
    EXPECT_CLOSE(widen(v32), vRef, kFloatTolerance);
  }
}

} // namespace
