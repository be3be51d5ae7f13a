//===- ReduceGradients.cpp - dist-reduce-gradients ------------------------===//
//
// Data parallelism: the gradients the optimizer reads are summed over the
// data-parallel ranks by bucketed dist.all_reduce ops, each placed after the
// op that produces its bucket's last gradient. ZeRO-1 reduce-scatters them
// instead, shards the optimizer, and all-gathers the parameters.
//
//===----------------------------------------------------------------------===//

#include "dialects/dist/DistOps.h"
#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"
#include "passes/Chunks.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/FormatVariadic.h"

namespace kiln {
#define GEN_PASS_DEF_DISTREDUCEGRADIENTSPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

struct DistReduceGradientsPass
    : kiln::impl::DistReduceGradientsPassBase<DistReduceGradientsPass> {
  using Base::Base;
  void runOnOperation() final;

private:
  LogicalResult reduce(func::FuncOp step);
  /// ZeRO-1 after the reduce-scatters: shard the updates and the norm, and
  /// gather the parameters of each bucket after its last update.
  LogicalResult shardOptimizer(func::FuncOp step,
                               ArrayRef<SmallVector<Value>> buckets);
};

bool inOptimizer(Operation *op) {
  auto tag = op->getAttrOfType<StringAttr>(kChunkAttr);
  return tag && tag.getValue() == "O";
}

int64_t bytesOf(Value value) {
  auto type = cast<RankedTensorType>(value.getType());
  return type.getNumElements() * ((type.getElementTypeBitWidth() + 7) / 8);
}

void DistReduceGradientsPass::runOnOperation() {
  ModuleOp module = getOperation();
  int64_t ranks = dataParallel;
  if (ranks < 1) {
    module.emitError() << "dist-reduce-gradients: dp must be at least 1, got "
                       << ranks;
    return signalPassFailure();
  }
  double mib = bucketMiB;
  if (!(mib > 0)) {
    module.emitError() << "dist-reduce-gradients: bucket-mb must be "
                          "positive, got "
                       << mib;
    return signalPassFailure();
  }
  auto step = module.lookupSymbol<func::FuncOp>(trainStepName);
  if (!step) {
    module.emitError() << "dist-reduce-gradients: no function @"
                       << trainStepName << " (run nn-autodiff first)";
    return signalPassFailure();
  }
  if (zero != 0 && zero != 1) {
    module.emitError() << "dist-reduce-gradients: zero must be 0 or 1 (ZeRO "
                          "stage), got "
                       << static_cast<int64_t>(zero);
    return signalPassFailure();
  }
  if ((ranks > 1 || singleRank) && failed(reduce(step)))
    return signalPassFailure();
  Builder b(module.getContext());
  attrs::setModelEntry(module, "data_parallel", b.getI64IntegerAttr(ranks));
  attrs::setModelEntry(module, "zero", b.getI64IntegerAttr(zero));
}

LogicalResult DistReduceGradientsPass::reduce(func::FuncOp step) {
  MLIRContext *ctx = &getContext();
  Block &body = step.getBody().front();
  if (!body.getOps<dist::AllReduceOp>().empty() ||
      !body.getOps<dist::ReduceScatterOp>().empty())
    return step.emitError() << "dist-reduce-gradients: @" << trainStepName
                            << " already reduces its gradients";
  bool accumulates = false;
  for (BlockArgument arg : step.getArguments())
    if (StringAttr input = attrs::kInput.getArg(step, arg.getArgNumber()))
      accumulates |= input.getValue() == "micro_step";

  // The gradients the optimizer reads, each once, in the order they are
  // produced (ties, as all the sums of one grad_accumulate: in the order
  // of the updates).
  llvm::DenseMap<Operation *, unsigned> position;
  for (auto [index, op] : llvm::enumerate(body.getOperations()))
    position[&op] = index;
  SmallVector<Value> grads;
  llvm::SmallDenseSet<Value> seen;
  for (nn::AdamWUpdateOp update : body.getOps<nn::AdamWUpdateOp>()) {
    Value grad = update.getGrad();
    Operation *producer = grad.getDefiningOp();
    if (!producer || inOptimizer(producer))
      return update.emitOpError()
             << "dist-reduce-gradients: the gradient this update reads is "
                "not computed by the backward (an argument, or an optimizer "
                "op)";
    if (seen.insert(grad).second)
      grads.push_back(grad);
  }
  if (grads.empty())
    return step.emitError() << "dist-reduce-gradients: @" << trainStepName
                            << " has no nn.adamw_update whose gradients to "
                               "reduce";
  llvm::stable_sort(grads, [&](Value a, Value b) {
    return position.lookup(a.getDefiningOp()) <
           position.lookup(b.getDefiningOp());
  });

  // Buckets of about bucket-mb MiB, closed when they reach it.
  const int64_t capacity =
      std::max<int64_t>(1, static_cast<int64_t>(bucketMiB * 1024 * 1024));
  SmallVector<SmallVector<Value>> buckets(1);
  int64_t filled = 0;
  for (Value grad : grads) {
    if (filled >= capacity) {
      buckets.emplace_back();
      filled = 0;
    }
    buckets.back().push_back(grad);
    filled += bytesOf(grad);
  }

  auto group = dist::GroupAttr::get(ctx, "dp", dataParallel);
  OpBuilder b(ctx);
  SmallVector<SmallVector<Value>> reduced;
  for (auto [index, bucket] : llvm::enumerate(buckets)) {
    Operation *last = bucket.back().getDefiningOp();
    b.setInsertionPointAfter(last);
    Operation *reduce =
        zero ? dist::ReduceScatterOp::create(b, last->getLoc(), bucket,
                                             dist::Reduction::sum, group,
                                             accumulates)
                   .getOperation()
             : dist::AllReduceOp::create(b, last->getLoc(), bucket,
                                         dist::Reduction::sum, group,
                                         accumulates)
                   .getOperation();
    reduce->setAttr(kChunkAttr, StringAttr::get(ctx, "W"));
    // Everything after the reduction reads the sums (the reduction is in
    // place: what follows it in memory is the sum).
    for (auto [grad, sum] : llvm::zip_equal(bucket, reduce->getResults()))
      grad.replaceUsesWithIf(sum, [&](OpOperand &use) {
        Operation *user = body.findAncestorOpInBlock(*use.getOwner());
        return user != reduce && reduce->isBeforeInBlock(user);
      });
    reduced.emplace_back(reduce->getResults());
    if (report) {
      int64_t bytes = 0;
      for (Value grad : bucket)
        bytes += bytesOf(grad);
      reduce->emitRemark() << llvm::formatv(
          "dist-reduce-gradients: bucket {0} of {1}: {2} gradients, {3} "
          "bytes ({4:F2} MiB), {5} over {6} ranks after the op that "
          "produces the last{7}",
          index, buckets.size(), bucket.size(), bytes,
          bytes / (1024.0 * 1024.0), zero ? "reduce-scattered" : "reduced",
          static_cast<int64_t>(dataParallel),
          accumulates ? " (in the last micro-batch, on the accumulated sums)"
                      : "");
    }
  }
  if (zero)
    return shardOptimizer(step, reduced);
  return success();
}

LogicalResult
DistReduceGradientsPass::shardOptimizer(func::FuncOp step,
                                        ArrayRef<SmallVector<Value>> buckets) {
  MLIRContext *ctx = &getContext();
  Block &body = step.getBody().front();
  const int64_t shards = dataParallel;
  OpBuilder b(ctx);
  IntegerAttr shardsAttr = b.getI64IntegerAttr(shards);
  for (nn::GlobalNormOp norm : body.getOps<nn::GlobalNormOp>())
    norm.setShardsAttr(shardsAttr);

  // Each update's moments become this rank's shard: the step's arguments
  // and results of the moments change type with it.
  nn::AdamWUpdateOp lastUpdate;
  Operation *ret = body.getTerminator();
  for (nn::AdamWUpdateOp update : body.getOps<nn::AdamWUpdateOp>()) {
    auto type = cast<RankedTensorType>(update.getParam().getType());
    if (!type.hasStaticShape())
      return update.emitOpError()
             << "dist-reduce-gradients: zero=1 shards parameters of static "
                "shape, got "
             << type;
    RankedTensorType shard = nn::shardType(type, shards);
    for (Value moment : {update.getExpAvg(), update.getExpAvgSq()}) {
      auto arg = dyn_cast<BlockArgument>(moment);
      if (!arg || arg.getOwner() != &body || !moment.hasOneUse())
        return update.emitOpError()
               << "dist-reduce-gradients: zero=1 needs each moment to be an "
                  "argument of @"
               << trainStepName << " that only its update reads";
      arg.setType(shard);
    }
    for (Value result : {update.getNewExpAvg(), update.getNewExpAvgSq()}) {
      result.setType(shard);
      for (OpOperand &use : result.getUses())
        if (use.getOwner() != ret)
          return update.emitOpError()
                 << "dist-reduce-gradients: zero=1 needs the new moments to "
                    "be only returned";
    }
    update.setShardsAttr(shardsAttr);
    lastUpdate = update;
  }
  step.setType(
      FunctionType::get(ctx, body.getArgumentTypes(), ret->getOperandTypes()));

  // One gather per bucket of the new parameters, after the last update
  // (nn-fuse may merge the updates into one op at the last one's place);
  // the step returns the gathered parameters.
  auto group = dist::GroupAttr::get(ctx, "dp", shards);
  b.setInsertionPointAfter(lastUpdate);
  for (ArrayRef<Value> bucket : buckets) {
    SmallVector<Value> params;
    for (Value grad : bucket)
      for (Operation *user : grad.getUsers())
        if (auto update = dyn_cast<nn::AdamWUpdateOp>(user);
            update && update.getGrad() == grad)
          params.push_back(update.getNewParam());
    if (params.empty())
      continue;
    auto gather =
        dist::AllGatherOp::create(b, lastUpdate.getLoc(), params, group);
    gather->setAttr(kChunkAttr, StringAttr::get(ctx, "O"));
    for (auto [param, gathered] : llvm::zip_equal(params, gather.getOutputs()))
      param.replaceAllUsesExcept(gathered, gather);
  }
  return success();
}

} // namespace
