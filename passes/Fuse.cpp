//===- Fuse.cpp - nn-fuse -------------------------------------------------===//
//
// Groups row-local nn ops into tile.fused regions, one kernel each: an op
// joins the group of one of its operands' producers when the merged group
// is still one pass over rows and contracting it leaves the dataflow
// acyclic; the block is then re-sorted so that every region follows its
// inputs and precedes its users.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"
#include "dialects/tile/TileOps.h"
#include "passes/Chunks.h"
#include "passes/Passes.h"
#include "passes/Report.h"

#include "mlir/Analysis/TopologicalSortUtils.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/TypeUtilities.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/Support/FormatVariadic.h"

#include <deque>
#include <tuple>

namespace kiln {
#define GEN_PASS_DEF_NNFUSEPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// The option that allows a merge.
enum class Group { ResidualNorm, Rope, Elementwise };

bool isNorm(Operation *op) {
  return isa<nn::RMSNormOp, nn::LayerNormOp, nn::RMSNormGradOp,
             nn::LayerNormGradOp>(op);
}

/// The groups the pass options allow, and whether to report.
struct Policy {
  bool residualNorm, rope, elementwise, optimizer, epilogue, report;
};

/// The optimizer group: the AdamW updates that share their scalars and
/// hyperparameters become one multi-tensor tile.adamw each, at the last of
/// them (every operand is defined by then: the parameters and moments are
/// arguments, the gradients precede the updates).
void groupOptimizer(Block &block, SmallVectorImpl<Decision> &decisions,
                    unsigned &position, bool report) {
  using Key = std::tuple<Value, Value, Value, double, double, double, double,
                         double, Attribute>;
  // Few groups (two in practice): a linear search keeps program order.
  SmallVector<std::pair<Key, SmallVector<nn::AdamWUpdateOp>>> groups;
  for (auto update : block.getOps<nn::AdamWUpdateOp>()) {
    Key key{update.getLr(),
            update.getStep(),
            update.getGradNorm(),
            update.getBeta1().convertToDouble(),
            update.getBeta2().convertToDouble(),
            update.getEpsilon().convertToDouble(),
            update.getWeightDecay().convertToDouble(),
            update.getMaxGradNorm().convertToDouble(),
            update->getAttr(kChunkAttr)};
    auto it = llvm::find_if(
        groups, [&](const auto &group) { return group.first == key; });
    if (it == groups.end())
      it = groups.insert(groups.end(), {key, {}});
    it->second.push_back(update);
  }
  for (auto &[key, updates] : groups) {
    if (updates.size() < 2)
      continue;
    nn::AdamWUpdateOp last = updates.back();
    SmallVector<Value> tensors;
    SmallVector<Type> types;
    for (auto get :
         {&nn::AdamWUpdateOp::getParam, &nn::AdamWUpdateOp::getGrad,
          &nn::AdamWUpdateOp::getExpAvg, &nn::AdamWUpdateOp::getExpAvgSq})
      for (nn::AdamWUpdateOp update : updates)
        tensors.push_back((update.*get)());
    for (unsigned result = 0; result < 3; ++result)
      for (nn::AdamWUpdateOp update : updates)
        types.push_back(update->getResult(result).getType());
    OpBuilder builder(last);
    SmallVector<Location> locations;
    for (nn::AdamWUpdateOp update : updates)
      locations.push_back(update.getLoc());
    // BF16 compute copies: when every parameter of the group is cast to
    // BF16 once for the step's GEMMs, the update writes that copy (rounded
    // from the new master) and the next step reads it: a new argument and
    // result of the step each, no cast kernel.
    auto func = dyn_cast<func::FuncOp>(block.getParentOp());
    SmallVector<nn::CastOp> casts;
    for (nn::AdamWUpdateOp update : updates) {
      auto param = dyn_cast<BlockArgument>(update.getParam());
      nn::CastOp rounding;
      unsigned count = 0;
      if (param && func)
        for (Operation *user : param.getUsers())
          if (auto c = dyn_cast<nn::CastOp>(user);
              c && getElementTypeOrSelf(c.getType()).isBF16()) {
            rounding = c;
            ++count;
          }
      if (count != 1 || !func.getArgAttrOfType<StringAttr>(param.getArgNumber(),
                                                           attrs::kParam))
        break;
      casts.push_back(rounding);
    }
    bool copies = casts.size() == updates.size();
    SmallVector<Value> copyArgs;
    if (copies) {
      for (auto [update, rounding] : llvm::zip_equal(updates, casts)) {
        auto param = cast<BlockArgument>(update.getParam());
        StringAttr name = func.getArgAttrOfType<StringAttr>(
            param.getArgNumber(), attrs::kParam);
        unsigned index = func.getNumArguments();
        (void)func.insertArgument(
            index, rounding.getType(),
            builder.getDictionaryAttr({attrs::kComputeCopy.named(name)}),
            param.getLoc());
        Value copy = func.getArgument(index);
        rounding.getResult().replaceAllUsesWith(copy);
        rounding.erase();
        copyArgs.push_back(copy);
        tensors.push_back(copy);
      }
      for (Value copy : copyArgs)
        types.push_back(copy.getType());
    }
    tensors.append({last.getLr(), last.getStep(), last.getGradNorm()});
    auto multi = tile::AdamWOp::create(
        builder, builder.getFusedLoc(locations), types, tensors,
        last.getBeta1Attr(), last.getBeta2Attr(), last.getEpsilonAttr(),
        last.getWeightDecayAttr(), last.getMaxGradNormAttr(),
        copies ? builder.getUnitAttr() : UnitAttr());
    copyChunk(last, multi);
    unsigned n = updates.size();
    if (copies) {
      Operation *ret = block.getTerminator();
      for (unsigned i = 0; i < n; ++i) {
        unsigned index = func.getNumResults();
        (void)func.insertResult(
            index, copyArgs[i].getType(),
            builder.getDictionaryAttr(
                {attrs::kComputeCopy.named(func.getArgAttrOfType<StringAttr>(
                    cast<BlockArgument>(copyArgs[i]).getArgNumber(),
                    attrs::kComputeCopy))}));
        ret->insertOperands(ret->getNumOperands(), multi.getNewComputeCopy(i));
      }
    }
    for (auto [i, update] : llvm::enumerate(updates)) {
      for (unsigned result = 0; result < 3; ++result)
        update->getResult(result).replaceAllUsesWith(
            multi.getUpdated()[result * n + i]);
    }
    for (nn::AdamWUpdateOp update : updates)
      update.erase();
    if (report)
      decisions.push_back(Decision{
          multi.getLoc(), position++,
          llvm::formatv("optimizer: {0} parameters with weight decay {1} in "
                        "one multi-tensor AdamW (optimizer){2}",
                        n, std::get<6>(key),
                        copies ? ", which writes their BF16 compute copies: "
                                 "no cast kernels"
                               : "")
              .str()});
  }
}

/// The epilogue group: a gradient reduction whose one use widens it to FP32
/// is written in FP32 (its kernel accumulates in FP32), each recorded for
/// the report.
void widenGradients(Block &block, SmallVectorImpl<Decision> &decisions,
                    unsigned &position, bool report) {
  auto isReduction = [](Operation *op) {
    return isa_and_nonnull<nn::LinearWeightGradOp, nn::ColumnSumOp,
                           nn::EmbeddingGradOp, nn::RMSNormWeightGradOp,
                           nn::LayerNormWeightGradOp>(op);
  };
  auto widens = [](Operation *user, Operation *producer) {
    auto cast = dyn_cast<nn::CastOp>(user);
    return cast && getElementTypeOrSelf(cast.getType()).isF32() &&
           producer->getAttr(kChunkAttr) == cast->getAttr(kChunkAttr);
  };
  // A reduction whose one use widens it; or whose one use splits it into
  // the gradients of parameters packed together (nn-pack-projections),
  // each of which is only widened.
  SmallVector<Operation *> producers;
  for (Operation &op : block) {
    if (!isReduction(&op) || !op.hasOneUse())
      continue;
    Operation *user = *op.getUsers().begin();
    if (widens(user, &op)) {
      producers.push_back(&op);
      continue;
    }
    auto split = dyn_cast<nn::SplitOp>(user);
    if (split && split.getSplitDim() == 0 &&
        split->getAttr(kChunkAttr) == op.getAttr(kChunkAttr) &&
        llvm::all_of(split.getResults(), [&](Value part) {
          return part.hasOneUse() && widens(*part.getUsers().begin(), &op);
        }))
      producers.push_back(&op);
  }
  for (Operation *producer : producers) {
    auto f32 = llvm::cast<RankedTensorType>(producer->getResult(0).getType())
                   .clone(Float32Type::get(producer->getContext()));
    Operation *user = *producer->getUsers().begin();
    producer->getResult(0).setType(f32);
    SmallVector<nn::CastOp> casts;
    if (auto widen = dyn_cast<nn::CastOp>(user)) {
      casts.push_back(widen);
      widen.getResult().replaceAllUsesWith(producer->getResult(0));
    } else {
      for (Value part : user->getResults()) {
        auto widen = llvm::cast<nn::CastOp>(*part.getUsers().begin());
        part.setType(widen.getType());
        widen.getResult().replaceAllUsesWith(part);
        casts.push_back(widen);
      }
    }
    if (report)
      decisions.push_back(Decision{
          producer->getLoc(), position++,
          llvm::formatv("backward: {0} writes its FP32 accumulator (epilogue): "
                        "no cast kernel, no BF16 rounding of the gradient",
                        producer->getName().stripDialect())
              .str()});
    for (nn::CastOp cast : casts)
      cast.erase();
  }
}

/// Ops that will become one kernel.
struct Cluster {
  SmallVector<Operation *> ops;
  int64_t rows = 0;
  Attribute chunk;
  unsigned first = 0; ///< program position of the first op
  bool hasNorm = false, hasAdd = false, sibling = false;
};

class Fuser {
public:
  Fuser(Block &block, const Policy &options) : block(block), options(options) {}

  /// Forms the clusters of the block, in program order.
  void cluster();
  /// Replaces every cluster of two ops or more by a tile.fused region and
  /// re-sorts the block; records the report's decisions.
  LogicalResult materialize(SmallVectorImpl<Decision> &decisions,
                            unsigned &position);

private:
  bool allowed(Group group) const {
    switch (group) {
    case Group::ResidualNorm:
      return options.residualNorm;
    case Group::Rope:
      return options.rope;
    case Group::Elementwise:
      return options.elementwise;
    }
    return false;
  }
  /// Whether `op` may join `c`, and under which option.
  bool canJoin(Cluster &c, Operation *op, int64_t rows, bool sibling);
  /// Whether a member reads whole (a norm's weight) what a member computes:
  /// a region runs row by row, so that must come from outside it.
  bool readsWholeWithin(ArrayRef<Operation *> members) const;
  /// Whether contracting `members` into one node would make a cycle: a
  /// path from a member to a member through ops (or other clusters, each
  /// one node) outside them.
  bool wouldCycle(ArrayRef<Operation *> members);
  /// Merges `from` into `into` when both may be one kernel.
  bool tryMerge(Cluster &into, Cluster &from);

  Block &block;
  const Policy &options;
  llvm::DenseMap<Operation *, unsigned> order;
  llvm::DenseMap<Operation *, Cluster *> clusterOf;
  std::deque<Cluster> clusters;
};

bool Fuser::wouldCycle(ArrayRef<Operation *> members) {
  llvm::SmallPtrSet<Operation *, 16> inside(members.begin(), members.end());
  unsigned first = ~0u;
  for (Operation *op : members)
    first = std::min(first, order.lookup(op));
  // Walk producers backwards from the members' outside operands; nothing
  // before the first member can depend on a member.
  SmallVector<Operation *> work;
  llvm::DenseSet<Operation *> seen;
  auto push = [&](Operation *producer) {
    if (!producer || producer->getBlock() != &block ||
        order.lookup(producer) < first)
      return;
    // A producer in another cluster stands for the whole cluster.
    Cluster *other = clusterOf.lookup(producer);
    if (other && !inside.contains(producer)) {
      for (Operation *member : other->ops)
        if (seen.insert(member).second)
          work.push_back(member);
      return;
    }
    if (seen.insert(producer).second)
      work.push_back(producer);
  };
  for (Operation *op : members)
    for (Value operand : op->getOperands())
      if (!inside.contains(operand.getDefiningOp()))
        push(operand.getDefiningOp());
  while (!work.empty()) {
    Operation *next = work.pop_back_val();
    if (inside.contains(next))
      return true;
    for (Value operand : next->getOperands())
      push(operand.getDefiningOp());
  }
  return false;
}

bool Fuser::readsWholeWithin(ArrayRef<Operation *> members) const {
  llvm::SmallPtrSet<Operation *, 16> inside(members.begin(), members.end());
  for (Operation *op : members)
    for (OpOperand &operand : op->getOpOperands())
      if (!tile::isRowOperand(op, operand.getOperandNumber()) &&
          inside.contains(operand.get().getDefiningOp()))
        return true;
  return false;
}

bool Fuser::canJoin(Cluster &c, Operation *op, int64_t rows, bool sibling) {
  if (c.rows != rows || c.chunk != op->getAttr(kChunkAttr))
    return false;
  Group group = Group::Elementwise;
  if (sibling)
    group = Group::Rope;
  else if ((isNorm(op) && c.hasAdd) || (isa<nn::AddOp>(op) && c.hasNorm))
    group = Group::ResidualNorm;
  if (!allowed(group))
    return false;
  SmallVector<Operation *> members(c.ops);
  members.push_back(op);
  return !readsWholeWithin(members) && !wouldCycle(members);
}

bool Fuser::tryMerge(Cluster &into, Cluster &from) {
  if (&into == &from || from.ops.empty() || into.rows != from.rows ||
      into.chunk != from.chunk)
    return false;
  Group group = Group::Elementwise;
  if ((into.hasNorm && from.hasAdd) || (into.hasAdd && from.hasNorm))
    group = Group::ResidualNorm;
  if (!allowed(group))
    return false;
  SmallVector<Operation *> members(into.ops);
  members.append(from.ops.begin(), from.ops.end());
  if (readsWholeWithin(members) || wouldCycle(members))
    return false;
  // Keep program order inside the region.
  llvm::sort(members, [&](Operation *a, Operation *b) {
    return order.lookup(a) < order.lookup(b);
  });
  into.ops = std::move(members);
  into.first = std::min(into.first, from.first);
  into.hasNorm |= from.hasNorm;
  into.hasAdd |= from.hasAdd;
  into.sibling |= from.sibling;
  for (Operation *op : from.ops)
    clusterOf[op] = &into;
  from.ops.clear();
  return true;
}

void Fuser::cluster() {
  unsigned position = 0;
  for (Operation &op : block)
    order[&op] = position++;
  // The cluster of the last RoPE to read each positions tensor.
  llvm::DenseMap<Value, Cluster *> ropeByPositions;
  for (Operation &op : block) {
    if (!tile::isRowLocal(&op))
      continue;
    std::optional<int64_t> rows = tile::opRowCount(&op);
    if (!rows)
      continue;
    Cluster *joined = nullptr;
    for (Value operand : op.getOperands()) {
      Operation *producer = operand.getDefiningOp();
      Cluster *c = producer ? clusterOf.lookup(producer) : nullptr;
      if (c && canJoin(*c, &op, *rows, /*sibling=*/false)) {
        joined = c;
        break;
      }
    }
    auto rope = dyn_cast<nn::RoPEOp>(&op);
    if (!joined && rope && rope.getPositions())
      if (Cluster *c = ropeByPositions.lookup(rope.getPositions()))
        if (canJoin(*c, &op, *rows, /*sibling=*/true)) {
          joined = c;
          joined->sibling = true;
        }
    if (!joined) {
      joined = &clusters.emplace_back();
      joined->rows = *rows;
      joined->chunk = op.getAttr(kChunkAttr);
      joined->first = order[&op];
    }
    joined->ops.push_back(&op);
    joined->hasNorm |= isNorm(&op);
    joined->hasAdd |= isa<nn::AddOp>(&op);
    clusterOf[&op] = joined;
    // The producers of its other operands may join too (the two gathers
    // that GPT-2's first add sums).
    for (Value operand : op.getOperands())
      if (Cluster *c = clusterOf.lookup(operand.getDefiningOp()))
        if (c != joined)
          tryMerge(*joined, *c);
    if (rope && rope.getPositions())
      ropeByPositions[rope.getPositions()] = joined;
  }
}

/// "add + rms_norm" for the report.
std::string describe(ArrayRef<Operation *> ops) {
  std::string text;
  for (Operation *op : ops) {
    if (!text.empty())
      text += " + ";
    text += op->getName().stripDialect().str();
  }
  return text;
}

LogicalResult Fuser::materialize(SmallVectorImpl<Decision> &decisions,
                                 unsigned &position) {
  bool changed = false;
  for (Cluster &c : clusters) {
    if (c.ops.size() < 2)
      continue;
    llvm::SmallPtrSet<Operation *, 8> members(c.ops.begin(), c.ops.end());
    llvm::SetVector<Value> inputs;
    SmallVector<Value> outputs;
    SmallVector<Location> locations;
    for (Operation *op : c.ops) {
      locations.push_back(op->getLoc());
      for (Value operand : op->getOperands())
        if (!members.contains(operand.getDefiningOp()))
          inputs.insert(operand);
      for (Value result : op->getResults())
        if (llvm::any_of(result.getUsers(), [&](Operation *user) {
              return !members.contains(block.findAncestorOpInBlock(*user));
            }))
          outputs.push_back(result);
    }
    OpBuilder builder(c.ops.front());
    Location loc = builder.getFusedLoc(locations);
    auto fused = tile::FusedOp::create(
        builder, loc, ValueRange(outputs).getTypes(), inputs.getArrayRef());
    if (c.chunk)
      fused->setAttr(kChunkAttr, c.chunk);
    Block &body = fused.getBody().front();
    IRMapping mapping;
    mapping.map(inputs.getArrayRef(), body.getArguments());
    builder.setInsertionPointToStart(&body);
    for (Operation *op : c.ops) {
      Operation *clone = builder.clone(*op, mapping);
      clone->removeAttr(kChunkAttr);
    }
    SmallVector<Value> yields;
    for (Value output : outputs)
      yields.push_back(mapping.lookup(output));
    tile::YieldOp::create(builder, loc, yields);
    for (auto [output, result] : llvm::zip_equal(outputs, fused.getResults()))
      output.replaceUsesWithIf(result, [&](OpOperand &use) {
        return !members.contains(block.findAncestorOpInBlock(*use.getOwner()));
      });
    // The report reads the ops: before they are erased.
    if (options.report) {
      // The anchor: the norm, else the first op.
      Operation *anchor = c.ops.front();
      for (Operation *op : c.ops)
        if (isNorm(op)) {
          anchor = op;
          break;
        }
      StringRef group = c.hasNorm && c.hasAdd ? "residual-norm"
                        : c.sibling           ? "rope"
                                              : "elementwise";
      // The forward function has no chunk tags: all of it is forward.
      StringRef direction =
          !c.chunk || cast<StringAttr>(c.chunk).getValue() == "F" ? "forward"
                                                                  : "backward";
      int64_t onChip = 0;
      for (Operation *op : c.ops)
        onChip += op->getNumResults();
      onChip -= static_cast<int64_t>(outputs.size());
      decisions.push_back(Decision{
          anchor->getLoc(), position++,
          llvm::formatv("{0}: {1} as one kernel ({2}): {3} written, {4} kept "
                        "on chip",
                        direction, describe(c.ops), group, outputs.size(),
                        onChip)
              .str()});
    }
    for (Operation *op : llvm::reverse(c.ops))
      op->erase();
    changed = true;
  }
  // Clusters were checked to leave the dataflow acyclic.
  if (changed && !sortTopologically(&block))
    return block.getParentOp()->emitError(
        "nn-fuse: internal error: the fused block has a cycle");
  return success();
}

struct NNFusePass : kiln::impl::NNFusePassBase<NNFusePass> {
  using NNFusePassBase::NNFusePassBase;

  void runOnOperation() final {
    SmallVector<Decision> decisions;
    unsigned position = 0;
    Policy options{residualNorm, rope,     elementwise,
                   optimizer,    epilogue, report};
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (func.isExternal())
        continue;
      for (Block &block : func.getBody()) {
        if (epilogue)
          widenGradients(block, decisions, position, report);
        if (optimizer)
          groupOptimizer(block, decisions, position, report);
        Fuser fuser(block, options);
        fuser.cluster();
        if (failed(fuser.materialize(decisions, position)))
          return signalPassFailure();
      }
    }
    if (report)
      emitGroupedRemarks("nn-fuse", "kernel", decisions);
  }
};

} // namespace
