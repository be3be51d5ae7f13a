//===- Attention.cpp - CUDA for attention ---------------------------------===//
//
// BF16 attention with a head dim the tensor-core kernels take runs
// FlashAttention-2 (runtime/cuda/device/FlashAttention.cuh) with the op's
// tile sizes, fitted to what the kernels support; everything else runs the
// exact per-row kernels (runtime/cuda/device/Attention.cuh). The backward
// computes delta = rowsum(dout * out) first, into the step's scratch, and
// the flash backward accumulates dq there in FP32.
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"
#include "compiler/translate/cuda/EmitterSupport.h"

#include "passes/CostModel.h"

#include <cmath>

using namespace mlir;
using namespace kiln;
using namespace kiln::cuda;
using llvm::formatv;

namespace {

/// Whether attention on `query` with `headDim` runs the tensor-core
/// FlashAttention kernels: BF16 storage and a head dim they take.
bool usesFlashKernel(Value query, int64_t headDim) {
  return elementType(query).isBF16() && hasFlashKernel(headDim);
}

/// The tile sizes of an attention op, fitted to the tensor-core kernels.
template <typename AttentionOp>
AttentionTiles flashTiles(AttentionOp op, int64_t headDim, bool backward) {
  return fitFlashKernelTiles({static_cast<int64_t>(op.getBlockQ()),
                              static_cast<int64_t>(op.getBlockK()),
                              static_cast<int64_t>(op.getNumWarps()),
                              static_cast<int64_t>(op.getNumStages())},
                             headDim, backward);
}

/// A name for a generated body: its kind and a hash of its text, so that

/// The row pitches of q, k, v (and dq, dk, dv) that are row-strided views
/// into a packed tensor (tile-fold-views), as the trailing argument of the
/// device functions, and a kernel-name suffix that tells the variants
/// apart; both empty when every one is contiguous.
struct Pitches {
  std::string argument, suffix;
};
Pitches pitchesOf(ArrayRef<Value> values) {
  Pitches pitches;
  bool strided = false;
  for (unsigned i = 0; i < 6; ++i) {
    int64_t pitch = 0;
    if (i < values.size() && tile::isRowStrided(values[i]))
      pitch = tile::rowPitch(values[i]);
    strided |= pitch != 0;
    pitches.argument += (i ? ", " : "") + std::to_string(pitch);
    pitches.suffix += "_" + std::to_string(pitch);
  }
  if (!strided)
    return {};
  pitches.argument = ", kiln::dev::AttentionPitches{" + pitches.argument + "}";
  pitches.suffix = "_p" + pitches.suffix;
  return pitches;
}

/// The trailing arguments of an attention device call with a rope table:
/// the pitches (explicit, as the table follows them) and the table, and the
/// kernel-name suffix; nothing without one.
Pitches withRope(Pitches pitches, Value rope) {
  if (!rope)
    return pitches;
  if (pitches.argument.empty())
    pitches.argument = ", kiln::dev::AttentionPitches{}";
  pitches.argument += ", rope";
  pitches.suffix += "_rope";
  return pitches;
}

} // namespace

LogicalResult cuda::emitRopeTable(tile::RoPETableOp table, LaunchBuilder &k) {
  auto shape = cast<RankedTensorType>(table.getType()).getShape();
  int64_t threads = rowThreads(shape[2] / 2);
  Value positions = table.getPositions();
  positions ? k.value(positions, false, "positions")
            : k.null("int", "positions");
  k.value(table.getResult(), true, "table");
  k.integer("batch", shape[0]);
  k.integer("seq", shape[1]);
  k.integer("headDim", shape[2]);
  k.number("theta", table.getTheta().convertToDouble());
  k.launch(formatv("kiln_rope_table_t{0}", threads).str(),
           formatv("  kiln::dev::ropeTable<{0}>(positions, table, (int)batch, "
                   "(int)seq, (int)headDim, theta);\n",
                   threads)
               .str(),
           {std::min(shape[0] * shape[1], kMaxGrid)}, threads);
  return success();
}

LogicalResult cuda::emitAttentionForward(tile::FlashAttentionFwdOp attention,
                                         LaunchBuilder &k) {
  Value q = attention.getQuery();
  auto shape = cast<RankedTensorType>(q.getType()).getShape();
  int64_t heads = attention.getNumHeads();
  int64_t headDim = shape[2] / heads;
  double scale = attention.getScale() ? attention.getScale()->convertToDouble()
                                      : 1.0 / std::sqrt(double(headDim));
  std::string t = cudaType(elementType(q));
  k.value(q, false, "q");
  k.value(attention.getKey(), false, "k");
  k.value(attention.getValue(), false, "v");
  k.value(attention.getResult(), true, "out");
  k.value(attention.getLse(), true, "lse");
  k.integer("batch", shape[0]);
  k.integer("seq", shape[1]);
  k.integer("heads", heads);
  k.integer("kvHeads", attention.getNumKvHeads());
  k.number("scale", scale);
  k.integer("causal", attention.getCausal());
  Value cu = attention.getCuSeqlens();
  cu ? k.value(cu, false, "cuSeqlens") : k.null("int", "cuSeqlens");
  k.integer("numCuSeqlens", cu ? numElements(cu) : 0);
  Value rope = attention.getRope();
  if (rope)
    k.value(rope, false, "rope");
  Pitches pitches =
      withRope(pitchesOf({q, attention.getKey(), attention.getValue()}), rope);
  std::string args = "(q, k, v, out, lse, (int)batch, (int)seq, (int)heads, "
                     "(int)kvHeads, scale, causal != 0, cuSeqlens, "
                     "(int)numCuSeqlens" +
                     pitches.argument + ");\n";
  if (usesFlashKernel(q, headDim)) {
    // FlashAttention-2 on tensor cores with the op's tile sizes.
    AttentionTiles tiles = flashTiles(attention, headDim, /*backward=*/false);
    k.requireComputeCapability(plan::kBf16TensorCoreComputeCapability);
    k.launch(
        formatv("kiln_flash_attention_fwd_d{0}_q{1}_k{2}_s{3}{4}", headDim,
                tiles.blockQ, tiles.blockK, tiles.numStages, pitches.suffix)
            .str(),
        formatv("  kiln::dev::flashAttentionForward<{0}, {1}, {2}, "
                "{3}>{4}",
                headDim, tiles.blockQ, tiles.blockK, tiles.numStages, args)
            .str(),
        {ceilDiv(shape[1], tiles.blockQ), heads, shape[0]}, tiles.numWarps * 32,
        flashKernelSharedBytes(tiles, headDim, /*backward=*/false),
        /*minBlocksPerSm=*/1);
    return success();
  }
  // Exact per-row kernels for FP32 storage and other head dims.
  constexpr int64_t threads = 128;
  k.launch(formatv("kiln_attention_fwd_{0}_d{1}{2}",
                   planDtypeName(elementType(q)), headDim, pitches.suffix)
               .str(),
           formatv("  kiln::dev::attentionForward<{0}, {1}, {2}>{3}", t,
                   headDim, threads, args)
               .str(),
           {shape[1], heads, shape[0]}, threads);
  return success();
}

LogicalResult cuda::emitAttentionBackward(tile::FlashAttentionBwdOp grad,
                                          LaunchBuilder &k) {
  Value q = grad.getQuery();
  auto shape = cast<RankedTensorType>(q.getType()).getShape();
  int64_t heads = grad.getNumHeads(), kvHeads = grad.getNumKvHeads();
  int64_t headDim = shape[2] / heads;
  double scale = grad.getScale() ? grad.getScale()->convertToDouble()
                                 : 1.0 / std::sqrt(double(headDim));
  std::string t = cudaType(elementType(q));
  std::string tag = planDtypeName(elementType(q));
  const bool flash = usesFlashKernel(q, headDim);
  Value rope = grad.getRope();
  // Scratch: delta = rowsum(dout * out), then (flash) the FP32 dq
  // accumulator at a 256-byte boundary.
  int64_t rows = shape[0] * heads * shape[1];
  const int64_t accumOffset = ceilDiv(rows * 4, 256) * 256;
  k.step().scratchBytes = flash ? accumOffset + numElements(q) * 4 : rows * 4;
  constexpr int64_t threads = 128;

  k.value(grad.getGrad(), false, "dout");
  k.value(grad.getOutput(), false, "out");
  k.scratch("float", "delta", 0);
  k.integer("batch", shape[0]);
  k.integer("seq", shape[1]);
  k.integer("heads", heads);
  k.integer("headDim", headDim);
  if (flash)
    k.scratch("float", "dqAccum", accumOffset);
  k.launch("kiln_attention_bwd_delta_" + tag,
           formatv("  kiln::dev::attentionBackwardPreprocess<{0}, 32>(dout, "
                   "out, delta, (int)batch, (int)seq, (int)heads, "
                   "(int)headDim, {1});\n",
                   t, flash ? "dqAccum" : "nullptr")
               .str(),
           {shape[1], heads, shape[0]}, 32);

  // The parameters of the main kernels: dq (or, flash, its accumulator)
  // unless keyValue, dk and dv if keyValue.
  auto common = [&](bool keyValue) {
    k.value(grad.getGrad(), false, "dout");
    k.value(q, false, "q");
    k.value(grad.getKey(), false, "k");
    k.value(grad.getValue(), false, "v");
    k.value(grad.getLse(), false, "lse");
    k.scratch("const float", "delta", 0);
    if (flash)
      k.scratch("float", "dqAccum", accumOffset);
    if (keyValue) {
      k.value(grad.getKeyGrad(), true, "dk");
      k.value(grad.getValueGrad(), true, "dv");
    } else {
      k.value(grad.getQueryGrad(), true, "dq");
    }
    k.integer("batch", shape[0]);
    k.integer("seq", shape[1]);
    k.integer("heads", heads);
    k.integer("kvHeads", kvHeads);
    k.number("scale", scale);
    k.integer("causal", grad.getCausal());
    Value cu = grad.getCuSeqlens();
    cu ? k.value(cu, false, "cuSeqlens") : k.null("int", "cuSeqlens");
    k.integer("numCuSeqlens", cu ? numElements(cu) : 0);
    if (rope)
      k.value(rope, false, "rope");
  };
  Pitches pitches = withRope(
      pitchesOf({q, grad.getKey(), grad.getValue(), grad.getQueryGrad(),
                 grad.getKeyGrad(), grad.getValueGrad()}),
      rope);
  std::string tail = "(int)batch, (int)seq, (int)heads, (int)kvHeads, "
                     "scale, causal != 0, cuSeqlens, (int)numCuSeqlens" +
                     pitches.argument + ");\n";
  if (flash) {
    AttentionTiles tiles = flashTiles(grad, headDim, /*backward=*/true);
    common(/*keyValue=*/true);
    k.requireComputeCapability(plan::kBf16TensorCoreComputeCapability);
    k.launch(formatv("kiln_flash_attention_bwd_d{0}_q{1}_k{2}{3}", headDim,
                     tiles.blockQ, tiles.blockK, pitches.suffix)
                 .str(),
             formatv("  kiln::dev::flashAttentionBackward<{0}, {1}, {2}>("
                     "dout, q, k, v, lse, delta, dqAccum, dk, dv, {3}",
                     headDim, tiles.blockQ, tiles.blockK, tail)
                 .str(),
             {ceilDiv(shape[1], tiles.blockK), kvHeads, shape[0]},
             tiles.numWarps * 32,
             flashKernelSharedBytes(tiles, headDim, /*backward=*/true),
             /*minBlocksPerSm=*/1);
    k.scratch("const float", "dqAccum", accumOffset);
    k.value(grad.getQueryGrad(), true, "dq");
    k.integer("n", numElements(q));
    k.number("scale", scale);
    Value dq = grad.getQueryGrad();
    bool stridedDq = tile::isRowStrided(dq);
    if (rope) {
      // dq rotated back pair by pair: a thread per pair.
      int64_t pitch = stridedDq ? tile::rowPitch(dq) : 0;
      k.value(rope, false, "rope");
      k.launch(formatv("kiln_flash_attention_bwd_dq_rope_{0}_d{1}_w{2}_p{3}",
                       tag, headDim, shape[2], pitch)
                   .str(),
               formatv("  kiln::dev::flashAttentionFinishDqRope<{0}>(dqAccum, "
                       "dq, rope, n, scale, {1}, {2}, {3});\n",
                       t, headDim, shape[2], pitch)
                   .str(),
               {std::min(kMaxGrid,
                         ceilDiv(numElements(q) / 2, kElementwiseThreads))},
               kElementwiseThreads);
      return success();
    }
    k.launch(
        stridedDq ? formatv("kiln_flash_attention_bwd_dq_{0}_w{1}_p{2}", tag,
                            shape[2], tile::rowPitch(dq))
                        .str()
                  : "kiln_flash_attention_bwd_dq_" + tag,
        formatv("  kiln::dev::flashAttentionFinishDq<{0}>(dqAccum, dq, "
                "n, scale{1});\n",
                t,
                stridedDq
                    ? formatv(", {0}, {1}", shape[2], tile::rowPitch(dq)).str()
                    : std::string())
            .str(),
        {std::min(kMaxGrid, ceilDiv(numElements(q), kElementwiseThreads))},
        kElementwiseThreads);
    return success();
  }
  common(/*keyValue=*/false);
  k.launch(
      formatv("kiln_attention_bwd_q_{0}_d{1}{2}", tag, headDim, pitches.suffix)
          .str(),
      formatv("  kiln::dev::attentionBackwardQuery<{0}, {1}, {2}>("
              "dout, q, k, v, lse, delta, dq, {3}",
              t, headDim, threads, tail)
          .str(),
      {shape[1], heads, shape[0]}, threads);
  common(/*keyValue=*/true);
  k.launch(
      formatv("kiln_attention_bwd_kv_{0}_d{1}{2}", tag, headDim, pitches.suffix)
          .str(),
      formatv("  kiln::dev::attentionBackwardKeyValue<{0}, {1}, {2}>("
              "dout, q, k, v, lse, delta, dk, dv, {3}",
              t, headDim, threads, tail)
          .str(),
      {shape[1], kvHeads, shape[0]}, threads);
  return success();
}
