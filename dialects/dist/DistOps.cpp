//===- DistOps.cpp - dist dialect operations ------------------------------===//

#include "dialects/dist/DistOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/DenseMap.h"

#include <map>
#include <tuple>

using namespace mlir;
using namespace kiln::dist;

#define GET_OP_CLASSES
#include "dialects/dist/DistOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

/// The collectives work in place: result `i` has operand `i`'s type.
static LogicalResult inPlace(ValueRange operands,
                             SmallVectorImpl<Type> &types) {
  for (Value operand : operands)
    types.push_back(operand.getType());
  return success();
}

LogicalResult AllReduceOp::inferReturnTypes(
    MLIRContext *, std::optional<Location>, ValueRange operands, DictionaryAttr,
    OpaqueProperties, RegionRange, SmallVectorImpl<Type> &inferredReturnTypes) {
  return inPlace(operands, inferredReturnTypes);
}

/// Reductions combine numbers: float or integer elements.
static LogicalResult verifyReducible(Operation *op, Value value,
                                     unsigned index) {
  auto type = cast<RankedTensorType>(value.getType());
  if (!type.hasStaticShape())
    return op->emitOpError()
           << "operand #" << index << " must have a static shape, got " << type;
  if (!isa<FloatType, IntegerType>(type.getElementType()))
    return op->emitOpError()
           << "operand #" << index << " must hold numbers, got " << type;
  return success();
}

/// A reduction of a bucket: static numeric operands, floats for avg.
static LogicalResult verifyReduction(Operation *op, ValueRange inputs,
                                     Reduction reduction) {
  if (inputs.empty())
    return op->emitOpError("reduces at least one tensor");
  for (auto [index, input] : llvm::enumerate(inputs))
    if (failed(verifyReducible(op, input, index)))
      return failure();
  if (reduction == Reduction::avg)
    for (auto [index, input] : llvm::enumerate(inputs))
      if (!isa<FloatType>(getElementTypeOrSelf(input.getType())))
        return op->emitOpError() << "avg needs float operands; operand #"
                                 << index << " is " << input.getType();
  return success();
}

LogicalResult AllReduceOp::verify() {
  return verifyReduction(*this, getInputs(), getReduction());
}

LogicalResult ReduceScatterOp::inferReturnTypes(
    MLIRContext *, std::optional<Location>, ValueRange operands, DictionaryAttr,
    OpaqueProperties, RegionRange, SmallVectorImpl<Type> &inferredReturnTypes) {
  return inPlace(operands, inferredReturnTypes);
}

LogicalResult ReduceScatterOp::verify() {
  return verifyReduction(*this, getInputs(), getReduction());
}

LogicalResult AllGatherOp::inferReturnTypes(
    MLIRContext *, std::optional<Location>, ValueRange operands, DictionaryAttr,
    OpaqueProperties, RegionRange, SmallVectorImpl<Type> &inferredReturnTypes) {
  return inPlace(operands, inferredReturnTypes);
}

LogicalResult AllGatherOp::verify() {
  if (getInputs().empty())
    return emitOpError("gathers at least one tensor");
  for (auto [index, input] : llvm::enumerate(getInputs()))
    if (!cast<RankedTensorType>(input.getType()).hasStaticShape())
      return emitOpError() << "operand #" << index
                           << " must have a static shape, got "
                           << input.getType();
  return success();
}

LogicalResult AllGatherIntoOp::verify() {
  if (getShards().empty() || getShards().size() != getDests().size() ||
      getOutputs().size() != getDests().size())
    return emitOpError() << "expects N >= 1 shards, N destinations and N "
                            "results, got "
                         << getShards().size() << ", " << getDests().size()
                         << " and " << getOutputs().size();
  int64_t ranks = getGroup().getSize();
  for (auto [index, shard, dest, output] :
       llvm::enumerate(getShards(), getDests(), getOutputs())) {
    auto whole = cast<RankedTensorType>(dest.getType());
    if (!whole.hasStaticShape())
      return emitOpError() << "destination #" << index
                           << " must have a static shape, got " << whole;
    auto expected = RankedTensorType::get(
        {(whole.getNumElements() + ranks - 1) / ranks}, whole.getElementType());
    if (shard.getType() != expected)
      return emitOpError() << "expects shard #" << index << " to be "
                           << expected << " (a rank's shard of " << whole
                           << " over " << ranks << " ranks), got "
                           << shard.getType();
    if (output.getType() != whole)
      return emitOpError() << "expects result #" << index << " to be " << whole
                           << ", got " << output.getType();
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Point to point
//===----------------------------------------------------------------------===//

static LogicalResult verifyTransfer(Operation *op, int64_t peer, int64_t tag,
                                    RankedTensorType type) {
  if (peer < 0)
    return op->emitOpError()
           << "peer must be a rank (at least 0), got " << peer;
  if (tag < 0)
    return op->emitOpError() << "tag must be at least 0, got " << tag;
  if (!type.hasStaticShape())
    return op->emitOpError()
           << "transfers tensors of static shape, got " << type;
  return success();
}

LogicalResult SendOp::verify() {
  return verifyTransfer(*this, getPeer(), getTag(), getInput().getType());
}

LogicalResult RecvOp::verify() {
  return verifyTransfer(*this, getPeer(), getTag(), getOutput().getType());
}

//===----------------------------------------------------------------------===//
// Schedule
//===----------------------------------------------------------------------===//

LogicalResult ScheduleOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  Operation *step = symbolTable.lookupNearestSymbolFrom(*this, getStepAttr());
  if (!step || !isa<FunctionOpInterface>(step))
    return emitOpError() << "schedules @" << getStep()
                         << ", which is not a function of this module";
  return success();
}

LogicalResult ScheduleOp::verify() {
  int64_t stages = getStages(), microBatches = getMicroBatches();
  if (stages < 1)
    return emitOpError() << "needs at least one stage, got " << stages;
  if (microBatches < 1)
    return emitOpError() << "needs at least one micro-batch, got "
                         << microBatches;
  if (getRanks().empty())
    return emitOpError("needs the actions of at least one rank");

  // (stage, micro-batch, chunk) -> the position it ran at on its rank.
  std::map<std::tuple<int64_t, int64_t, Chunk>, int64_t> ran;
  llvm::DenseMap<int64_t, int64_t> rankOfStage;
  for (auto [rank, list] : llvm::enumerate(getRanks())) {
    auto actions = dyn_cast<ArrayAttr>(list);
    if (!actions)
      return emitOpError() << "rank " << rank
                           << ": expected an array of #dist.action";
    for (auto [position, attr] : llvm::enumerate(actions)) {
      auto action = dyn_cast<ActionAttr>(attr);
      if (!action)
        return emitOpError() << "rank " << rank << ", action " << position
                             << ": expected a #dist.action, got " << attr;
      int64_t stage = action.getStage(), mb = action.getMicroBatch();
      StringRef kind = stringifyChunk(action.getKind());
      if (stage >= stages)
        return emitOpError() << "rank " << rank << ", action " << position
                             << " (" << kind << "): stage " << stage
                             << " is not below the " << stages << " stages";
      if (mb >= microBatches)
        return emitOpError()
               << "rank " << rank << ", action " << position << " (" << kind
               << "): micro-batch " << mb << " is not below the "
               << microBatches << " micro-batches";
      auto [owner, fresh] =
          rankOfStage.try_emplace(stage, static_cast<int64_t>(rank));
      if (!fresh && owner->second != static_cast<int64_t>(rank))
        return emitOpError()
               << "stage " << stage << " runs on rank " << owner->second
               << " and on rank " << rank << "; a stage lives on one rank";
      if (!ran.try_emplace({stage, mb, action.getKind()}, position).second)
        return emitOpError()
               << "rank " << rank << " runs " << kind << " of stage " << stage
               << ", micro-batch " << mb << " twice";
    }
  }

  // Every stage: F < B < W for each micro-batch, then O after the last W.
  for (int64_t stage = 0; stage < stages; ++stage) {
    if (!rankOfStage.count(stage))
      return emitOpError() << "no rank runs stage " << stage;
    auto at = [&](int64_t mb, Chunk kind) -> std::optional<int64_t> {
      auto found = ran.find({stage, mb, kind});
      if (found == ran.end())
        return std::nullopt;
      return found->second;
    };
    std::optional<int64_t> optimizer = at(0, Chunk::O);
    if (!optimizer)
      return emitOpError() << "stage " << stage << " never runs O";
    for (int64_t mb = 0; mb < microBatches; ++mb) {
      std::optional<int64_t> previous;
      for (Chunk kind : {Chunk::F, Chunk::B, Chunk::W}) {
        std::optional<int64_t> position = at(mb, kind);
        if (!position)
          return emitOpError()
                 << "stage " << stage << " never runs " << stringifyChunk(kind)
                 << " of micro-batch " << mb;
        if (previous && *position < *previous)
          return emitOpError()
                 << "stage " << stage << ", micro-batch " << mb << ": "
                 << stringifyChunk(kind) << " runs before the chunk it needs";
        previous = position;
      }
      if (*optimizer < *previous)
        return emitOpError() << "stage " << stage
                             << ": O runs before W of micro-batch " << mb;
    }
  }
  return success();
}
