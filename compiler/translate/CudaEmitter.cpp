//===- CudaEmitter.cpp - CUDA C++ for tile kernels ------------------------===//
//
// The dispatch: one emitter per kernel family (compiler/translate/cuda/),
// chosen by the step's op or, for a fused region, by what the region
// holds.
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/CudaEmitter.h"
#include "compiler/translate/cuda/EmitterSupport.h"
#include "dialects/dist/DistOps.h"
#include "runtime/plan/Schema.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kiln;

namespace {

/// A fused region: one generated kernel for a region of elementwise ops or
/// of several row-local ops with one row count, else the kernel of its one
/// op (norm weight gradients, column sums, split and concat, and single
/// row-wise ops, which keep their library kernels).
LogicalResult emitFused(tile::FusedOp fused, LaunchBuilder &k) {
  Block &body = fused.getBody().front();
  auto yield = cast<tile::YieldOp>(body.getTerminator());
  bool elementwise = llvm::all_of(body.without_terminator(), [](Operation &op) {
    return cuda::isElementwise(&op);
  });
  // A row-strided input or output (a view into a packed tensor) needs the
  // row kernel, which addresses each operand's rows by its pitch.
  bool strided =
      llvm::any_of(llvm::concat<Value>(fused.getInputs(), fused.getResults()),
                   [](Value v) { return tile::isRowStrided(v); });
  if (strided) {
    std::string whyNot;
    if (std::optional<int64_t> rows = tile::rowWiseRows(fused, &whyNot))
      return cuda::emitRowRegion(fused, *rows, k);
    return fused->emitOpError()
           << "cuda: a fused region with row-strided operands must be "
              "row-wise; "
           << whyNot;
  }
  if (nn::LayerNormWeightGradOp weightGrad = cuda::layerNormParamGrads(fused))
    return cuda::emitLayerNormParamGrads(fused, weightGrad, k);
  // Elementwise ops of one element count: a flat loop over the elements.
  int64_t count = cuda::numElements(fused.getResult(0));
  if (elementwise &&
      llvm::all_of(body.without_terminator(), [&](Operation &op) {
        return llvm::all_of(
            llvm::concat<Value>(op.getOperands(), op.getResults()),
            [&](Value v) { return cuda::numElements(v) == count; });
      }))
    return cuda::emitElementwiseRegion(fused, k);

  if (!llvm::hasSingleElement(body.without_terminator())) {
    // Rows of different widths (elementwise ops among them) share rows.
    std::string whyNot;
    if (std::optional<int64_t> rows = tile::rowWiseRows(fused, &whyNot))
      return cuda::emitRowRegion(fused, *rows, k);
    if (elementwise)
      return cuda::emitElementwiseRegion(fused, k); // its diagnostic
    return fused->emitOpError()
           << "cuda: a fused region of several ops needs them all "
              "elementwise, or all row-local with one row count, to run as "
              "one kernel; "
           << whyNot;
  }
  // Body values to the step's operands and results.
  llvm::DenseMap<Value, Value> outer;
  for (auto [arg, input] :
       llvm::zip_equal(body.getArguments(), fused.getInputs()))
    outer[arg] = input;
  for (auto [inner, result] :
       llvm::zip_equal(yield.getValues(), fused.getResults()))
    outer[inner] = result;
  Operation &inner = body.front();
  if (llvm::any_of(inner.getOperands(),
                   [&](Value v) { return !outer.lookup(v); }) ||
      llvm::any_of(inner.getResults(),
                   [&](Value v) { return !outer.lookup(v); }))
    return fused->emitOpError("cuda: the region must yield its op's results");

  cuda::RegionOp region{&inner, outer};
  return llvm::TypeSwitch<Operation *, LogicalResult>(&inner)
      .Case<nn::RMSNormOp, nn::RMSNormGradOp, nn::LayerNormOp,
            nn::LayerNormGradOp>(
          [&](Operation *) { return cuda::emitNorm(region, k); })
      .Case<nn::RMSNormWeightGradOp, nn::LayerNormWeightGradOp>(
          [&](Operation *) { return cuda::emitNormWeightGrad(region, k); })
      .Case([&](nn::ColumnSumOp) { return cuda::emitColumnSum(region, k); })
      .Case([&](nn::RoPEOp rope) { return cuda::emitRope(rope, region, k); })
      .Case([&](nn::EmbeddingOp) { return cuda::emitEmbedding(region, k); })
      .Case<nn::SplitOp, nn::ConcatOp>(
          [&](Operation *) { return cuda::emitSplitConcat(region, k); })
      .Default([](Operation *op) {
        return op->emitOpError("cuda: no CUDA kernel for this op");
      });
}

} // namespace

FailureOr<CudaStep> CudaEmitter::emit(Operation *op) {
  CudaStep step;
  LaunchBuilder k(*this, step);
  LogicalResult emitted =
      llvm::TypeSwitch<Operation *, LogicalResult>(op)
          // arith.constant splat: a fill.
          .Case([&](arith::ConstantOp c) { return cuda::emitFill(c, k); })
          // GEMMs run in cuBLASLt and need no source.
          .Case([&](tile::GemmOp) {
            step.library = std::string(plan::kCublasLt);
            return success();
          })
          // Collectives run in NCCL.
          .Case<dist::AllReduceOp, dist::ReduceScatterOp, dist::AllGatherOp,
                dist::AllGatherIntoOp>([&](Operation *) {
            step.library = std::string(plan::kNccl);
            return success();
          })
          .Case([&](tile::RoPETableOp r) { return cuda::emitRopeTable(r, k); })
          .Case([&](tile::FlashAttentionFwdOp a) {
            return cuda::emitAttentionForward(a, k);
          })
          .Case([&](tile::FlashAttentionBwdOp a) {
            return cuda::emitAttentionBackward(a, k);
          })
          .Case([&](tile::CrossEntropyOp c) {
            return cuda::emitCrossEntropy(c, k);
          })
          .Case([&](tile::CrossEntropyGradOp c) {
            return cuda::emitCrossEntropyGrad(c, k);
          })
          .Case([&](tile::LinearCrossEntropyOp l) {
            return cuda::emitLinearCrossEntropy(l, k);
          })
          .Case([&](tile::EmbeddingGradOp e) {
            return cuda::emitEmbeddingGrad(e, k);
          })
          .Case(
              [&](tile::GlobalNormOp n) { return cuda::emitGlobalNorm(n, k); })
          .Case([&](tile::AdamWOp a) { return cuda::emitAdamW(a, k); })
          .Case([&](tile::GradAccumulateOp a) {
            return cuda::emitGradAccumulate(a, k);
          })
          .Case([&](tile::FusedOp f) { return emitFused(f, k); })
          .Default([](Operation *o) {
            return o->emitOpError("cuda: no CUDA kernel for this op");
          });
  if (failed(emitted))
    return failure();
  return step;
}
