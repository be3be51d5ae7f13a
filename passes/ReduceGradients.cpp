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
#include "passes/ComputeCopies.h"
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

/// The one BF16 nn.cast through which the step reads `param`, besides its
/// `update`; null if it reads it any other way.
nn::CastOp onlyBf16Cast(BlockArgument param, nn::AdamWUpdateOp update) {
  nn::CastOp rounding;
  for (Operation *user : param.getUsers()) {
    if (user == update.getOperation())
      continue;
    auto cast = dyn_cast<nn::CastOp>(user);
    if (!cast || rounding || !getElementTypeOrSelf(cast.getType()).isBF16())
      return nn::CastOp();
    rounding = cast;
  }
  return rounding;
}

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
  // and results of the moments change type with it. A master weight that
  // the step reads only through one BF16 cast is sharded too: the step
  // takes its BF16 compute copy whole instead of the cast, and the master
  // only as this rank's shard (see the gathers below).
  nn::AdamWUpdateOp lastUpdate;
  struct ShardedMaster {
    nn::AdamWUpdateOp update;
    Value copy;
    StringAttr name;
  };
  SmallVector<ShardedMaster> masters;
  Operation *ret = body.getTerminator();
  for (nn::AdamWUpdateOp update : body.getOps<nn::AdamWUpdateOp>()) {
    auto type = cast<RankedTensorType>(update.getParam().getType());
    if (!type.hasStaticShape())
      return update.emitOpError()
             << "dist-reduce-gradients: zero=1 shards parameters of static "
                "shape, got "
             << type;
    RankedTensorType shard = nn::shardType(type, shards);
    if (shards > 1)
      if (auto param = dyn_cast<BlockArgument>(update.getParam());
          param && param.getOwner() == &body)
        if (StringAttr name = attrs::kParam.getArg(step, param.getArgNumber()))
          if (nn::CastOp rounding = onlyBf16Cast(param, update)) {
            Value copy =
                replaceCastByComputeCopy(step, rounding, name, param.getLoc());
            param.setType(shard);
            update.getNewParam().setType(shard);
            masters.push_back({update, copy, name});
          }
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

  // One gather per bucket of the new parameters, after the last update
  // (nn-fuse may merge the updates into one op at the last one's place);
  // the step returns the gathered parameters. A sharded master's new shard
  // is rounded to BF16 and gathered into its compute copy instead, which
  // the step returns for the next one (the master stays a shard).
  auto group = dist::GroupAttr::get(ctx, "dp", shards);
  auto optimizerTag = StringAttr::get(ctx, "O");
  b.setInsertionPointAfter(lastUpdate);
  for (ArrayRef<Value> bucket : buckets) {
    SmallVector<Value> params, rounded, copies;
    SmallVector<StringAttr> names;
    for (Value grad : bucket)
      for (Operation *user : grad.getUsers()) {
        auto update = dyn_cast<nn::AdamWUpdateOp>(user);
        if (!update || update.getGrad() != grad)
          continue;
        const ShardedMaster *master =
            llvm::find_if(masters, [&](const ShardedMaster &m) {
              return m.update == update;
            });
        if (master == masters.end()) {
          params.push_back(update.getNewParam());
          continue;
        }
        auto shardType = cast<RankedTensorType>(update.getNewParam().getType());
        auto cast = nn::CastOp::create(b, update.getLoc(),
                                       shardType.clone(b.getBF16Type()),
                                       update.getNewParam());
        cast->setAttr(kChunkAttr, optimizerTag);
        rounded.push_back(cast.getResult());
        copies.push_back(master->copy);
        names.push_back(master->name);
      }
    if (!params.empty()) {
      auto gather =
          dist::AllGatherOp::create(b, lastUpdate.getLoc(), params, group);
      gather->setAttr(kChunkAttr, optimizerTag);
      for (auto [param, gathered] :
           llvm::zip_equal(params, gather.getOutputs()))
        param.replaceAllUsesExcept(gathered, gather);
    }
    if (!rounded.empty()) {
      auto gather = dist::AllGatherIntoOp::create(b, lastUpdate.getLoc(),
                                                  ValueRange(copies).getTypes(),
                                                  rounded, copies, group);
      gather->setAttr(kChunkAttr, optimizerTag);
      for (auto [name, copy] : llvm::zip_equal(names, gather.getOutputs()))
        returnComputeCopy(step, copy, name);
    }
  }
  step.setType(
      FunctionType::get(ctx, body.getArgumentTypes(), ret->getOperandTypes()));
  return success();
}

} // namespace
