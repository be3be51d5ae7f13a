//===- TileOps.cpp - tile dialect operations ------------------------------===//

#include "dialects/tile/TileOps.h"
#include "dialects/nn/NNOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/TypeUtilities.h"
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
