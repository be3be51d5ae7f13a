//===- AccumulateGradients.cpp - nn-accumulate-gradients ------------------===//
//
// Gradient accumulation: an FP32 accumulator per parameter, a micro-step
// input, one multi-tensor nn.grad_accumulate at the end of the W chunk, and
// the optimizer reading the accumulators.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"
#include "passes/Chunks.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

namespace kiln {
#define GEN_PASS_DEF_NNACCUMULATEGRADIENTSPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

struct NNAccumulateGradientsPass
    : kiln::impl::NNAccumulateGradientsPassBase<NNAccumulateGradientsPass> {
  using Base::Base;
  void runOnOperation() final;

private:
  LogicalResult accumulate(func::FuncOp step);
};

bool inChunk(Operation *op, StringRef chunk) {
  auto tag = op->getAttrOfType<StringAttr>(kChunkAttr);
  return tag && tag.getValue() == chunk;
}

void NNAccumulateGradientsPass::runOnOperation() {
  ModuleOp module = getOperation();
  int64_t count = microBatches;
  if (count < 1) {
    module.emitError() << "nn-accumulate-gradients: micro-batches must be at "
                          "least 1, got "
                       << count;
    return signalPassFailure();
  }
  auto step = module.lookupSymbol<func::FuncOp>(trainStepName);
  if (!step) {
    module.emitError() << "nn-accumulate-gradients: no function @"
                       << trainStepName << " (run nn-autodiff first)";
    return signalPassFailure();
  }
  if (microBatches > 1 && failed(accumulate(step)))
    return signalPassFailure();
  attrs::setModelEntry(module, "micro_batches",
                       Builder(module.getContext()).getI64IntegerAttr(count));
}

LogicalResult NNAccumulateGradientsPass::accumulate(func::FuncOp step) {
  MLIRContext *ctx = &getContext();
  Block &body = step.getBody().front();
  SmallVector<nn::AdamWUpdateOp> updates(body.getOps<nn::AdamWUpdateOp>());
  if (updates.empty())
    return step.emitError() << "nn-accumulate-gradients: @" << trainStepName
                            << " has no nn.adamw_update to accumulate the "
                               "gradients of";
  for (BlockArgument arg : step.getArguments())
    if (StringAttr input = attrs::kInput.getArg(step, arg.getArgNumber());
        attrs::kGradAccumulator.getArg(step, arg.getArgNumber()) ||
        (input && input.getValue() == "micro_step"))
      return step.emitError() << "nn-accumulate-gradients: @" << trainStepName
                              << " already accumulates its gradients";
  Operation *firstOptimizerOp = nullptr;
  for (Operation &op : body.without_terminator())
    if (inChunk(&op, "O")) {
      firstOptimizerOp = &op;
      break;
    }

  // The accumulators (one per parameter, the gradient's type) and the
  // micro-step index, as new arguments in one insertion.
  SmallVector<unsigned> indices;
  SmallVector<Type> types;
  SmallVector<DictionaryAttr> argAttrs;
  SmallVector<Location> locs;
  SmallVector<StringAttr> names;
  for (nn::AdamWUpdateOp update : updates) {
    auto param = dyn_cast<BlockArgument>(update.getParam());
    StringAttr name =
        param ? attrs::kParam.getArg(step, param.getArgNumber()) : StringAttr();
    if (!name)
      return update.emitOpError()
             << "nn-accumulate-gradients: updates a value that is not a "
                "parameter argument";
    names.push_back(name);
    indices.push_back(step.getNumArguments());
    types.push_back(update.getGrad().getType());
    argAttrs.push_back(
        DictionaryAttr::get(ctx, {attrs::kGradAccumulator.named(name)}));
    locs.push_back(param.getLoc());
  }
  Type scalar = RankedTensorType::get({}, Float32Type::get(ctx));
  indices.push_back(step.getNumArguments());
  types.push_back(scalar);
  argAttrs.push_back(DictionaryAttr::get(
      ctx, {attrs::kInput.named(StringAttr::get(ctx, "micro_step"))}));
  locs.push_back(step.getLoc());
  unsigned first = step.getNumArguments();
  if (failed(step.insertArguments(indices, types, argAttrs, locs)))
    return failure();

  SmallVector<Value> operands(step.getArguments().drop_front(first));
  Value microStep = operands.pop_back_val();
  for (nn::AdamWUpdateOp update : updates)
    operands.push_back(update.getGrad());
  operands.push_back(microStep);
  OpBuilder b(ctx);
  if (firstOptimizerOp)
    b.setInsertionPoint(firstOptimizerOp);
  else
    b.setInsertionPoint(body.getTerminator());
  auto accumulate = nn::GradAccumulateOp::create(
      b, step.getLoc(), TypeRange(ArrayRef(types).drop_back()), operands);
  accumulate->setAttr(kChunkAttr, StringAttr::get(ctx, "W"));

  // The optimizer reads the sums; the forward and backward keep this
  // micro-batch's gradients.
  for (auto [i, update] : llvm::enumerate(updates)) {
    Value sum = accumulate.getAccumulated()[i];
    update.getGrad().replaceUsesWithIf(sum, [&](OpOperand &use) {
      return use.getOwner() != accumulate && inChunk(use.getOwner(), "O");
    });
  }

  // The new accumulators are results of the step, marked like their
  // arguments (state that persists, as the moments do).
  Operation *ret = body.getTerminator();
  SmallVector<unsigned> resultIndices;
  SmallVector<DictionaryAttr> resultAttrs;
  for (StringAttr name : names) {
    resultIndices.push_back(step.getNumResults());
    resultAttrs.push_back(
        DictionaryAttr::get(ctx, {attrs::kGradAccumulator.named(name)}));
  }
  if (failed(step.insertResults(
          resultIndices, TypeRange(ArrayRef(types).drop_back()), resultAttrs)))
    return failure();
  ret->insertOperands(ret->getNumOperands(), accumulate.getAccumulated());
  return success();
}

} // namespace
