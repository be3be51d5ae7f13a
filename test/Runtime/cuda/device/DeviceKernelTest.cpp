//===- DeviceKernelTest.cpp - The device library against the host kernels -===//
//
// Compiles DeviceKernels.cu (a wrapper per kiln::dev template instantiation,
// built into the test: DeviceKernelsSource.cpp.in) with NVRTC for the GPU at
// hand, with the device library the runtime embeds, launches every kernel on
// fresh random data with its outputs poisoned (NaN), and compares with the host
// reference kernels in FP64 (runtime/host/Kernels.h) on the same inputs: both
// sides read values the storage type holds exactly. Bounds, max |got - ref| /
// max |ref|:
//   - f32 outputs: 1e-5 (FP32 arithmetic and accumulation: a few ulps of
//     rounding per reduction level over at most a few thousand terms);
//   - bf16 outputs: 2e-2 (one bf16 rounding of the output, 2^-9 relative,
//     plus FP32 error, with margin);
//   - FP32 outputs of bf16 inputs (lse, losses, statistics, the embedding
//     gradient): 1e-5, as the inputs are exact.
// Without a GPU every test skips with the reason.
//
//===----------------------------------------------------------------------===//

#include "DeviceKernelTestSupport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

using namespace kiln::rt::cuda::devtest;

namespace {

//===----------------------------------------------------------------------===//
// Fill and elementwise bodies
//===----------------------------------------------------------------------===//

TEST_F(DeviceKernelTest, Fill) {
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    const long long n = 3001;
    DeviceTensor out(type, n, /*misaligned=*/true);
    // Two blocks: the grid-stride loop covers the rest.
    launch(kernel("fill", type), {2}, kColumnThreads, out.ptr(), n, 0.3f);
    std::vector<double> expected(n, representable(0.3f, type));
    EXPECT_EQ(out.download(), expected);
  }
}

TEST_F(DeviceKernelTest, ElementwiseActivations) {
  const long long n = 4099;
  const Grid grid{7};
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    std::vector<double> x = randomValues(n, type, -4, 4);
    std::vector<double> up = randomValues(n, type, -2, 2);
    std::vector<double> dy = randomValues(n, type);
    DeviceTensor dX = toDevice(x, type), dUp = toDevice(up, type),
                 dDy = toDevice(dy, type);
    std::vector<double> ref(n), ref2(n);

    for (bool tanhApprox : {false, true}) {
      SCOPED_TRACE(tanhApprox ? "tanh" : "erf");
      DeviceTensor y(type, n);
      launch(kernel("gelu", type), grid, kColumnThreads, dX.ptr(), y.ptr(), n,
             tanhApprox);
      host::gelu<double>(x.data(), ref.data(), n, tanhApprox);
      EXPECT_CLOSE(y.download(), ref, toleranceOf(type));

      DeviceTensor dx(type, n);
      launch(kernel("geluGrad", type), grid, kColumnThreads, dDy.ptr(),
             dX.ptr(), dx.ptr(), n, tanhApprox);
      host::geluGrad<double>(dy.data(), x.data(), ref.data(), n, tanhApprox);
      EXPECT_CLOSE(dx.download(), ref, toleranceOf(type));
    }

    DeviceTensor y(type, n);
    launch(kernel("swiglu", type), grid, kColumnThreads, dX.ptr(), dUp.ptr(),
           y.ptr(), n);
    host::swiglu<double>(x.data(), up.data(), ref.data(), n);
    EXPECT_CLOSE(y.download(), ref, toleranceOf(type));

    DeviceTensor dgate(type, n), dup(type, n);
    launch(kernel("swigluGrad", type), grid, kColumnThreads, dDy.ptr(),
           dX.ptr(), dUp.ptr(), dgate.ptr(), dup.ptr(), n);
    host::swigluGrad<double>(dy.data(), x.data(), up.data(), ref.data(),
                             ref2.data(), n);
    EXPECT_CLOSE(dgate.download(), ref, toleranceOf(type));
    EXPECT_CLOSE(dup.download(), ref2, toleranceOf(type));

    DeviceTensor silu(type, n);
    launch(kernel("silu", type), grid, kColumnThreads, dX.ptr(), silu.ptr(), n);
    std::vector<double> ones(n, 1.0);
    host::swiglu<double>(x.data(), ones.data(), ref.data(), n);
    EXPECT_CLOSE(silu.download(), ref, toleranceOf(type));
  }
}

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

struct NormShape {
  long long rows;
  int dim;
  bool misaligned; ///< every tensor one element past a 16-byte boundary
};

/// Odd and tiny rows (scalar path), rows of whole vectors (vector path),
/// rows longer than every block, and a misaligned copy of a vector shape.
/// No row is shorter than 3: with 1 (RMSNorm) or 2 (LayerNorm) elements
/// the input gradient is a cancellation of order eps / (var + eps), which
/// no relative bound fits.
constexpr NormShape kNormShapes[] = {
    {1, 3, false},    {3, 7, false},   {5, 64, false},  {37, 1000, false},
    {8, 4096, false}, {4, 4104, true}, {6, 8200, false}};

std::string describe(const NormShape &s) {
  return "rows " + std::to_string(s.rows) + " dim " + std::to_string(s.dim) +
         (s.misaligned ? " misaligned" : "");
}

TEST_F(DeviceKernelTest, RmsNormForwardAndInputGradient) {
  const float eps = 1e-5f;
  for (DType type : kDTypes)
    for (const NormShape &s : kNormShapes)
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " " + describe(s) +
                     " threads " + std::to_string(variant.threads));
        const long long n = s.rows * s.dim;
        std::vector<double> x = randomValues(n, type, -2, 2);
        std::vector<double> w = randomValues(s.dim, type, 0.5, 1.5);
        std::vector<double> dy = randomValues(n, type);
        DeviceTensor dX = toDevice(x, type, s.misaligned),
                     dW = toDevice(w, type, s.misaligned),
                     dDy = toDevice(dy, type, s.misaligned);
        // Fewer blocks than rows: the row loop strides.
        const Grid grid{static_cast<unsigned>(std::max(1LL, s.rows / 2))};

        DeviceTensor y(type, n, s.misaligned);
        launch(kernel("rmsNorm", type, variant.suffix), grid, variant.threads,
               dX.ptr(), dW.ptr(), y.ptr(), s.rows, s.dim, eps);
        std::vector<double> ref(n);
        host::rmsNorm<double>(x.data(), w.data(), ref.data(), s.rows, s.dim,
                              eps);
        EXPECT_CLOSE(y.download(), ref, toleranceOf(type));

        DeviceTensor dx(type, n, s.misaligned);
        launch(kernel("rmsNormGrad", type, variant.suffix), grid,
               variant.threads, dDy.ptr(), dX.ptr(), dW.ptr(), dx.ptr(), s.rows,
               s.dim, eps);
        host::rmsNormGrad<double>(dy.data(), x.data(), w.data(), ref.data(),
                                  s.rows, s.dim, eps);
        EXPECT_CLOSE(dx.download(), ref, toleranceOf(type));
      }
}

TEST_F(DeviceKernelTest, LayerNormForwardAndInputGradient) {
  const float eps = 1e-5f;
  for (DType type : kDTypes)
    for (const NormShape &s : kNormShapes)
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " " + describe(s) +
                     " threads " + std::to_string(variant.threads));
        const long long n = s.rows * s.dim;
        // An offset mean, so that the two-pass variance matters.
        std::vector<double> x = randomValues(n, type, 1, 3);
        std::vector<double> w = randomValues(s.dim, type, 0.5, 1.5);
        std::vector<double> b = randomValues(s.dim, type);
        std::vector<double> dy = randomValues(n, type);
        DeviceTensor dX = toDevice(x, type, s.misaligned),
                     dW = toDevice(w, type, s.misaligned),
                     dB = toDevice(b, type, s.misaligned),
                     dDy = toDevice(dy, type, s.misaligned);
        const Grid grid{static_cast<unsigned>(std::max(1LL, s.rows / 2))};
        std::vector<double> ref(n);

        for (bool withBias : {true, false}) {
          SCOPED_TRACE(withBias ? "bias" : "no bias");
          DeviceTensor y(type, n, s.misaligned);
          launch(kernel("layerNorm", type, variant.suffix), grid,
                 variant.threads, dX.ptr(), dW.ptr(),
                 withBias ? dB.ptr() : kNull, y.ptr(), s.rows, s.dim, eps);
          host::layerNorm<double>(x.data(), w.data(),
                                  withBias ? b.data() : nullptr, ref.data(),
                                  s.rows, s.dim, eps);
          EXPECT_CLOSE(y.download(), ref, toleranceOf(type));
        }

        DeviceTensor dx(type, n, s.misaligned);
        launch(kernel("layerNormGrad", type, variant.suffix), grid,
               variant.threads, dDy.ptr(), dX.ptr(), dW.ptr(), dx.ptr(), s.rows,
               s.dim, eps);
        host::layerNormGrad<double>(dy.data(), x.data(), w.data(), ref.data(),
                                    s.rows, s.dim, eps);
        EXPECT_CLOSE(dx.download(), ref, toleranceOf(type));
      }
}

// Row statistics, then the thread-per-column weight gradients and the bias
// gradient (columnSum).
TEST_F(DeviceKernelTest, NormWeightGradients) {
  const float eps = 1e-5f;
  for (DType type : kDTypes)
    for (const NormShape &s : kNormShapes)
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " " + describe(s) +
                     " threads " + std::to_string(variant.threads));
        const long long n = s.rows * s.dim;
        std::vector<double> x = randomValues(n, type, 1, 3);
        std::vector<double> dy = randomValues(n, type);
        DeviceTensor dX = toDevice(x, type, s.misaligned),
                     dDy = toDevice(dy, type, s.misaligned);
        const Grid rowGrid{static_cast<unsigned>(std::max(1LL, s.rows / 2))};
        // At most two column blocks (the column loop strides when dim >
        // 512) by three row chunks (the last one short or empty).
        const unsigned chunks = 3;
        const Grid columnGrid{std::min(2u, ceilDiv(s.dim, kColumnThreads)),
                              chunks};
        DeviceTensor partials(DType::F32, chunks * s.dim);
        auto finish = [&](DeviceTensor &y) {
          launch(kernel("finishColumns", type), {columnGrid.x}, kColumnThreads,
                 partials.ptr(), y.ptr(), static_cast<int>(chunks),
                 static_cast<long long>(s.dim));
        };

        // rstd of RMSNorm, and mean and rstd of LayerNorm, in FP64.
        std::vector<double> rmsRef(s.rows), meanRef(s.rows), rstdRef(s.rows);
        for (long long r = 0; r < s.rows; ++r) {
          double sum = 0, sumSq = 0, dev = 0;
          for (int j = 0; j < s.dim; ++j) {
            sum += x[r * s.dim + j];
            sumSq += x[r * s.dim + j] * x[r * s.dim + j];
          }
          meanRef[r] = sum / s.dim;
          for (int j = 0; j < s.dim; ++j)
            dev += (x[r * s.dim + j] - meanRef[r]) *
                   (x[r * s.dim + j] - meanRef[r]);
          rmsRef[r] = 1.0 / std::sqrt(sumSq / s.dim + eps);
          rstdRef[r] = 1.0 / std::sqrt(dev / s.dim + eps);
        }

        DeviceTensor rstd(DType::F32, s.rows);
        launch(kernel("rmsRowStats", type, variant.suffix), rowGrid,
               variant.threads, dX.ptr(), rstd.ptr(), s.rows, s.dim, eps);
        EXPECT_CLOSE(rstd.download(), rmsRef, kFloatTolerance);
        DeviceTensor dw(type, s.dim, s.misaligned);
        launch(kernel("rmsNormWeightGradPartials", type), columnGrid,
               kColumnThreads, dDy.ptr(), dX.ptr(), rstd.ptr(), partials.ptr(),
               s.rows, s.dim);
        finish(dw);
        std::vector<double> ref(s.dim);
        host::rmsNormWeightGrad<double>(dy.data(), x.data(), ref.data(), s.rows,
                                        s.dim, eps);
        EXPECT_CLOSE(dw.download(), ref, toleranceOf(type));

        DeviceTensor mean(DType::F32, s.rows), layerRstd(DType::F32, s.rows);
        launch(kernel("layerRowStats", type, variant.suffix), rowGrid,
               variant.threads, dX.ptr(), mean.ptr(), layerRstd.ptr(), s.rows,
               s.dim, eps);
        EXPECT_CLOSE(mean.download(), meanRef, kFloatTolerance);
        EXPECT_CLOSE(layerRstd.download(), rstdRef, kFloatTolerance);
        DeviceTensor layerDw(type, s.dim, s.misaligned);
        launch(kernel("layerNormWeightGradPartials", type), columnGrid,
               kColumnThreads, dDy.ptr(), dX.ptr(), mean.ptr(), layerRstd.ptr(),
               partials.ptr(), s.rows, s.dim);
        finish(layerDw);
        host::layerNormWeightGrad<double>(dy.data(), x.data(), ref.data(),
                                          s.rows, s.dim, eps);
        EXPECT_CLOSE(layerDw.download(), ref, toleranceOf(type));

        DeviceTensor bias(type, s.dim, s.misaligned);
        launch(kernel("columnSumPartials", type), columnGrid, kColumnThreads,
               dDy.ptr(), partials.ptr(), s.rows, s.dim);
        finish(bias);
        host::columnSum<double>(dy.data(), ref.data(), s.rows, s.dim);
        EXPECT_CLOSE(bias.download(), ref, toleranceOf(type));
      }
}

//===----------------------------------------------------------------------===//
// Rotary embeddings
//===----------------------------------------------------------------------===//

TEST_F(DeviceKernelTest, Rope) {
  struct RopeCase {
    int batch, seq, heads, headDim;
    float theta;
    bool positions, inverse, inPlace;
  };
  const RopeCase cases[] = {
      {2, 5, 3, 64, 10000.0f, false, false, false},
      {2, 5, 3, 64, 10000.0f, false, true, false},
      {1, 7, 4, 128, 500000.0f, true, false, false},
      {1, 7, 4, 128, 500000.0f, true, true, true},
      {3, 2, 2, 6, 10000.0f, true, false, true},
      // More frequencies than the 32-thread block has threads.
      {1, 3, 2, 256, 10000.0f, true, false, false},
  };
  for (DType type : kDTypes)
    for (const RopeCase &c : cases)
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(
            std::string(tagOf(type)) + " headDim " + std::to_string(c.headDim) +
            " theta " + std::to_string(c.theta) +
            (c.positions ? " positions" : "") + (c.inverse ? " inverse" : "") +
            (c.inPlace ? " in place" : "") + " threads " +
            std::to_string(variant.threads));
        const long long tokens = static_cast<long long>(c.batch) * c.seq;
        const long long n = tokens * c.heads * c.headDim;
        std::vector<double> x = randomValues(n, type);
        // Large positions exercise the double-precision argument reduction.
        std::vector<std::int32_t> positions = randomIds(tokens, 200000);
        DeviceTensor dX = toDevice(x, type);
        DeviceInts dPositions(positions);
        DeviceTensor y(type, n);
        CUdeviceptr out = c.inPlace ? dX.ptr() : y.ptr();
        launch(kernel("rope", type, variant.suffix),
               {static_cast<unsigned>(std::max(1LL, tokens / 2))},
               variant.threads, dX.ptr(),
               c.positions ? dPositions.ptr() : kNull, out, c.batch, c.seq,
               c.heads, c.headDim, c.theta, c.inverse);
        std::vector<double> ref(n);
        host::rope<double>(x.data(), c.positions ? positions.data() : nullptr,
                           ref.data(), c.batch, c.seq, c.heads, c.headDim,
                           c.theta, c.inverse);
        EXPECT_CLOSE(c.inPlace ? dX.download() : y.download(), ref,
                     toleranceOf(type));
      }
}

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

TEST_F(DeviceKernelTest, EmbeddingLookupAndGradient) {
  const int vocab = 50;
  for (DType type : kDTypes)
    for (int dim : {7, 64, 1000})
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " dim " + std::to_string(dim) +
                     " threads " + std::to_string(variant.threads));
        const long long numIds = 67; // ids repeat: 67 > vocab
        std::vector<double> table = randomValues(vocab * dim, type);
        std::vector<std::int32_t> ids = randomIds(numIds, vocab);
        DeviceTensor dTable = toDevice(table, type);
        DeviceInts dIds(ids), flag(std::vector<std::int32_t>{0});
        DeviceTensor y(type, numIds * dim);
        launch(kernel("embedding", type, variant.suffix),
               {static_cast<unsigned>(numIds / 2)}, variant.threads,
               dTable.ptr(), dIds.ptr(), y.ptr(), numIds, vocab, dim,
               flag.ptr());
        std::vector<double> ref(numIds * dim);
        host::embedding<double>(table.data(), ids.data(), ref.data(), numIds,
                                vocab, dim);
        EXPECT_EQ(y.download(), ref); // a copy: exact
        EXPECT_EQ(flag.download()[0], 0);

        // The table gradient is FP32 for both types and exact inputs.
        std::vector<double> dy = randomValues(numIds * dim, type);
        DeviceTensor dDy = toDevice(dy, type);
        DeviceTensor dtable(DType::F32, vocab * dim);
        // Two vocabulary ranges: each block scans every id.
        launch(kernel("embeddingGradColumns", type),
               {std::min(2u, ceilDiv(dim, kColumnThreads)), 2}, kColumnThreads,
               dDy.ptr(), dIds.ptr(), dtable.ptr(), numIds, vocab, dim);
        std::vector<double> gradRef(vocab * dim);
        host::embeddingGrad<double>(dy.data(), ids.data(), gradRef.data(),
                                    numIds, vocab, dim);
        EXPECT_CLOSE(dtable.download(), gradRef, kFloatTolerance);
      }
}

// An id outside the vocabulary sets the flag to its position + 1 (one of
// the bad ones: blocks race) and gives zeros; the other rows are copied.
TEST_F(DeviceKernelTest, EmbeddingReportsBadIds) {
  const int vocab = 50, dim = 64;
  const long long numIds = 12;
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    std::vector<double> table = randomValues(vocab * dim, type);
    std::vector<std::int32_t> ids = randomIds(numIds, vocab);
    ids[5] = -1;
    ids[9] = vocab;
    DeviceTensor dTable = toDevice(table, type);
    DeviceInts dIds(ids), flag(std::vector<std::int32_t>{0});
    DeviceTensor y(type, numIds * dim);
    launch(kernel("embedding", type), {static_cast<unsigned>(numIds)}, 256,
           dTable.ptr(), dIds.ptr(), y.ptr(), numIds, vocab, dim, flag.ptr());
    int flagged = flag.download()[0];
    EXPECT_TRUE(flagged == 6 || flagged == 10) << "flag " << flagged;
    std::vector<double> got = y.download();
    for (long long p = 0; p < numIds; ++p)
      for (int j = 0; j < dim; ++j) {
        double expected = (p == 5 || p == 9) ? 0.0 : table[ids[p] * dim + j];
        ASSERT_EQ(got[p * dim + j], expected) << "position " << p;
      }
  }
}

//===----------------------------------------------------------------------===//
// Cross-entropy
//===----------------------------------------------------------------------===//

TEST_F(DeviceKernelTest, CrossEntropyLossAndGradient) {
  const long long ignoreIndex = -100;
  for (DType type : kDTypes)
    for (int vocab : {8, 1000, 50257})
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " vocab " +
                     std::to_string(vocab) + " threads " +
                     std::to_string(variant.threads));
        const long long rows = 37;
        std::vector<double> logits = randomValues(rows * vocab, type, -4, 4);
        std::vector<std::int32_t> targets = randomIds(rows, vocab);
        for (long long r = 0; r < rows; r += 5)
          targets[r] = static_cast<std::int32_t>(ignoreIndex);
        DeviceTensor dLogits = toDevice(logits, type);
        DeviceInts dTargets(targets), flag(std::vector<std::int32_t>{0});
        const Grid grid{static_cast<unsigned>(rows / 2)};

        DeviceTensor rowLoss(DType::F32, rows);
        launch(kernel("crossEntropyRows", type, variant.suffix), grid,
               variant.threads, dLogits.ptr(), dTargets.ptr(), rowLoss.ptr(),
               rows, vocab, ignoreIndex, flag.ptr());
        EXPECT_EQ(flag.download()[0], 0);
        std::vector<double> rowRef(rows, 0.0);
        long long valid = 0;
        for (long long r = 0; r < rows; ++r) {
          if (targets[r] == ignoreIndex)
            continue;
          ++valid;
          rowRef[r] = host::crossEntropy<double>(logits.data() + r * vocab,
                                                 targets.data() + r, 1, vocab,
                                                 ignoreIndex);
        }
        EXPECT_CLOSE(rowLoss.download(), rowRef, kFloatTolerance);

        DeviceTensor loss(DType::F32, 1), count(DType::F32, 1);
        launch("crossEntropyReduce", {1}, kSingleThreads, rowLoss.ptr(),
               dTargets.ptr(), loss.ptr(), rows, ignoreIndex);
        double lossRef = host::crossEntropy<double>(
            logits.data(), targets.data(), rows, vocab, ignoreIndex);
        EXPECT_CLOSE(loss.download(), std::vector<double>{lossRef},
                     kFloatTolerance);
        launch("countValid", {1}, kSingleThreads, dTargets.ptr(), rows,
               ignoreIndex, count.ptr());
        EXPECT_EQ(count.download()[0], static_cast<double>(valid));

        const double dlossValue = 0.75;
        DeviceTensor dloss = toDevice({dlossValue}, DType::F32);
        DeviceTensor dlogits(type, rows * vocab);
        launch(kernel("crossEntropyGrad", type, variant.suffix), grid,
               variant.threads, dloss.ptr(), count.ptr(), dLogits.ptr(),
               dTargets.ptr(), dlogits.ptr(), rows, vocab, ignoreIndex);
        std::vector<double> gradRef(rows * vocab);
        host::crossEntropyGrad<double>(dlossValue, logits.data(),
                                       targets.data(), gradRef.data(), rows,
                                       vocab, ignoreIndex);
        EXPECT_CLOSE(dlogits.download(), gradRef, toleranceOf(type));
      }
}

// Every row ignored: loss 0, count 0, zero gradients (not NaN).
TEST_F(DeviceKernelTest, CrossEntropyAllIgnored) {
  const long long ignoreIndex = -100, rows = 9;
  const int vocab = 100;
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    DeviceTensor logits = toDevice(randomValues(rows * vocab, type), type);
    DeviceInts targets(std::vector<std::int32_t>(rows, -100));
    DeviceInts flag(std::vector<std::int32_t>{0});
    DeviceTensor rowLoss(DType::F32, rows), loss(DType::F32, 1),
        count(DType::F32, 1);
    launch(kernel("crossEntropyRows", type), {4}, 256, logits.ptr(),
           targets.ptr(), rowLoss.ptr(), rows, vocab, ignoreIndex, flag.ptr());
    launch("crossEntropyReduce", {1}, kSingleThreads, rowLoss.ptr(),
           targets.ptr(), loss.ptr(), rows, ignoreIndex);
    launch("countValid", {1}, kSingleThreads, targets.ptr(), rows, ignoreIndex,
           count.ptr());
    EXPECT_EQ(loss.download()[0], 0.0);
    EXPECT_EQ(count.download()[0], 0.0);
    DeviceTensor dloss = toDevice({1.0}, DType::F32);
    DeviceTensor dlogits(type, rows * vocab);
    launch(kernel("crossEntropyGrad", type), {4}, 256, dloss.ptr(), count.ptr(),
           logits.ptr(), targets.ptr(), dlogits.ptr(), rows, vocab,
           ignoreIndex);
    EXPECT_EQ(dlogits.download(), std::vector<double>(rows * vocab, 0.0));
  }
}

// A target outside the vocabulary (not ignore_index) flags its row + 1 and
// gives that row a NaN loss.
TEST_F(DeviceKernelTest, CrossEntropyReportsBadTargets) {
  const long long ignoreIndex = -100, rows = 6;
  const int vocab = 100;
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    std::vector<std::int32_t> targets = randomIds(rows, vocab);
    targets[3] = vocab;
    DeviceTensor logits = toDevice(randomValues(rows * vocab, type), type);
    DeviceInts dTargets(targets), flag(std::vector<std::int32_t>{0});
    DeviceTensor rowLoss(DType::F32, rows);
    launch(kernel("crossEntropyRows", type), {static_cast<unsigned>(rows)}, 256,
           logits.ptr(), dTargets.ptr(), rowLoss.ptr(), rows, vocab,
           ignoreIndex, flag.ptr());
    EXPECT_EQ(flag.download()[0], 4);
    std::vector<double> losses = rowLoss.download();
    EXPECT_TRUE(std::isnan(losses[3]));
    for (long long r = 0; r < rows; ++r) {
      if (r == 3)
        continue;
      EXPECT_TRUE(std::isfinite(losses[r])) << "row " << r;
    }
  }
}

// The global norm over two gradients: partial sums of squares into one
// buffer (64 per gradient), then their square root; aligned or not.
TEST_F(DeviceKernelTest, GlobalGradientNorm) {
  constexpr unsigned kPartials = 64;
  for (DType type : kDTypes)
    for (bool misaligned : {false, true})
      for (long long n : {1LL, 1001LL, (1LL << 20) + 3}) {
        SCOPED_TRACE(std::string(tagOf(type)) + " n " + std::to_string(n) +
                     (misaligned ? " misaligned" : ""));
        std::vector<double> a = randomValues(n, type);
        std::vector<double> b = randomValues(77, type);
        DeviceTensor dA = toDevice(a, type, misaligned),
                     dB = toDevice(b, type, misaligned);
        DeviceTensor partials(DType::F32, 2 * kPartials);
        launch(kernel("squaredNormPartial", type), {kPartials}, kColumnThreads,
               dA.ptr(), n, partials.ptr());
        launch(kernel("squaredNormPartial", type), {kPartials}, kColumnThreads,
               dB.ptr(), 77LL, partials.ptr() + kPartials * 4);
        DeviceTensor norm(DType::F32, 1);
        launch("finishNorm", {1}, kSingleThreads, partials.ptr(),
               static_cast<int>(2 * kPartials), norm.ptr());
        double ref = std::sqrt(host::sumOfSquares<double>(a.data(), n) +
                               host::sumOfSquares<double>(b.data(), 77));
        EXPECT_CLOSE(norm.download(), std::vector<double>{ref},
                     kFloatTolerance);
      }
}

TEST_F(DeviceKernelTest, AdamW) {
  struct AdamCase {
    double step, beta2, maxGradNorm, gradNorm;
  };
  const AdamCase cases[] = {
      {1, 0.95, 1.0, 2.5},  // clipped
      {3, 0.999, 0.0, 2.5}, // no clipping
      {7, 0.95, 10.0, 2.5}, // the clip coefficient is capped at 1
  };
  const long long n = 10007;
  const double lr = 0.05, beta1 = 0.9, eps = 1e-8, weightDecay = 0.1;
  for (const AdamCase &c : cases) {
    SCOPED_TRACE("step " + std::to_string(c.step) + " beta2 " +
                 std::to_string(c.beta2) + " max norm " +
                 std::to_string(c.maxGradNorm));
    std::vector<double> param = randomValues(n, DType::F32);
    std::vector<double> grad = randomValues(n, DType::F32);
    std::vector<double> m = randomValues(n, DType::F32, -0.1, 0.1);
    std::vector<double> v = randomValues(n, DType::F32, 0.0, 0.01);
    DeviceTensor dParam = toDevice(param, DType::F32),
                 dGrad = toDevice(grad, DType::F32),
                 dM = toDevice(m, DType::F32), dV = toDevice(v, DType::F32);
    DeviceTensor dLr = toDevice({lr}, DType::F32),
                 dStep = toDevice({c.step}, DType::F32),
                 dNorm = toDevice({c.gradNorm}, DType::F32);
    launch("adamw", {7}, kColumnThreads, dParam.ptr(), dGrad.ptr(), dM.ptr(),
           dV.ptr(), n, dLr.ptr(), dStep.ptr(), dNorm.ptr(), beta1, c.beta2,
           eps, weightDecay, c.maxGradNorm);
    // The host reads lr as the FP32 value the plan stores.
    std::vector<double> paramRef = param, mRef = m, vRef = v;
    host::adamw<double>(paramRef.data(), grad.data(), mRef.data(), vRef.data(),
                        n, static_cast<float>(lr), c.step, c.gradNorm, beta1,
                        c.beta2, eps, weightDecay, c.maxGradNorm);
    // Compare the updates, not the parameters (which barely move).
    std::vector<double> got = dParam.download(), update(n), updateRef(n);
    for (long long i = 0; i < n; ++i) {
      update[i] = got[i] - param[i];
      updateRef[i] = paramRef[i] - param[i];
    }
    EXPECT_CLOSE(update, updateRef, kFloatTolerance);
    EXPECT_CLOSE(dM.download(), mRef, kFloatTolerance);
    EXPECT_CLOSE(dV.download(), vRef, kFloatTolerance);
  }
}

//===----------------------------------------------------------------------===//
// Determinism
//===----------------------------------------------------------------------===//

// Reductions have one order: two runs give the same bits.
TEST_F(DeviceKernelTest, RunsAreBitwiseReproducible) {
  const long long rows = 301;
  const int dim = 777;
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    DeviceTensor x = toDevice(randomValues(rows * dim, type), type),
                 dy = toDevice(randomValues(rows * dim, type), type),
                 w = toDevice(randomValues(dim, type), type);
    std::vector<double> first[3];
    for (int run = 0; run < 2; ++run) {
      DeviceTensor dx(type, rows * dim), rstd(DType::F32, rows), dw(type, dim),
          partials(DType::F32, 64), columns(DType::F32, 5 * dim);
      launch(kernel("rmsNormGrad", type), {97}, 256, dy.ptr(), x.ptr(), w.ptr(),
             dx.ptr(), rows, dim, 1e-5f);
      launch(kernel("rmsRowStats", type), {97}, 256, x.ptr(), rstd.ptr(), rows,
             dim, 1e-5f);
      launch(kernel("rmsNormWeightGradPartials", type), {4, 5}, kColumnThreads,
             dy.ptr(), x.ptr(), rstd.ptr(), columns.ptr(), rows, dim);
      launch(kernel("finishColumns", type), {4}, kColumnThreads, columns.ptr(),
             dw.ptr(), 5, static_cast<long long>(dim));
      launch(kernel("squaredNormPartial", type), {64}, kColumnThreads, x.ptr(),
             rows * dim, partials.ptr());
      std::vector<double> results[3] = {dx.download(), dw.download(),
                                        partials.download()};
      for (int i = 0; i < 3; ++i) {
        if (run == 0)
          first[i] = results[i];
        else
          EXPECT_EQ(results[i], first[i]) << "output " << i;
      }
    }
  }
}

} // namespace
