//===- DeviceAttentionTest.cpp - Attention kernels against the host ------===//
//
// The exact per-row attention kernels and the tensor-core FlashAttention
// kernels of the device library against the host reference, on a GPU (the
// fixture and helpers: DeviceKernelTestSupport.h). Without a GPU every test
// skips with the reason.
//
//===----------------------------------------------------------------------===//

#include "DeviceKernelTestSupport.h"

#include "runtime/cuda/FlashAttention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

using namespace kiln::rt::cuda::devtest;

namespace {

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

/// An attention case with the kernels' parameter types (int sizes, a float
/// scale), which launches pass as they are; described as the host tests'.
struct AttentionCase {
  int batch, seq, heads, kvHeads, headDim;
  bool causal;
  std::vector<std::int32_t> cuSeqlens; ///< empty: none

  long long qSize() const {
    return static_cast<long long>(batch) * seq * heads * headDim;
  }
  long long kvSize() const {
    return static_cast<long long>(batch) * seq * kvHeads * headDim;
  }
  long long rows() const { return static_cast<long long>(batch) * heads * seq; }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(headDim)); }
  std::string describe() const {
    return kiln::rt::host::testing::AttentionCase{
        batch, seq, heads, kvHeads, headDim, causal, cuSeqlens}
        .describe();
  }
};

/// GQA groups 1, 4 and 8; causal or not; head dims 64 and 128; sequence
/// lengths around the 4 warps of a block and past 32 and 128; packed
/// documents: an empty one, one crossing batch rows, single tokens.
std::vector<AttentionCase> attentionCases() {
  std::vector<AttentionCase> cases;
  for (int headDim : {64, 128})
    for (bool causal : {false, true}) {
      for (int kvHeads : {8, 2, 1})
        for (int seq : {1, 3, 4, 5, 33, 129})
          cases.push_back({2, seq, 8, kvHeads, headDim, causal, {}});
      cases.push_back({2, 100, 8, 2, headDim, causal, {0, 17, 17, 120, 200}});
      cases.push_back({2, 64, 4, 1, headDim, causal, {0, 128}});
      cases.push_back({1, 7, 2, 2, headDim, causal, {0, 1, 2, 3, 4, 5, 6, 7}});
    }
  return cases;
}

/// The attention kernels' name: "attentionForward" -> "..._bf16_d128".
std::string attentionKernel(const char *function, DType type, int headDim) {
  return std::string(function) + "_" + tagOf(type) + "_d" +
         std::to_string(headDim);
}

/// Random inputs of one attention case in `type` (on the host and the
/// device) and the FP64 host reference: the forward's out and lse, and the
/// backward's gradients from out as `type` stores it (also on the device,
/// with lse, for the backward kernels).
struct AttentionData {
  AttentionData(const AttentionCase &c, DType type)
      : q(randomValues(c.qSize(), type, -2, 2)),
        k(randomValues(c.kvSize(), type, -2, 2)),
        v(randomValues(c.kvSize(), type)), dout(randomValues(c.qSize(), type)),
        outRef(c.qSize()), dqRef(c.qSize()), dkRef(c.kvSize()),
        dvRef(c.kvSize()), lseRef(c.rows()), dQ(toDevice(q, type)),
        dK(toDevice(k, type)), dV(toDevice(v, type)),
        dDout(toDevice(dout, type)), cu(c.cuSeqlens),
        cuPtr(c.cuSeqlens.empty() ? kNull : cu.ptr()),
        numCu(static_cast<int>(c.cuSeqlens.size())) {
    const std::int32_t *hostCu =
        c.cuSeqlens.empty() ? nullptr : c.cuSeqlens.data();
    std::vector<float> lse(c.rows());
    host::attentionForward<double>(
        q.data(), k.data(), v.data(), outRef.data(), lse.data(), c.batch, c.seq,
        c.heads, c.kvHeads, c.headDim, c.scale(), c.causal, hostCu, numCu);
    lseRef.assign(lse.begin(), lse.end());
    outStored = representableAll(outRef, type);
    host::attentionBackward<double>(
        dout.data(), q.data(), k.data(), v.data(), outStored.data(), lse.data(),
        dqRef.data(), dkRef.data(), dvRef.data(), c.batch, c.seq, c.heads,
        c.kvHeads, c.headDim, c.scale(), c.causal, hostCu, numCu);
    dOut = toDevice(outStored, type);
    dLse = toDevice(lseRef, DType::F32);
  }

  std::vector<double> q, k, v, dout, outRef, outStored, dqRef, dkRef, dvRef;
  std::vector<double> lseRef; ///< FP32 values
  DeviceTensor dQ, dK, dV, dDout;
  std::optional<DeviceTensor> dOut, dLse;
  DeviceInts cu;
  CUdeviceptr cuPtr;
  int numCu;
};

TEST_F(DeviceKernelTest, AttentionForwardAndBackward) {
  for (DType type : kDTypes)
    for (const AttentionCase &c : attentionCases()) {
      SCOPED_TRACE(std::string(tagOf(type)) + " " + c.describe());
      const AttentionData a(c, type);
      const float scale = c.scale();
      const unsigned seq = c.seq, heads = c.heads, batch = c.batch,
                     kvHeads = c.kvHeads;

      // Forward.
      DeviceTensor out(type, c.qSize()), lse(DType::F32, c.rows());
      launch(attentionKernel("attentionForward", type, c.headDim),
             {seq, heads, batch}, kAttentionThreads, a.dQ.ptr(), a.dK.ptr(),
             a.dV.ptr(), out.ptr(), lse.ptr(), c.batch, c.seq, c.heads,
             c.kvHeads, scale, c.causal, a.cuPtr, a.numCu);
      EXPECT_CLOSE(out.download(), a.outRef, toleranceOf(type));
      EXPECT_CLOSE(lse.download(), a.lseRef, kFloatTolerance);

      // Backward, from the reference's out (as the type stores it) and lse.
      std::vector<double> deltaRef(c.rows());
      for (int b = 0; b < c.batch; ++b)
        for (int h = 0; h < c.heads; ++h)
          for (int i = 0; i < c.seq; ++i) {
            long long offset =
                ((static_cast<long long>(b) * c.seq + i) * c.heads + h) *
                c.headDim;
            double sum = 0;
            for (int d = 0; d < c.headDim; ++d)
              sum += a.dout[offset + d] * a.outStored[offset + d];
            deltaRef[(static_cast<long long>(b) * c.heads + h) * c.seq + i] =
                sum;
          }
      // The warp-per-row launch of the code generator, then a 1-D one.
      DeviceTensor delta(DType::F32, c.rows());
      launch(kernel("attentionBackwardPreprocess", type, "_t32"),
             {seq, heads, batch}, 32, a.dDout.ptr(), a.dOut->ptr(), delta.ptr(),
             c.batch, c.seq, c.heads, c.headDim);
      EXPECT_CLOSE(delta.download(), deltaRef, kFloatTolerance);
      DeviceTensor delta1d(DType::F32, c.rows());
      launch(kernel("attentionBackwardPreprocess", type),
             {std::min(5u, ceilDiv(c.rows(), 8))}, 256, a.dDout.ptr(),
             a.dOut->ptr(), delta1d.ptr(), c.batch, c.seq, c.heads, c.headDim);
      EXPECT_EQ(delta1d.download(), delta.download());

      DeviceTensor dq(type, c.qSize()), dk(type, c.kvSize()),
          dv(type, c.kvSize());
      launch(attentionKernel("attentionBackwardQuery", type, c.headDim),
             {seq, heads, batch}, kAttentionThreads, a.dDout.ptr(), a.dQ.ptr(),
             a.dK.ptr(), a.dV.ptr(), a.dLse->ptr(), delta.ptr(), dq.ptr(),
             c.batch, c.seq, c.heads, c.kvHeads, scale, c.causal, a.cuPtr,
             a.numCu);
      launch(attentionKernel("attentionBackwardKeyValue", type, c.headDim),
             {seq, kvHeads, batch}, kAttentionThreads, a.dDout.ptr(),
             a.dQ.ptr(), a.dK.ptr(), a.dV.ptr(), a.dLse->ptr(), delta.ptr(),
             dk.ptr(), dv.ptr(), c.batch, c.seq, c.heads, c.kvHeads, scale,
             c.causal, a.cuPtr, a.numCu);
      EXPECT_CLOSE(dq.download(), a.dqRef, toleranceOf(type));
      EXPECT_CLOSE(dk.download(), a.dkRef, toleranceOf(type));
      EXPECT_CLOSE(dv.download(), a.dvRef, toleranceOf(type));
    }
}

/// A flash configuration of DeviceKernels.cu: forward and backward tile
/// sizes for one head dim.
struct FlashConfig {
  int headDim, blockQ, blockK, stages, bwdBlockQ, bwdBlockK;
  std::string forward() const {
    return "flashAttentionForward_d" + std::to_string(headDim) + "_q" +
           std::to_string(blockQ) + "_k" + std::to_string(blockK) + "_s" +
           std::to_string(stages);
  }
  unsigned forwardSharedBytes() const {
    return static_cast<unsigned>(kiln::rt::cuda::flashForwardSharedBytes(
        headDim, blockQ, blockK, stages));
  }
  unsigned backwardSharedBytes() const {
    return static_cast<unsigned>(kiln::rt::cuda::flashBackwardSharedBytes(
        headDim, bwdBlockQ, bwdBlockK));
  }
  std::string backward() const {
    return "flashAttentionBackward_d" + std::to_string(headDim) + "_q" +
           std::to_string(bwdBlockQ) + "_k" + std::to_string(bwdBlockK);
  }
};
constexpr FlashConfig kFlashConfigs[] = {{64, 128, 128, 2, 64, 128},
                                         {128, 128, 64, 2, 64, 128},
                                         {64, 16, 16, 1, 32, 32},
                                         {128, 64, 32, 1, 32, 32}};
/// BF16 outputs of the flash kernels, whose probabilities and dS are
/// rounded to BF16 for the tensor cores (the CPU emulation's bound).
constexpr double kFlashTolerance = 1e-2;

// The tensor-core kernels on the attention grid, each configuration of its
// head dim, as the code generator launches them: forward, delta with the
// dq accumulator zeroed, backward, dq finish; against the FP64 host
// reference.
TEST_F(DeviceKernelTest, FlashAttentionMatchesHost) {
  const DType type = DType::BF16;
  for (const AttentionCase &c : attentionCases())
    for (const FlashConfig &config : kFlashConfigs) {
      if (config.headDim != c.headDim)
        continue;
      SCOPED_TRACE(config.forward() + " " + config.backward() + " " +
                   c.describe());
      const AttentionData a(c, type);
      const float scale = c.scale();

      DeviceTensor out(type, c.qSize()), lse(DType::F32, c.rows());
      launchShared(
          config.forward(),
          {ceilDiv(c.seq, config.blockQ), unsigned(c.heads), unsigned(c.batch)},
          config.blockQ / 16 * 32, config.forwardSharedBytes(), a.dQ.ptr(),
          a.dK.ptr(), a.dV.ptr(), out.ptr(), lse.ptr(), c.batch, c.seq, c.heads,
          c.kvHeads, scale, c.causal, a.cuPtr, a.numCu);
      EXPECT_CLOSE(out.download(), a.outRef, kFlashTolerance);
      EXPECT_CLOSE(lse.download(), a.lseRef, kFloatTolerance);

      DeviceTensor delta(DType::F32, c.rows()), dqAccum(DType::F32, c.qSize());
      launch("flashAttentionPreprocess_bf16",
             {unsigned(c.seq), unsigned(c.heads), unsigned(c.batch)}, 32,
             a.dDout.ptr(), a.dOut->ptr(), delta.ptr(), c.batch, c.seq, c.heads,
             c.headDim, dqAccum.ptr());
      DeviceTensor dq(type, c.qSize()), dk(type, c.kvSize()),
          dv(type, c.kvSize());
      launchShared(config.backward(),
                   {ceilDiv(c.seq, config.bwdBlockK), unsigned(c.kvHeads),
                    unsigned(c.batch)},
                   config.bwdBlockK / 16 * 32, config.backwardSharedBytes(),
                   a.dDout.ptr(), a.dQ.ptr(), a.dK.ptr(), a.dV.ptr(),
                   a.dLse->ptr(), delta.ptr(), dqAccum.ptr(), dk.ptr(),
                   dv.ptr(), c.batch, c.seq, c.heads, c.kvHeads, scale,
                   c.causal, a.cuPtr, a.numCu);
      launch("flashAttentionFinishDq_bf16", {ceilDiv(c.qSize(), 256)},
             kColumnThreads, dqAccum.ptr(), dq.ptr(), c.qSize(), scale);
      EXPECT_CLOSE(dq.download(), a.dqRef, kFlashTolerance);
      EXPECT_CLOSE(dk.download(), a.dkRef, kFlashTolerance);
      EXPECT_CLOSE(dv.download(), a.dvRef, kFlashTolerance);
    }
}

// Grids smaller than (seq, heads, batch): the kernels stride, and give the
// same bits as the full grid (each row's work does not depend on the grid).
TEST_F(DeviceKernelTest, AttentionSmallGridMatchesFullGrid) {
  const AttentionCase c{2, 37, 8, 2, 64, true, {0, 30, 74}};
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    DeviceTensor q = toDevice(randomValues(c.qSize(), type), type),
                 k = toDevice(randomValues(c.kvSize(), type), type),
                 v = toDevice(randomValues(c.kvSize(), type), type),
                 dout = toDevice(randomValues(c.qSize(), type), type);
    DeviceInts cu(c.cuSeqlens);
    const int numCu = static_cast<int>(c.cuSeqlens.size());
    std::vector<std::vector<double>> results[2];
    const Grid full{37, 8, 2}, fullKv{37, 2, 2}, small{5, 3, 1};
    for (int run = 0; run < 2; ++run) {
      const Grid grid = run == 0 ? full : small;
      const Grid kvGrid = run == 0 ? fullKv : small;
      DeviceTensor out(type, c.qSize()), lse(DType::F32, c.rows()),
          delta(DType::F32, c.rows()), dq(type, c.qSize()),
          dk(type, c.kvSize()), dv(type, c.kvSize());
      launch(attentionKernel("attentionForward", type, 64), grid,
             kAttentionThreads, q.ptr(), k.ptr(), v.ptr(), out.ptr(), lse.ptr(),
             c.batch, c.seq, c.heads, c.kvHeads, c.scale(), c.causal, cu.ptr(),
             numCu);
      launch(kernel("attentionBackwardPreprocess", type, "_t32"), grid, 32,
             dout.ptr(), out.ptr(), delta.ptr(), c.batch, c.seq, c.heads,
             c.headDim);
      launch(attentionKernel("attentionBackwardQuery", type, 64), grid,
             kAttentionThreads, dout.ptr(), q.ptr(), k.ptr(), v.ptr(),
             lse.ptr(), delta.ptr(), dq.ptr(), c.batch, c.seq, c.heads,
             c.kvHeads, c.scale(), c.causal, cu.ptr(), numCu);
      launch(attentionKernel("attentionBackwardKeyValue", type, 64), kvGrid,
             kAttentionThreads, dout.ptr(), q.ptr(), k.ptr(), v.ptr(),
             lse.ptr(), delta.ptr(), dk.ptr(), dv.ptr(), c.batch, c.seq,
             c.heads, c.kvHeads, c.scale(), c.causal, cu.ptr(), numCu);
      results[run] = {out.download(), lse.download(), delta.download(),
                      dq.download(),  dk.download(),  dv.download()};
    }
    EXPECT_EQ(results[0], results[1]);
  }
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

} // namespace
