//===- TileOps.cpp - tile dialect operations ------------------------------===//

#include "dialects/tile/TileOps.h"
#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/TypeUtilities.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kiln::tile;
namespace nn = kiln::nn;

namespace {
int64_t numElements(Value v) {
  auto type = cast<RankedTensorType>(v.getType());
  return type.hasStaticShape() ? type.getNumElements() : ShapedType::kDynamic;
}

/// Checks that `value` holds `expected` elements (when its shape is static).
LogicalResult expectElements(Operation *op, StringRef name, Value value,
                             int64_t expected, StringRef rule) {
  int64_t actual = numElements(value);
  if (ShapedType::isDynamic(actual) || actual == expected)
    return success();
  return op->emitOpError() << "expects " << name << " to hold " << rule << " = "
                           << expected << " elements, got " << actual << " ("
                           << value.getType() << ")";
}
} // namespace

bool kiln::tile::isFusible(Operation *op) {
  return isa<nn::AddOp, nn::MulOp, nn::CastOp, nn::RMSNormOp, nn::RMSNormGradOp,
             nn::RMSNormWeightGradOp, nn::LayerNormOp, nn::LayerNormGradOp,
             nn::LayerNormWeightGradOp, nn::RoPEOp, nn::SwiGLUOp,
             nn::SwiGLUGradOp, nn::GeluOp, nn::GeluGradOp, nn::EmbeddingOp,
             nn::SplitOp, nn::ConcatOp, nn::ColumnSumOp>(op);
}

bool kiln::tile::isRowLocal(Operation *op) {
  return isa<nn::AddOp, nn::MulOp, nn::CastOp, nn::RMSNormOp, nn::RMSNormGradOp,
             nn::LayerNormOp, nn::LayerNormGradOp, nn::RoPEOp, nn::SwiGLUOp,
             nn::SwiGLUGradOp, nn::GeluOp, nn::GeluGradOp, nn::EmbeddingOp>(op);
}

bool kiln::tile::isRowOperand(Operation *op, unsigned index) {
  return llvm::TypeSwitch<Operation *, bool>(op)
      .Case([&](nn::RMSNormOp) { return index == 0; })
      .Case([&](nn::LayerNormOp) { return index == 0; })
      .Case([&](nn::RMSNormGradOp) { return index < 2; })
      .Case([&](nn::LayerNormGradOp) { return index < 2; })
      .Case([&](nn::EmbeddingOp) { return index == 1; })
      .Default([](Operation *) { return true; });
}

int64_t kiln::tile::rowCount(Value value) {
  auto type = cast<RankedTensorType>(value.getType());
  if (!type.hasStaticShape())
    return ShapedType::kDynamic;
  if (isa<IntegerType>(type.getElementType()) || type.getRank() == 0)
    return type.getNumElements();
  int64_t last = type.getShape().back();
  return last == 0 ? 0 : type.getNumElements() / last;
}

std::optional<int64_t> kiln::tile::rowWiseRows(FusedOp fused) {
  std::optional<int64_t> rows;
  auto agree = [&](Value v) {
    int64_t r = rowCount(v);
    if (ShapedType::isDynamic(r) || (rows && *rows != r))
      return false;
    rows = r;
    return true;
  };
  for (Operation &op : fused.getBody().front().without_terminator()) {
    if (!isRowLocal(&op))
      return std::nullopt;
    for (OpOperand &operand : op.getOpOperands()) {
      // An operand read whole (a norm's weight) must exist before any row
      // is computed: it comes from outside the region.
      if (!isRowOperand(&op, operand.getOperandNumber())) {
        if (!isa<BlockArgument>(operand.get()))
          return std::nullopt;
        continue;
      }
      if (!agree(operand.get()))
        return std::nullopt;
    }
    for (Value result : op.getResults())
      if (!agree(result))
        return std::nullopt;
  }
  return rows;
}

LogicalResult GemmOp::verify() {
  int64_t batch = getBatch(), m = getM(), n = getN(), k = getK();
  if (batch <= 0 || m <= 0 || n <= 0 || k <= 0)
    return emitOpError() << "expects positive batch, m, n and k, got " << batch
                         << ", " << m << ", " << n << ", " << k;
  Type elementType = getElementTypeOrSelf(getA().getType());
  for (Value v : getOperation()->getOperands())
    if (getElementTypeOrSelf(v.getType()) != elementType)
      return emitOpError() << "expects one element type for all operands, "
                              "got "
                           << elementType << " and "
                           << getElementTypeOrSelf(v.getType());
  if (failed(
          expectElements(*this, "a", getA(), batch * m * k, "batch x m x k")) ||
      failed(
          expectElements(*this, "b", getB(), batch * k * n, "batch x k x n")) ||
      failed(expectElements(*this, "result", getResult(), batch * m * n,
                            "batch x m x n")))
    return failure();
  if (getBias() && failed(expectElements(*this, "bias", getBias(), n, "n")))
    return failure();
  return success();
}

/// The rules the flash attention kernels share: head counts, tile sizes and
/// the log-sum-exp shape [batch, num_heads, seq].
static LogicalResult verifyAttention(Operation *op, Value query, Value lse,
                                     int64_t numHeads, int64_t numKvHeads,
                                     int64_t blockQ, int64_t blockK,
                                     int64_t warps, int64_t stages) {
  if (blockQ <= 0 || blockK <= 0 || warps <= 0 || stages <= 0)
    return op->emitOpError()
           << "expects positive block_q, block_k, num_warps and num_stages, "
              "got "
           << blockQ << ", " << blockK << ", " << warps << " and " << stages;
  auto queryType = cast<RankedTensorType>(query.getType());
  if (queryType.getRank() != 3)
    return op->emitOpError()
           << "expects query to have rank 3, got " << queryType;
  if (numHeads <= 0 || numKvHeads <= 0 || numHeads % numKvHeads != 0)
    return op->emitOpError()
           << "expects positive head counts with num_kv_heads dividing "
              "num_heads, got "
           << numHeads << " and " << numKvHeads;
  auto lseType = cast<RankedTensorType>(lse.getType());
  SmallVector<int64_t> expected{queryType.getDimSize(0), numHeads,
                                queryType.getDimSize(1)};
  if (lseType.getShape() != ArrayRef<int64_t>(expected))
    return op->emitOpError() << "expects lse of shape [batch, num_heads, seq] "
                                "("
                             << expected[0] << "x" << expected[1] << "x"
                             << expected[2] << "), got " << lseType;
  return success();
}

LogicalResult FlashAttentionFwdOp::verify() {
  return verifyAttention(*this, getQuery(), getLse(), getNumHeads(),
                         getNumKvHeads(), getBlockQ(), getBlockK(),
                         getNumWarps(), getNumStages());
}

LogicalResult FlashAttentionBwdOp::verify() {
  return verifyAttention(*this, getQuery(), getLse(), getNumHeads(),
                         getNumKvHeads(), getBlockQ(), getBlockK(),
                         getNumWarps(), getNumStages());
}

LogicalResult CrossEntropyOp::verify() {
  return nn::verifyLossOperands(*this, getLogits(), getTargets());
}

LogicalResult CrossEntropyGradOp::verify() {
  return nn::verifyLossGrad(*this, getLogits(), getTargets(), getResult());
}

/// Unlike nn.embedding_grad, the kernel may accumulate in a wider type than
/// the row gradients (FP32 for BF16), so only the shapes must agree.
LogicalResult EmbeddingGradOp::verify() {
  auto resultType = cast<RankedTensorType>(getResult().getType());
  if (resultType.getRank() != 2)
    return emitOpError() << "expects result ([vocab, hidden]) to have rank "
                            "2, got "
                         << resultType;
  auto gradType = cast<RankedTensorType>(getGrad().getType());
  SmallVector<int64_t> expected(
      cast<RankedTensorType>(getIds().getType()).getShape());
  expected.push_back(resultType.getDimSize(1));
  if (failed(verifyCompatibleShape(gradType.getShape(), expected))) {
    std::string shape;
    llvm::raw_string_ostream os(shape);
    llvm::interleave(
        expected, os,
        [&](int64_t d) {
          if (ShapedType::isDynamic(d))
            os << "?";
          else
            os << d;
        },
        "x");
    return emitOpError() << "expects grad of shape " << shape
                         << " (ids shape followed by the table's hidden "
                            "size), got "
                         << gradType;
  }
  return success();
}

LogicalResult GlobalNormOp::verify() {
  return nn::verifyGlobalNorm(*this, getInputs());
}

/// The arena offset memory planning gave `value`, if it has one: a function
/// argument's `kiln.offset`, a result's entry in its op's `kiln.offsets`.
static std::optional<int64_t> plannedOffset(Value value) {
  if (auto arg = dyn_cast<BlockArgument>(value)) {
    auto func =
        dyn_cast_or_null<FunctionOpInterface>(arg.getOwner()->getParentOp());
    if (!func || !arg.getOwner()->isEntryBlock())
      return std::nullopt;
    if (IntegerAttr offset =
            kiln::attrs::kOffset.getArg(func, arg.getArgNumber()))
      return offset.getInt();
    return std::nullopt;
  }
  auto result = cast<OpResult>(value);
  DenseI64ArrayAttr offsets = kiln::attrs::kOffsets.get(result.getOwner());
  if (!offsets || result.getResultNumber() >= offsets.size())
    return std::nullopt;
  return offsets[result.getResultNumber()];
}

LogicalResult AdamWOp::verify() {
  if (failed(nn::verifyAdamW(*this)))
    return failure();
  // The update runs in place, so what it overwrites must be its own: four
  // different operands, nothing reading the old values afterwards.
  std::pair<StringRef, Value> operands[] = {{"param", getParam()},
                                            {"grad", getGrad()},
                                            {"exp_avg", getExpAvg()},
                                            {"exp_avg_sq", getExpAvgSq()}};
  for (auto [i, first] : llvm::enumerate(operands))
    for (auto second : ArrayRef(operands).drop_front(i + 1))
      if (first.second == second.second)
        return emitOpError()
               << "expects " << first.first << " and " << second.first
               << " to be different values: the update overwrites param, "
                  "exp_avg and exp_avg_sq in place";
  std::pair<StringRef, Value> replaced[] = {{"param", getParam()},
                                            {"exp_avg", getExpAvg()},
                                            {"exp_avg_sq", getExpAvgSq()}};
  for (auto [name, value] : replaced)
    for (Operation *user : value.getUsers())
      if (user != getOperation() &&
          user->getBlock() == getOperation()->getBlock() &&
          getOperation()->isBeforeInBlock(user)) {
        InFlightDiagnostic diag =
            emitOpError() << "expects no use of " << name
                          << " after the update, which overwrites it in place";
        diag.attachNote(user->getLoc()) << "used here";
        return diag;
      }
  // After tile-plan-memory: each result in its operand's buffer.
  std::pair<StringRef, Value> results[] = {
      {"new_param", getNewParam()},
      {"new_exp_avg", getNewExpAvg()},
      {"new_exp_avg_sq", getNewExpAvgSq()}};
  for (auto [result, operand] : llvm::zip_equal(results, replaced)) {
    std::optional<int64_t> resultOffset = plannedOffset(result.second);
    std::optional<int64_t> operandOffset = plannedOffset(operand.second);
    if (resultOffset && operandOffset && *resultOffset != *operandOffset)
      return emitOpError() << "expects " << result.first << " at the offset of "
                           << operand.first << " (in place), got "
                           << *resultOffset << " and " << *operandOffset;
  }
  return success();
}

void FusedOp::build(OpBuilder &builder, OperationState &state,
                    TypeRange resultTypes, ValueRange inputs) {
  state.addOperands(inputs);
  state.addTypes(resultTypes);
  Region *body = state.addRegion();
  Block *block = new Block();
  body->push_back(block);
  for (Value input : inputs)
    block->addArgument(input.getType(), input.getLoc());
}

LogicalResult FusedOp::verify() {
  Block &block = getBody().front();
  if (block.getNumArguments() != getInputs().size())
    return emitOpError() << "expects one block argument per input, got "
                         << block.getNumArguments() << " for "
                         << getInputs().size();
  for (auto [arg, input] : llvm::zip_equal(block.getArguments(), getInputs()))
    if (arg.getType() != input.getType())
      return emitOpError() << "expects block argument #" << arg.getArgNumber()
                           << " to have the type of its input, "
                           << input.getType() << ", got " << arg.getType();
  for (Operation &op : block.without_terminator())
    if (!isFusible(&op))
      return op.emitOpError()
             << "cannot be fused: a tile.fused region holds only "
                "elementwise and row-wise nn ops";
  auto yield = cast<YieldOp>(block.getTerminator());
  if (yield.getValues().getTypes() != getResultTypes())
    return emitOpError() << "expects tile.yield to return the result types";
  return success();
}

#define GET_OP_CLASSES
#include "dialects/tile/TileOps.cpp.inc"
