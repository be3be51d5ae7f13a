//===- DeviceEmulationTest.cpp - The device library on the CPU ------------===//
//
// Every kiln::dev kernel function, run under DeviceEmulation.h (blocks in
// turn, threads as fibers) on fresh random data with poisoned outputs and
// compared with the host reference kernels in FP64, for f32 and bf16
// storage: the logic of the GPU code (row and column splits, vector and
// scalar paths, block reductions, online softmax, GQA, causal and packed
// documents, error flags) is tested on machines without a GPU (the fused
// row regions: DeviceEmulationRowTest.cpp). Bounds are
// DeviceKernelTest.cpp's: 1e-5 for f32 outputs and FP32 results of exact
// inputs, 2e-2 for bf16 outputs. Shapes are small (emulation switches
// fibers at every shuffle) but cover several warps and blocks per row.
//
//===----------------------------------------------------------------------===//

#include "DeviceEmulationTestSupport.h"

#include "../../io/IoTestSupport.h"

#include "runtime/cuda/FlashAttention.h"
#include "runtime/host/Kernels.h"
#include "runtime/io/DocumentPacker.h"
#include "runtime/plan/Schema.h"

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
using namespace kiln::dev::testing;
namespace dev = kiln::dev;
namespace host = kiln::rt::host;

namespace {

template <typename T> class DeviceEmulationTest : public KernelTest {};
TYPED_TEST_SUITE(DeviceEmulationTest, StorageTypes, StorageTypeNames);

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

  // norm-param-grads: both LayerNorm parameter gradients from one pass,
  // equal to the two kernels it replaces (the same sums in the same order).
  std::vector<float> wPartials = poisonedFloats(chunks * dim),
                     bPartials = poisonedFloats(chunks * dim);
  emulateKernel(columnGrid, 64, [&] {
    dev::layerNormParamGradPartials<T>(dDy.data(), dX.data(), mean.data(),
                                       layerRstd.data(), wPartials.data(),
                                       bPartials.data(), rows, dim);
  });
  Buffer<T> jointDw(dim, offset), jointDb(dim, offset);
  emulateKernel({columnGrid.x}, 64, [&] {
    dev::finishColumns<T>(wPartials.data(), jointDw.data(), chunks, dim);
    dev::finishColumns<T>(bPartials.data(), jointDb.data(), chunks, dim);
  });
  EXPECT_EQ(jointDw.values(), lnDw.values());
  EXPECT_EQ(jointDb.values(), bias.values());
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

/// linear_cross_entropy's row kernel, chunk by chunk over FP32 logits that
/// T holds exactly (for BF16 its rounding of the logits is then exact):
/// the row losses' mean and the gradient match the host's crossEntropy and
/// crossEntropyGrad over the whole logits. FP32 writes the gradient over
/// the logits in place; BF16 into its own buffer.
template <typename T, int kThreads>
void checkLinearCrossEntropyRows(int vocab, std::int64_t chunkRows) {
  SCOPED_TRACE("vocab " + std::to_string(vocab) + " chunk " +
               std::to_string(chunkRows) + " threads " +
               std::to_string(kThreads));
  const std::int64_t rows = 13, ignoreIndex = -100;
  std::vector<double> logits = randomValues<T>(rows * vocab, -4, 4);
  std::vector<std::int32_t> targets = randomIds(rows, vocab);
  for (std::int64_t r = 1; r < rows; r += 5)
    targets[r] = ignoreIndex;
  std::vector<float> rowLoss = poisonedFloats(rows), loss = poisonedFloats(1),
                     count = poisonedFloats(1);
  emulateKernel({1}, 32, [&] {
    dev::countValid<32>(targets.data(), rows, ignoreIndex, count.data());
  });
  const float dloss = 0.75f;
  std::vector<double> got(rows * vocab);
  int flag = 0;
  for (std::int64_t chunk = 0; chunk * chunkRows < rows; ++chunk) {
    std::int64_t begin = chunk * chunkRows;
    std::int64_t n = std::min(chunkRows, rows - begin);
    std::vector<float> scratch = poisonedFloats(chunkRows * vocab);
    for (std::int64_t i = 0; i < n * vocab; ++i)
      scratch[i] = static_cast<float>(logits[begin * vocab + i]);
    Buffer<T> dlogits(chunkRows * vocab, 0);
    T *out;
    if constexpr (std::is_same_v<T, float>)
      out = scratch.data();
    else
      out = dlogits.data();
    emulateKernel({3}, kThreads, [&] {
      dev::linearCrossEntropyRows<T, kThreads, !std::is_same_v<T, float>>(
          scratch.data(), targets.data(), rowLoss.data(), &dloss, count.data(),
          out, rows, chunkRows, vocab, ignoreIndex, &flag, chunk);
    });
    std::vector<double> values = widen(out, n * vocab);
    std::copy(values.begin(), values.end(), got.begin() + begin * vocab);
  }
  EXPECT_EQ(flag, 0);
  emulateKernel({1}, 64, [&] {
    dev::crossEntropyReduce<64>(rowLoss.data(), targets.data(), loss.data(),
                                rows, ignoreIndex);
  });
  EXPECT_CLOSE(widen(loss),
               std::vector<double>{host::crossEntropy<double>(
                   logits.data(), targets.data(), rows, vocab, ignoreIndex)},
               kFloatTolerance);
  std::vector<double> ref(rows * vocab);
  host::crossEntropyGrad<double>(dloss, logits.data(), targets.data(),
                                 ref.data(), rows, vocab, ignoreIndex);
  EXPECT_CLOSE(got, ref, kTolerance<T>);
}

TYPED_TEST(DeviceEmulationTest, LinearCrossEntropyRows) {
  using T = TypeParam;
  for (int vocab : {8, 1000, 5003})
    for (std::int64_t chunkRows : {1, 4, 13}) {
      checkLinearCrossEntropyRows<T, 32>(vocab, chunkRows);
      checkLinearCrossEntropyRows<T, 128>(vocab, chunkRows);
    }
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

/// [tokens, a | b | c] from three [tokens, width] tensors (a's width wa, b's
/// and c's wb): how a packed QKV GEMM output or gradient lies in memory.
std::vector<double> packRows(const std::vector<double> &a,
                             const std::vector<double> &b,
                             const std::vector<double> &c, std::int64_t tokens,
                             std::int64_t wa, std::int64_t wb) {
  std::int64_t pitch = wa + 2 * wb;
  std::vector<double> packed(tokens * pitch);
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::copy_n(a.data() + t * wa, wa, packed.data() + t * pitch);
    std::copy_n(b.data() + t * wb, wb, packed.data() + t * pitch + wa);
    std::copy_n(c.data() + t * wb, wb, packed.data() + t * pitch + wa + wb);
  }
  return packed;
}

/// One run of the exact attention kernels on c's shape: the forward into
/// out and lse, delta from that out, then dq (a block per query row) and dk,
/// dv (a block per key row), with the given pitches and rope table.
template <typename T, int kHeadDim, int kThreads>
void exactAttention(const AttentionCase<T> &c, const T *q, const T *k,
                    const T *v, const T *dout, T *out, std::vector<float> &lse,
                    T *dq, T *dk, T *dv, dev::AttentionPitches pitches = {},
                    const float *rope = nullptr) {
  const EmulatedDim3 grid{unsigned(c.seq), unsigned(c.heads),
                          unsigned(c.batch)};
  const EmulatedDim3 kvGrid{unsigned(c.seq), unsigned(c.kvHeads),
                            unsigned(c.batch)};
  emulateKernel(grid, kThreads, [&] {
    dev::attentionForward<T, kHeadDim, kThreads>(
        q, k, v, out, lse.data(), c.batch, c.seq, c.heads, c.kvHeads, c.scale,
        c.causal, nullptr, 0, pitches, rope);
  });
  std::vector<float> delta = poisonedFloats(c.rows);
  emulateKernel(grid, 32, [&] {
    dev::attentionBackwardPreprocess<T, 32>(dout, out, delta.data(), c.batch,
                                            c.seq, c.heads, kHeadDim);
  });
  emulateKernel(grid, kThreads, [&] {
    dev::attentionBackwardQuery<T, kHeadDim, kThreads>(
        dout, q, k, v, lse.data(), delta.data(), dq, c.batch, c.seq, c.heads,
        c.kvHeads, c.scale, c.causal, nullptr, 0, pitches, rope);
  });
  emulateKernel(kvGrid, kThreads, [&] {
    dev::attentionBackwardKeyValue<T, kHeadDim, kThreads>(
        dout, q, k, v, lse.data(), delta.data(), dk, dv, c.batch, c.seq,
        c.heads, c.kvHeads, c.scale, c.causal, nullptr, 0, pitches, rope);
  });
}

// Q, K and V read as row-strided views of a packed QKV tensor, and dQ, dK
// and dV written into a packed gradient (tile-fold-views), give the bits of
// the contiguous tensors: only the addressing changes.
TYPED_TEST(DeviceEmulationTest, AttentionReadsAndWritesRowStridedViews) {
  using T = TypeParam;
  constexpr int kHeadDim = 64, kThreads = 64;
  const int batch = 2, seq = 9, heads = 4, kvHeads = 2;
  const AttentionCase<T> c(batch, seq, heads, kvHeads, kHeadDim, true, {});
  const std::int64_t tokens = batch * seq, wq = heads * kHeadDim,
                     wkv = kvHeads * kHeadDim, pitch = wq + 2 * wkv;
  const dev::AttentionPitches pitches{pitch, pitch, pitch, pitch, pitch, pitch};

  Buffer<T> q(c.q, 0), k(c.k, 0), v(c.v, 0), dout(c.dout, 0);
  Buffer<T> qkv(packRows(c.q, c.k, c.v, tokens, wq, wkv), 0);
  T *qs = qkv.data(), *ks = qs + wq, *vs = ks + wkv;
  Buffer<T> out(c.qSize, 0), outStrided(c.qSize, 0);
  std::vector<float> lse = poisonedFloats(c.rows), lseStrided = lse;
  Buffer<T> dq(c.qSize, 0), dk(c.kvSize, 0), dv(c.kvSize, 0),
      dqkv(tokens * pitch, 0);
  T *dqs = dqkv.data(), *dks = dqs + wq, *dvs = dks + wkv;
  exactAttention<T, kHeadDim, kThreads>(c, q.data(), k.data(), v.data(),
                                        dout.data(), out.data(), lse, dq.data(),
                                        dk.data(), dv.data());
  exactAttention<T, kHeadDim, kThreads>(c, qs, ks, vs, dout.data(),
                                        outStrided.data(), lseStrided, dqs, dks,
                                        dvs, pitches);
  EXPECT_EQ(outStrided.values(), out.values());
  EXPECT_EQ(lseStrided, lse);
  EXPECT_EQ(dqkv.values(),
            packRows(dq.values(), dk.values(), dv.values(), tokens, wq, wkv));
}

/// The unfused RoPE of x (tokens x heads x headDim) by the RoPE kernel, or
/// its inverse, into a new buffer.
template <typename T>
Buffer<T> ropeKernel(const T *x, const std::vector<std::int32_t> &positions,
                     int batch, int seq, int heads, int headDim, bool inverse) {
  Buffer<T> y(std::int64_t(batch) * seq * heads * headDim, 0);
  emulateKernel({unsigned(batch * seq)}, 32, [&] {
    dev::rope<T, 32>(x, positions.data(), y.data(), batch, seq, heads, headDim,
                     5.0e5f, inverse);
  });
  return y;
}

/// The table rope-attention reads, by its kernel.
std::vector<float> ropeTableKernel(const std::vector<std::int32_t> &positions,
                                   int batch, int seq, int headDim) {
  std::vector<float> table =
      poisonedFloats(std::int64_t(batch) * seq * headDim);
  emulateKernel({unsigned(batch * seq)}, 32, [&] {
    dev::ropeTable<32>(positions.data(), table.data(), batch, seq, headDim,
                       5.0e5f);
  });
  return table;
}

// rope-attention on the exact kernels: rotating Q and K as they are loaded
// (and dq, dk back as they are stored) from a ropeTable gives the bits of
// the RoPE kernels around the plain attention: forward bit for bit in both
// types; the gradients bit for bit in FP32 and, in BF16, within one
// rounding (the unfused step rounds the rotated gradient before rotating
// it back).
TYPED_TEST(DeviceEmulationTest, AttentionRotatesByTheRopeTable) {
  using T = TypeParam;
  constexpr int kHeadDim = 32, kThreads = 64;
  const int batch = 2, seq = 7, heads = 4, kvHeads = 2;
  const AttentionCase<T> c(batch, seq, heads, kvHeads, kHeadDim, true, {});
  std::vector<std::int32_t> positions(batch * seq);
  for (int t = 0; t < batch * seq; ++t)
    positions[t] = (t * 37) % 2000; // packed documents' restarts, any order
  const std::vector<float> table =
      ropeTableKernel(positions, batch, seq, kHeadDim);

  Buffer<T> q(c.q, 0), k(c.k, 0), v(c.v, 0), dout(c.dout, 0);
  Buffer<T> qr =
      ropeKernel(q.data(), positions, batch, seq, heads, kHeadDim, false);
  Buffer<T> kr =
      ropeKernel(k.data(), positions, batch, seq, kvHeads, kHeadDim, false);
  Buffer<T> out(c.qSize, 0), outFused(c.qSize, 0);
  std::vector<float> lse = poisonedFloats(c.rows), lseFused = lse;
  Buffer<T> dqr(c.qSize, 0), dkr(c.kvSize, 0), dv(c.kvSize, 0);
  Buffer<T> dq(c.qSize, 0), dk(c.kvSize, 0), dvFused(c.kvSize, 0);
  exactAttention<T, kHeadDim, kThreads>(c, qr.data(), kr.data(), v.data(),
                                        dout.data(), out.data(), lse,
                                        dqr.data(), dkr.data(), dv.data());
  exactAttention<T, kHeadDim, kThreads>(
      c, q.data(), k.data(), v.data(), dout.data(), outFused.data(), lseFused,
      dq.data(), dk.data(), dvFused.data(), {}, table.data());
  EXPECT_EQ(outFused.values(), out.values());
  EXPECT_EQ(lseFused, lse);
  EXPECT_EQ(dvFused.values(), dv.values());
  Buffer<T> dqUnfused =
      ropeKernel(dqr.data(), positions, batch, seq, heads, kHeadDim, true);
  Buffer<T> dkUnfused =
      ropeKernel(dkr.data(), positions, batch, seq, kvHeads, kHeadDim, true);
  if constexpr (std::is_same_v<T, float>) {
    EXPECT_EQ(dq.values(), dqUnfused.values());
    EXPECT_EQ(dk.values(), dkUnfused.values());
  } else {
    EXPECT_CLOSE(dq.values(), dqUnfused.values(), 8e-3);
    EXPECT_CLOSE(dk.values(), dkUnfused.values(), 8e-3);
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

/// The cu_seqlens of 2 rows of 40 tokens packed from documents of 3, 9,
/// 20, 1, 14 and 30 tokens (--packing documents): documents within rows,
/// each row's padding a document of its own, the plan's static tail of 81
/// entries repeating the last offset.
std::vector<std::int32_t> packedCuSeqlens() {
  kiln::rt::testing::TempDir dir;
  std::string shard = dir.file("documents.bin");
  constexpr std::uint32_t kEnd = 7;
  std::vector<std::uint32_t> tokens;
  for (int n : {3, 9, 20, 1, 14, 30}) {
    tokens.insert(tokens.end(), n - 1, 1);
    tokens.push_back(kEnd);
  }
  kiln::rt::writeTokenShard(shard, tokens);
  kiln::rt::TokenStream stream({shard});
  kiln::rt::DocumentPacker packer(stream, kEnd, -100,
                                  kiln::rt::Packing::Documents);
  kiln::rt::PackedRows rows;
  packer.next(2, 40, rows);
  return kiln::rt::cuSeqlensOf(rows, 0, 2, 2 * 40 + 1);
}

// The packer's output (the attention of a packed step) on the exact and
// the tensor-core kernels.
TEST(DeviceEmulationFlashTest, AttentionOnPackedRows) {
  std::vector<std::int32_t> cu = packedCuSeqlens();
  ASSERT_GT(std::count(cu.begin(), cu.end(), 80), 40) << "the static tail";
  using Warps = FlashTiles<32, 16, 1, 16, 32>;
  for (bool causal : {false, true}) {
    checkAttention<float, 64, 64>(2, 40, 2, 1, causal, cu);
    checkFlashAttention<64, Warps>(2, 40, 2, 1, causal, cu);
  }
}

// The tensor-core kernels with Q, K and V row-strided views of a packed
// QKV tensor and dQ, dK, dV written into a packed gradient: the bits of the
// contiguous run.
TEST(DeviceEmulationFlashTest, FlashAttentionReadsAndWritesRowStridedViews) {
  using T = __nv_bfloat16;
  using Tiles = FlashTiles<16, 16, 2, 16, 16>;
  constexpr int kHeadDim = 64;
  const int batch = 2, seq = 33, heads = 4, kvHeads = 2;
  const AttentionCase<T> c(batch, seq, heads, kvHeads, kHeadDim, true, {});
  const std::int64_t tokens = batch * seq, wq = heads * kHeadDim,
                     wkv = kvHeads * kHeadDim, pitch = wq + 2 * wkv;
  const dev::AttentionPitches pitches{pitch, pitch, pitch, pitch, pitch, pitch};
  const EmulatedDim3 grid{unsigned((seq + 15) / 16), unsigned(heads),
                          unsigned(batch)};
  const EmulatedDim3 kvGrid{unsigned((seq + 15) / 16), unsigned(kvHeads),
                            unsigned(batch)};
  const unsigned forwardShared = dev::flashForwardSharedBytes(
      kHeadDim, Tiles::kBlockQ, Tiles::kBlockK, Tiles::kStages);
  const unsigned backwardShared = dev::flashBackwardSharedBytes(
      kHeadDim, Tiles::kBwdBlockQ, Tiles::kBwdBlockK);

  Buffer<T> q(c.q, 0), k(c.k, 0), v(c.v, 0), dout(c.dout, 0);
  Buffer<T> qkv(packRows(c.q, c.k, c.v, tokens, wq, wkv), 0);
  T *qs = qkv.data(), *ks = qs + wq, *vs = ks + wkv;
  // One run: contiguous, or the strided views.
  auto run = [&](bool strided, Buffer<T> &out, std::vector<float> &lse, T *dq,
                 T *dk, T *dv) {
    const T *qp = strided ? qs : q.data(), *kp = strided ? ks : k.data(),
            *vp = strided ? vs : v.data();
    dev::AttentionPitches p = strided ? pitches : dev::AttentionPitches{};
    emulateKernel(
        grid, Tiles::kBlockQ / 16 * 32,
        [&] {
          dev::flashAttentionForward<kHeadDim, Tiles::kBlockQ, Tiles::kBlockK,
                                     Tiles::kStages>(
              qp, kp, vp, out.data(), lse.data(), batch, seq, heads, kvHeads,
              c.scale, true, nullptr, 0, p);
        },
        forwardShared);
    std::vector<float> delta = poisonedFloats(c.rows),
                       dqAccum = poisonedFloats(c.qSize);
    emulateKernel({3}, 64, [&] {
      dev::attentionBackwardPreprocess<T, 64>(dout.data(), out.data(),
                                              delta.data(), batch, seq, heads,
                                              kHeadDim, dqAccum.data());
    });
    emulateKernel(
        kvGrid, Tiles::kBwdBlockK / 16 * 32,
        [&] {
          dev::flashAttentionBackward<kHeadDim, Tiles::kBwdBlockQ,
                                      Tiles::kBwdBlockK>(
              dout.data(), qp, kp, vp, lse.data(), delta.data(), dqAccum.data(),
              dk, dv, batch, seq, heads, kvHeads, c.scale, true, nullptr, 0, p);
        },
        backwardShared);
    emulateKernel({2}, 64, [&] {
      dev::flashAttentionFinishDq<T>(dqAccum.data(), dq, c.qSize, c.scale,
                                     strided ? wq : 0, strided ? pitch : 0);
    });
  };
  Buffer<T> out(c.qSize, 0), outStrided(c.qSize, 0);
  std::vector<float> lse = poisonedFloats(c.rows), lseStrided = lse;
  Buffer<T> dq(c.qSize, 0), dk(c.kvSize, 0), dv(c.kvSize, 0),
      dqkv(tokens * pitch, 0);
  run(false, out, lse, dq.data(), dk.data(), dv.data());
  run(true, outStrided, lseStrided, dqkv.data(), dqkv.data() + wq,
      dqkv.data() + wq + wkv);
  EXPECT_EQ(outStrided.values(), out.values());
  EXPECT_EQ(lseStrided, lse);
  EXPECT_EQ(dqkv.values(),
            packRows(dq.values(), dk.values(), dv.values(), tokens, wq, wkv));
}

// rope-attention on the tensor-core kernels: Q and K tiles rotated in
// shared memory as they land, dK rotated back in registers, dq in the
// finishing kernel. The forward gives the bits of the RoPE kernel around the
// plain kernel; the gradients are within one BF16 rounding (the unfused
// step rounds them before the inverse rotation too).
TEST(DeviceEmulationFlashTest, FlashAttentionRotatesByTheRopeTable) {
  using T = __nv_bfloat16;
  using Tiles = FlashTiles<16, 16, 2, 16, 16>;
  constexpr int kHeadDim = 64;
  const int batch = 2, seq = 33, heads = 4, kvHeads = 2;
  const AttentionCase<T> c(batch, seq, heads, kvHeads, kHeadDim, true, {});
  const std::int64_t wq = heads * kHeadDim;
  const EmulatedDim3 grid{unsigned((seq + 15) / 16), unsigned(heads),
                          unsigned(batch)};
  const EmulatedDim3 kvGrid{unsigned((seq + 15) / 16), unsigned(kvHeads),
                            unsigned(batch)};
  const unsigned forwardShared = dev::flashForwardSharedBytes(
      kHeadDim, Tiles::kBlockQ, Tiles::kBlockK, Tiles::kStages);
  const unsigned backwardShared = dev::flashBackwardSharedBytes(
      kHeadDim, Tiles::kBwdBlockQ, Tiles::kBwdBlockK);
  std::vector<std::int32_t> positions(batch * seq);
  for (int t = 0; t < batch * seq; ++t)
    positions[t] = t % 17; // two documents a row
  const std::vector<float> table =
      ropeTableKernel(positions, batch, seq, kHeadDim);

  Buffer<T> q(c.q, 0), k(c.k, 0), v(c.v, 0), dout(c.dout, 0);
  Buffer<T> qr =
      ropeKernel(q.data(), positions, batch, seq, heads, kHeadDim, false);
  Buffer<T> kr =
      ropeKernel(k.data(), positions, batch, seq, kvHeads, kHeadDim, false);
  // One run: on rotated inputs without a table, or on the projections with.
  auto run = [&](const T *qp, const T *kp, const float *rope, Buffer<T> &out,
                 std::vector<float> &lse, Buffer<T> &dq, Buffer<T> &dk,
                 Buffer<T> &dv) {
    emulateKernel(
        grid, Tiles::kBlockQ / 16 * 32,
        [&] {
          dev::flashAttentionForward<kHeadDim, Tiles::kBlockQ, Tiles::kBlockK,
                                     Tiles::kStages>(
              qp, kp, v.data(), out.data(), lse.data(), batch, seq, heads,
              kvHeads, c.scale, true, nullptr, 0, {}, rope);
        },
        forwardShared);
    std::vector<float> delta = poisonedFloats(c.rows),
                       dqAccum = poisonedFloats(c.qSize);
    emulateKernel({3}, 64, [&] {
      dev::attentionBackwardPreprocess<T, 64>(dout.data(), out.data(),
                                              delta.data(), batch, seq, heads,
                                              kHeadDim, dqAccum.data());
    });
    emulateKernel(
        kvGrid, Tiles::kBwdBlockK / 16 * 32,
        [&] {
          dev::flashAttentionBackward<kHeadDim, Tiles::kBwdBlockQ,
                                      Tiles::kBwdBlockK>(
              dout.data(), qp, kp, v.data(), lse.data(), delta.data(),
              dqAccum.data(), dk.data(), dv.data(), batch, seq, heads, kvHeads,
              c.scale, true, nullptr, 0, {}, rope);
        },
        backwardShared);
    emulateKernel({2}, 64, [&] {
      if (rope)
        dev::flashAttentionFinishDqRope<T>(dqAccum.data(), dq.data(), rope,
                                           c.qSize, c.scale, kHeadDim, wq);
      else
        dev::flashAttentionFinishDq<T>(dqAccum.data(), dq.data(), c.qSize,
                                       c.scale);
    });
  };
  Buffer<T> out(c.qSize, 0), outFused(c.qSize, 0);
  std::vector<float> lse = poisonedFloats(c.rows), lseFused = lse;
  Buffer<T> dqr(c.qSize, 0), dkr(c.kvSize, 0), dv(c.kvSize, 0);
  Buffer<T> dq(c.qSize, 0), dk(c.kvSize, 0), dvFused(c.kvSize, 0);
  run(qr.data(), kr.data(), nullptr, out, lse, dqr, dkr, dv);
  run(q.data(), k.data(), table.data(), outFused, lseFused, dq, dk, dvFused);
  EXPECT_EQ(outFused.values(), out.values());
  EXPECT_EQ(lseFused, lse);
  EXPECT_EQ(dvFused.values(), dv.values());
  EXPECT_CLOSE(
      dq.values(),
      ropeKernel(dqr.data(), positions, batch, seq, heads, kHeadDim, true)
          .values(),
      8e-3);
  EXPECT_CLOSE(
      dk.values(),
      ropeKernel(dkr.data(), positions, batch, seq, kvHeads, kHeadDim, true)
          .values(),
      8e-3);
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

// ZeRO-1: each of N ranks sums the squares of its shard of every gradient
// (finishNorm without the root); the sum over the ranks, rooted, is the
// whole norm.
TYPED_TEST(DeviceEmulationTest, ShardedGradientNorm) {
  using T = TypeParam;
  const std::int64_t sizes[] = {1, 1001, 70000};
  std::vector<std::vector<double>> grads;
  double whole = 0;
  for (std::int64_t n : sizes) {
    grads.push_back(randomValues<T>(n));
    whole += host::sumOfSquares<double>(grads.back().data(), n);
  }
  for (long long shards : {2, 3, 5}) {
    SCOPED_TRACE("shards " + std::to_string(shards));
    std::vector<float> total = poisonedFloats(1);
    total[0] = 0;
    for (long long rank = 0; rank < shards; ++rank) {
      std::vector<float> partials = poisonedFloats(16 * 3),
                         sum = poisonedFloats(1);
      for (std::size_t i = 0; i < grads.size(); ++i) {
        Buffer<T> dX(grads[i], 0);
        emulateKernel({16}, 64, [&] {
          const dev::Shard s = dev::shardOf(sizes[i], shards, rank);
          dev::squaredNormPartial<T, 64>(dX.data() + s.offset, s.count,
                                         partials.data() + 16 * i);
        });
      }
      emulateKernel({1}, 64, [&] {
        dev::finishNorm<64, false>(partials.data(), 16 * 3, sum.data());
      });
      total[0] += sum[0]; // what the runtime's all-reduce does
    }
    emulateKernel({1}, 32, [&] { dev::sqrtInPlace(total.data()); });
    EXPECT_CLOSE(widen(total), std::vector<double>{std::sqrt(whole)},
                 kFloatTolerance);
  }
}

// The device's shard of a tensor is the plan's (the host's, the
// checkpoints').
TEST(DeviceEmulationShardTest, MatchesThePlan) {
  for (long long n : {0, 1, 2, 7, 8, 9, 1000, 1001})
    for (long long shards : {1, 2, 3, 4, 8})
      for (long long rank = 0; rank < shards; ++rank) {
        kiln::plan::Shard expected = kiln::plan::shardOf(n, shards, rank);
        dev::Shard shard = dev::shardOf(n, shards, rank);
        EXPECT_EQ(shard.offset, expected.offset) << n << " " << shards;
        EXPECT_EQ(shard.count, expected.count) << n << " " << shards;
      }
}

// ZeRO-1's AdamW: the ranks' updates of their shards (the master whole, or
// only the shard as BF16 training keeps it) are, put together, bitwise the
// update of the whole tensor.
TEST(DeviceEmulationAdamWTest, ShardsAreTheWholeUpdate) {
  kiln::rt::host::testing::seedFromTestName();
  const std::int64_t n = 3001;
  const float lr = 0.05f, step = 3, gradNorm = 2.5f;
  std::vector<double> param = randomValues<float>(n),
                      grad = randomValues<float>(n),
                      m = randomValues<float>(n, -0.1, 0.1),
                      v = randomValues<float>(n, 0, 0.01);
  std::vector<float> p(param.begin(), param.end()), g(grad.begin(), grad.end()),
      m32(m.begin(), m.end()), v32(v.begin(), v.end());
  emulateKernel({3}, 64, [&] {
    dev::adamw(p.data(), g.data(), m32.data(), v32.data(), n, &lr, &step,
               &gradNorm, 0.9, 0.95, 1e-8, 0.1, 1.0);
  });
  for (long long shards : {2, 3, 7})
    for (bool paramIsShard : {false, true}) {
      SCOPED_TRACE("shards " + std::to_string(shards) +
                   (paramIsShard ? ", sharded master" : ""));
      std::vector<float> gathered(n), mGathered(n), vGathered(n);
      for (long long rank = 0; rank < shards; ++rank) {
        kiln::plan::Shard s = kiln::plan::shardOf(n, shards, rank);
        // The rank's state: moments of `stride` elements (the tail unused),
        // the master whole or its shard.
        std::vector<float> master(param.begin(), param.end());
        if (paramIsShard)
          master.assign(param.begin() + s.offset,
                        param.begin() + s.offset + s.count);
        std::vector<float> ms(s.stride, 0.0f), vs(s.stride, 0.0f);
        for (std::int64_t i = 0; i < s.count; ++i) {
          ms[i] = static_cast<float>(m[s.offset + i]);
          vs[i] = static_cast<float>(v[s.offset + i]);
        }
        emulateKernel({2}, 64, [&] {
          dev::adamwShard(master.data(), g.data(), ms.data(), vs.data(), n,
                          shards, rank, paramIsShard, &lr, &step, &gradNorm,
                          0.9, 0.95, 1e-8, 0.1, 1.0);
        });
        for (std::int64_t i = 0; i < s.count; ++i) {
          gathered[s.offset + i] = master[(paramIsShard ? 0 : s.offset) + i];
          mGathered[s.offset + i] = ms[i];
          vGathered[s.offset + i] = vs[i];
        }
        for (std::int64_t i = s.count; i < s.stride; ++i)
          EXPECT_EQ(ms[i], 0.0f) << "the moments' unused tail, rank " << rank;
      }
      EXPECT_EQ(gathered, p);
      EXPECT_EQ(mGathered, m32);
      EXPECT_EQ(vGathered, v32);
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
