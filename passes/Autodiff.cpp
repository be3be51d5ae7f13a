//===- Autodiff.cpp - nn-autodiff: the training step ----------------------===//
//
// Builds `train_step` from the forward function: forward ops, the backward
// pass derived op by op through DifferentiableOpInterface, gradient-norm
// clipping and AdamW. Tags every op with its chunk (F, B, W, O).
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"
#include "passes/Chunks.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"

namespace kiln {
#define GEN_PASS_DEF_NNAUTODIFFPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;
using namespace kiln::nn;

namespace {

constexpr StringLiteral kParamAttr = attrs::kParam.name;
constexpr StringLiteral kExpAvgAttr = attrs::kExpAvg.name;
constexpr StringLiteral kExpAvgSqAttr = attrs::kExpAvgSq.name;
constexpr StringLiteral kInputAttr = attrs::kInput.name;
constexpr StringLiteral kOutputAttr = attrs::kOutput.name;

/// Remembers every op a builder inserts.
struct RecordingListener : OpBuilder::Listener {
  void notifyOperationInserted(Operation *op, OpBuilder::InsertPoint) override {
    created.push_back(op);
  }
  SmallVector<Operation *> created;
};

bool isFloatTensor(Value v) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  return type && isa<FloatType>(type.getElementType());
}

Value splat(OpBuilder &b, Location loc, Type type, double value) {
  auto tensorType = cast<RankedTensorType>(type);
  auto element = FloatAttr::get(tensorType.getElementType(), value);
  return arith::ConstantOp::create(b, loc,
                                   DenseElementsAttr::get(tensorType, element));
}

struct NNAutodiffPass : kiln::impl::NNAutodiffPassBase<NNAutodiffPass> {
  using Base::Base;
  void runOnOperation() final;

private:
  LogicalResult buildTrainStep(func::FuncOp forward);
};

void NNAutodiffPass::runOnOperation() {
  ModuleOp module = getOperation();
  auto forward = module.lookupSymbol<func::FuncOp>(forwardName);
  if (!forward) {
    module.emitError() << "nn-autodiff: no function @" << forwardName
                       << " to differentiate";
    return signalPassFailure();
  }
  if (module.lookupSymbol(trainStepName)) {
    module.emitError() << "nn-autodiff: @" << trainStepName
                       << " already exists";
    return signalPassFailure();
  }
  if (failed(buildTrainStep(forward)))
    return signalPassFailure();
}

LogicalResult NNAutodiffPass::buildTrainStep(func::FuncOp forward) {
  MLIRContext *ctx = forward.getContext();
  if (!forward.getBody().hasOneBlock())
    return forward.emitError("nn-autodiff: expects a single-block function");
  auto forwardReturn =
      cast<func::ReturnOp>(forward.getBody().front().getTerminator());
  auto scalarF32 = RankedTensorType::get({}, Float32Type::get(ctx));
  if (forwardReturn.getNumOperands() != 1 ||
      forwardReturn.getOperand(0).getType() != scalarF32)
    return forwardReturn.emitError(
        "nn-autodiff: expects the forward function to return the loss, a "
        "single tensor<f32>");

  // The new function starts as a copy of the forward pass.
  func::FuncOp step = forward.clone();
  step.setSymName(trainStepName);
  SymbolTable(getOperation()).insert(step, std::next(forward->getIterator()));
  Block &body = step.getBody().front();
  auto stepReturn = cast<func::ReturnOp>(body.getTerminator());
  SmallVector<Operation *> forwardOps;
  for (Operation &op : body.without_terminator()) {
    op.setAttr(kChunkAttr, StringAttr::get(ctx, "F"));
    forwardOps.push_back(&op);
  }

  // Parameters: arguments marked kiln.param, FP32 master weights.
  SmallVector<BlockArgument> params;
  SmallVector<StringAttr> paramNames;
  for (BlockArgument arg : body.getArguments()) {
    auto name =
        step.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kParamAttr);
    if (!name)
      continue;
    auto type = dyn_cast<RankedTensorType>(arg.getType());
    if (!type || !type.getElementType().isF32())
      return forward.emitError()
             << "nn-autodiff: parameter '" << name.getValue()
             << "' must be an FP32 tensor (the master weights), got "
             << arg.getType();
    params.push_back(arg);
    paramNames.push_back(name);
  }
  if (params.empty())
    return forward.emitError("nn-autodiff: no argument is marked kiln.param, "
                             "so there is nothing to train");

  // Active values depend on a parameter; parameter-derived values depend on
  // nothing else (casts of weights). Gradients of active values that are not
  // parameter-derived are activation gradients: the B chunk computes them.
  llvm::DenseSet<Value> active(params.begin(), params.end());
  llvm::DenseSet<Value> paramDerived(params.begin(), params.end());
  for (Operation *op : forwardOps) {
    bool anyActive = llvm::any_of(op->getOperands(),
                                  [&](Value v) { return active.contains(v); });
    bool allDerived = op->getNumOperands() > 0 &&
                      llvm::all_of(op->getOperands(), [&](Value v) {
                        return paramDerived.contains(v);
                      });
    for (Value result : op->getResults()) {
      if (anyActive && isFloatTensor(result))
        active.insert(result);
      if (allDerived)
        paramDerived.insert(result);
    }
  }

  RecordingListener backwardOps;
  OpBuilder b(stepReturn);
  b.setListener(&backwardOps);
  Value loss = stepReturn.getOperand(0);
  llvm::DenseMap<Value, Value> grads;
  // The loss's own gradient: a placeholder until the `loss_scale` input
  // exists (below).
  Value seed = splat(b, loss.getLoc(), loss.getType(), 1.0);
  grads[loss] = seed;
  SmallVector<Value> activationGrads;

  for (Operation *op : llvm::reverse(forwardOps)) {
    if (llvm::none_of(op->getResults(),
                      [&](Value r) { return grads.contains(r); }))
      continue;
    if (llvm::none_of(op->getOperands(),
                      [&](Value v) { return active.contains(v); }))
      continue;
    auto differentiable = dyn_cast<DifferentiableOpInterface>(op);
    if (!differentiable)
      return op->emitOpError()
             << "is on the path from a parameter to the loss but has no "
                "gradient (it does not implement DifferentiableOpInterface)";
    SmallVector<Value> resultGrads;
    for (Value result : op->getResults()) {
      Value grad = grads.lookup(result);
      resultGrads.push_back(
          grad ? grad : splat(b, op->getLoc(), result.getType(), 0.0));
      if (grad && !paramDerived.contains(result))
        activationGrads.push_back(grad);
    }
    SmallVector<bool> needsGrad;
    for (Value operand : op->getOperands())
      needsGrad.push_back(active.contains(operand));
    SmallVector<Value> operandGrads;
    b.setInsertionPoint(stepReturn);
    if (failed(differentiable.buildGradients(b, resultGrads, needsGrad,
                                             operandGrads)))
      return failure();
    if (operandGrads.size() != op->getNumOperands())
      return op->emitOpError()
             << "built " << operandGrads.size() << " operand gradients for "
             << op->getNumOperands() << " operands";
    for (auto [operand, grad] :
         llvm::zip_equal(op->getOperands(), operandGrads)) {
      if (!grad)
        continue;
      if (grad.getType() != operand.getType())
        return op->emitOpError()
               << "built a gradient of type " << grad.getType()
               << " for an operand of type " << operand.getType();
      Value &sum = grads[operand];
      sum = sum ? AddOp::create(b, op->getLoc(), operand.getType(), sum, grad)
                      .getResult()
                : grad;
    }
  }

  // Every backward op that an activation gradient depends on is B work; the
  // rest (weight and bias gradients and their sums) is W work.
  llvm::DenseSet<Operation *> backwardSet(backwardOps.created.begin(),
                                          backwardOps.created.end());
  llvm::DenseSet<Operation *> inputGradOps;
  SmallVector<Value> worklist(activationGrads);
  while (!worklist.empty()) {
    Operation *def = worklist.pop_back_val().getDefiningOp();
    if (!def || !backwardSet.contains(def) || !inputGradOps.insert(def).second)
      continue;
    llvm::append_range(worklist, def->getOperands());
  }
  for (Operation *op : backwardOps.created)
    op->setAttr(kChunkAttr,
                StringAttr::get(ctx, inputGradOps.contains(op) ? "B" : "W"));
  b.setListener(nullptr);

  // Optimizer state and per-step scalars become new arguments.
  auto argDict = [&](StringRef key, Attribute value) {
    return DictionaryAttr::get(ctx, {NamedAttribute(key, value)});
  };
  // All in one insertArguments: inserting one at a time rebuilds the
  // function type and argument attributes each time, quadratic in the
  // number of parameters (51 s for 1000 layers).
  SmallVector<unsigned> indices;
  SmallVector<Type> types;
  SmallVector<DictionaryAttr> attrs;
  SmallVector<Location> locs;
  auto addArgument = [&](Type type, DictionaryAttr attr, Location loc) {
    indices.push_back(step.getNumArguments());
    types.push_back(type);
    attrs.push_back(attr);
    locs.push_back(loc);
  };
  for (StringRef key : {kExpAvgAttr, kExpAvgSqAttr})
    for (auto [param, name] : llvm::zip_equal(params, paramNames))
      addArgument(param.getType(), argDict(key, name), param.getLoc());
  for (StringRef input : {"lr", "step", "loss_scale"})
    addArgument(scalarF32, argDict(kInputAttr, StringAttr::get(ctx, input)),
                step.getLoc());
  unsigned first = step.getNumArguments();
  if (failed(step.insertArguments(indices, types, attrs, locs)))
    return failure();
  auto added = step.getArguments().drop_front(first);
  SmallVector<BlockArgument> expAvg(added.take_front(params.size()));
  SmallVector<BlockArgument> expAvgSq(
      added.drop_front(params.size()).take_front(params.size()));
  SmallVector<Value> scalars(added.take_back(3));
  // The backward starts from d(step loss)/d(loss) = loss_scale: 1 for one
  // micro-batch; with several, the micro-batch's share of the step's
  // counted tokens, so that the accumulated gradient is that of the
  // step's mean loss.
  seed.replaceAllUsesWith(scalars[2]);
  seed.getDefiningOp()->erase();

  // Gradient clipping and AdamW.
  b.setInsertionPoint(stepReturn);
  Location loc = step.getLoc();
  SmallVector<Value> paramGrads;
  for (auto [param, name] : llvm::zip_equal(params, paramNames)) {
    Value grad = grads.lookup(param);
    if (!grad) {
      step.emitWarning() << "nn-autodiff: parameter '" << name.getValue()
                         << "' does not affect the loss; its gradient is 0";
      grad = splat(b, loc, param.getType(), 0.0);
      grad.getDefiningOp()->setAttr(kChunkAttr, StringAttr::get(ctx, "W"));
    }
    paramGrads.push_back(grad);
  }
  auto optimizerTag = StringAttr::get(ctx, "O");
  auto norm = GlobalNormOp::create(b, loc, scalarF32, paramGrads);
  norm->setAttr(kChunkAttr, optimizerTag);
  SmallVector<Value> newParams, newExpAvg, newExpAvgSq;
  for (auto [i, param] : llvm::enumerate(params)) {
    double decay = cast<RankedTensorType>(param.getType()).getRank() >= 2
                       ? weightDecay
                       : 0.0;
    auto update = AdamWUpdateOp::create(
        b, param.getLoc(), param.getType(), param.getType(), param.getType(),
        param, paramGrads[i], expAvg[i], expAvgSq[i], scalars[0], scalars[1],
        norm, b.getF64FloatAttr(beta1), b.getF64FloatAttr(beta2),
        b.getF64FloatAttr(epsilon), b.getF64FloatAttr(decay),
        b.getF64FloatAttr(maxGradNorm), /*shards=*/IntegerAttr());
    update->setAttr(kChunkAttr, optimizerTag);
    newParams.push_back(update.getNewParam());
    newExpAvg.push_back(update.getNewExpAvg());
    newExpAvgSq.push_back(update.getNewExpAvgSq());
  }

  // Results: the loss and the gradient norm (for the metrics), then every
  // updated tensor marked like its argument.
  SmallVector<Value> results{loss, norm};
  SmallVector<DictionaryAttr> resultAttrs{
      argDict(kOutputAttr, StringAttr::get(ctx, "loss")),
      argDict(kOutputAttr, StringAttr::get(ctx, "grad_norm"))};
  for (auto [key, values] :
       {std::pair<StringRef, SmallVector<Value> *>{kParamAttr, &newParams},
        {kExpAvgAttr, &newExpAvg},
        {kExpAvgSqAttr, &newExpAvgSq}}) {
    for (auto [value, name] : llvm::zip_equal(*values, paramNames)) {
      results.push_back(value);
      resultAttrs.push_back(argDict(key, name));
    }
  }
  stepReturn->setOperands(results);
  step.setType(FunctionType::get(ctx, body.getArgumentTypes(),
                                 ValueRange(results).getTypes()));
  step.setAllResultAttrs(resultAttrs);
  return success();
}

} // namespace
