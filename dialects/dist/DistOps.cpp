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

LogicalResult AllReduceOp::inferReturnTypes(
    MLIRContext *, std::optional<Location>, ValueRange operands, DictionaryAttr,
    OpaqueProperties, RegionRange, SmallVectorImpl<Type> &inferredReturnTypes) {
  for (Value operand : operands)
    inferredReturnTypes.push_back(operand.getType());
  return success();
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

LogicalResult AllReduceOp::verify() {
  if (getInputs().empty())
    return emitOpError("reduces at least one tensor");
  for (auto [index, input] : llvm::enumerate(getInputs()))
    if (failed(verifyReducible(*this, input, index)))
      return failure();
  if (getReduction() == Reduction::avg)
    for (auto [index, input] : llvm::enumerate(getInputs()))
      if (!isa<FloatType>(getElementTypeOrSelf(input.getType())))
        return emitOpError() << "avg needs float operands; operand #" << index
                             << " is " << input.getType();
  return success();
}

/// `shard` is `whole` split `parts` ways along dimension 0.
static LogicalResult verifySharded(Operation *op, RankedTensorType whole,
                                   RankedTensorType shard, int64_t parts,
                                   StringRef wholeName, StringRef shardName) {
  if (whole.getElementType() != shard.getElementType())
    return op->emitOpError()
           << shardName << " " << shard << " and " << wholeName << " " << whole
           << " must have the same element type";
  if (whole.getRank() == 0 || whole.getRank() != shard.getRank())
    return op->emitOpError()
           << shardName << " " << shard << " and " << wholeName << " " << whole
           << " must have the same rank, at least 1";
  if (whole.getDimSize(0) % parts != 0)
    return op->emitOpError()
           << "dimension 0 of " << wholeName << " " << whole
           << " does not divide into the group's " << parts << " ranks";
  SmallVector<int64_t> expected(whole.getShape());
  expected[0] /= parts;
  if (shard.getShape() != ArrayRef(expected))
    return op->emitOpError()
           << shardName << " must be " << wholeName << " " << whole << " split "
           << parts << " ways along dimension 0, "
           << RankedTensorType::get(expected, whole.getElementType())
           << ", got " << shard;
  return success();
}

LogicalResult ReduceScatterOp::verify() {
  if (failed(verifyReducible(*this, getInput(), 0)))
    return failure();
  return verifySharded(*this, getInput().getType(), getOutput().getType(),
                       getGroup().getSize(), "the input", "the result");
}

LogicalResult AllGatherOp::verify() {
  auto input = getInput().getType();
  if (!input.hasStaticShape())
    return emitOpError() << "the input must have a static shape, got " << input;
  return verifySharded(*this, getOutput().getType(), input,
                       getGroup().getSize(), "the result", "the input");
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
