//===- NNOps.cpp - nn dialect operations ----------------------------------===//
//
// Verifiers. Each names the operands and attributes it compares and prints
// the values it found, so that a front-end bug or a hand-written test points
// at the exact dimension that is wrong. Dynamic dimensions (`?`) match
// anything.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"

#include "dialects/nn/NNInterfaces.cpp.inc"

#include "mlir/IR/Builders.h"
#include "mlir/IR/TypeUtilities.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace kiln::nn;

namespace {

RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// True when the two dimension sizes may be equal at run time.
bool dimsMatch(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

/// Prints a dimension size, `?` when dynamic.
std::string dimStr(int64_t d) {
  return ShapedType::isDynamic(d) ? "?" : std::to_string(d);
}

/// Checks that `value` has rank `rank`; `what` names it and the layout.
LogicalResult expectRank(Operation *op, StringRef what, Value value,
                         int64_t rank) {
  RankedTensorType type = tensorType(value);
  if (type.getRank() == rank)
    return success();
  return op->emitOpError() << "expects " << what << " to have rank " << rank
                           << ", got " << type;
}

/// Checks that two values have the same element type and compatible shapes.
LogicalResult expectSameType(Operation *op, StringRef aName, Value a,
                             StringRef bName, Value b) {
  Type aType = a.getType(), bType = b.getType();
  if (getElementTypeOrSelf(aType) == getElementTypeOrSelf(bType) &&
      succeeded(verifyCompatibleShape(aType, bType)))
    return success();
  return op->emitOpError() << "expects " << aName << " and " << bName
                           << " to have the same type, got " << aType << " and "
                           << bType;
}

/// Checks that every named value has the element type of the first one.
LogicalResult
expectSameElementType(Operation *op,
                      ArrayRef<std::pair<StringRef, Value>> namedValues) {
  auto [firstName, first] = namedValues.front();
  Type expected = getElementTypeOrSelf(first.getType());
  for (auto [name, value] : namedValues.drop_front()) {
    if (!value)
      continue;
    Type actual = getElementTypeOrSelf(value.getType());
    if (actual != expected)
      return op->emitOpError()
             << "expects " << name << " to have the element type of "
             << firstName << " (" << expected << "), got " << actual;
  }
  return success();
}

/// Checks that a gradient reduction's `result` has the element type of
/// `source` or FP32: the sum is accumulated in FP32 and may stay there
/// (nn-fuse's epilogue group writes weight gradients in FP32 rather than
/// rounding them to BF16 and widening them for the optimizer).
static LogicalResult expectAccumulatorType(Operation *op, StringRef name,
                                           Value result, StringRef sourceName,
                                           Value source) {
  Type expected = getElementTypeOrSelf(source.getType());
  Type actual = getElementTypeOrSelf(result.getType());
  if (actual == expected || actual.isF32())
    return success();
  return op->emitOpError() << "expects " << name << " to have the element "
                           << "type of " << sourceName << " (" << expected
                           << ") or f32, got " << actual;
}

/// Checks that dimension `dim` of `value` is `expected` (or unknown).
LogicalResult expectDim(Operation *op, StringRef what, Value value, int64_t dim,
                        int64_t expected, StringRef expectedWhat) {
  int64_t actual = tensorType(value).getDimSize(dim);
  if (dimsMatch(actual, expected))
    return success();
  return op->emitOpError() << "expects " << what << " (dimension " << dim
                           << " of " << tensorType(value) << ") to equal "
                           << expectedWhat << " (" << dimStr(expected)
                           << "), got " << dimStr(actual);
}

/// Checks that `result` has shape `shape` (unknown dimensions match).
LogicalResult expectResultShape(Operation *op, Value result,
                                ArrayRef<int64_t> shape, StringRef rule) {
  ArrayRef<int64_t> actual = tensorType(result).getShape();
  if (actual.size() == shape.size() &&
      llvm::all_of(llvm::zip_equal(actual, shape), [](auto pair) {
        return dimsMatch(std::get<0>(pair), std::get<1>(pair));
      }))
    return success();
  std::string expected;
  llvm::raw_string_ostream os(expected);
  llvm::interleave(
      shape, os, [&](int64_t d) { os << dimStr(d); }, "x");
  return op->emitOpError() << "expects result shape " << expected << " ("
                           << rule << "), got " << result.getType();
}

/// Checks that `value` is a vector of size `size` over the last dimension of
/// `input` (norm weights and biases).
LogicalResult expectFeatureVector(Operation *op, StringRef name, Value value,
                                  Value input) {
  if (!value)
    return success();
  if (failed(expectRank(op, name, value, 1)))
    return failure();
  RankedTensorType inputType = tensorType(input);
  int64_t features = inputType.getDimSize(inputType.getRank() - 1);
  return expectDim(op, Twine(name + " size").str(), value, 0, features,
                   "the last dimension of input");
}

/// Checks that a floating-point attribute is positive; prints it shortest.
LogicalResult expectPositive(Operation *op, StringRef name,
                             const APFloat &value) {
  if (!value.isNegative() && !value.isZero() && !value.isNaN())
    return success();
  SmallString<16> text;
  value.toString(text);
  return op->emitOpError() << "expects " << name << " to be positive, got "
                           << text;
}

/// Shared checks of nn.quantize and nn.dequantize: `tile_shape` has one
/// positive entry per dimension of `fp8Value` that divides it, and `scale`
/// has one entry per tile.
LogicalResult verifyTiling(Operation *op, Value fp8Value, StringRef fp8Name,
                           Value scale, ArrayRef<int64_t> tileShape) {
  RankedTensorType type = tensorType(fp8Value);
  if (static_cast<int64_t>(tileShape.size()) != type.getRank())
    return op->emitOpError()
           << "expects tile_shape to have one entry per dimension of "
           << fp8Name << " (" << type.getRank() << "), got "
           << tileShape.size();
  SmallVector<int64_t> scaleShape;
  for (auto [dim, tile] : llvm::enumerate(tileShape)) {
    if (tile <= 0)
      return op->emitOpError() << "expects tile_shape[" << dim
                               << "] to be positive, got " << tile;
    int64_t size = type.getDimSize(dim);
    if (ShapedType::isDynamic(size)) {
      scaleShape.push_back(ShapedType::kDynamic);
      continue;
    }
    if (size % tile != 0)
      return op->emitOpError() << "expects tile_shape[" << dim << "] (" << tile
                               << ") to divide dimension " << dim << " of "
                               << fp8Name << " (" << size << ")";
    scaleShape.push_back(size / tile);
  }
  ArrayRef<int64_t> actual = tensorType(scale).getShape();
  if (actual.size() != scaleShape.size() ||
      !llvm::all_of(llvm::zip_equal(actual, scaleShape), [](auto pair) {
        return dimsMatch(std::get<0>(pair), std::get<1>(pair));
      })) {
    std::string expected;
    llvm::raw_string_ostream os(expected);
    llvm::interleave(
        scaleShape, os, [&](int64_t d) { os << dimStr(d); }, "x");
    return op->emitOpError()
           << "expects scale to have one entry per tile, shape " << expected
           << " (" << fp8Name << " shape / tile_shape), got "
           << scale.getType();
  }
  return success();
}

} // namespace

//===----------------------------------------------------------------------===//
// EmbeddingOp
//===----------------------------------------------------------------------===//

/// The rules nn.embedding and nn.embedding_grad share: `table` is
/// [vocab, hidden] and `rows` (the gathered rows or their gradients) has the
/// shape of `ids` followed by hidden.
static LogicalResult verifyEmbedding(Operation *op, StringRef tableName,
                                     Value table, Value ids, StringRef rowsName,
                                     Value rows) {
  if (failed(
          expectRank(op, (tableName + " ([vocab, hidden])").str(), table, 2)) ||
      failed(expectSameElementType(op, {{tableName, table}, {rowsName, rows}})))
    return failure();
  SmallVector<int64_t> shape(tensorType(ids).getShape());
  shape.push_back(tensorType(table).getDimSize(1));
  return expectResultShape(op, rows, shape,
                           "ids shape followed by the table's hidden size");
}

LogicalResult EmbeddingOp::verify() {
  return verifyEmbedding(*this, "table", getTable(), getIds(), "result",
                         getResult());
}

//===----------------------------------------------------------------------===//
// LinearOp
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::verify() {
  RankedTensorType inputType = tensorType(getInput());
  if (inputType.getRank() < 1)
    return emitOpError("expects input to have rank at least 1");
  StringRef weightLayout =
      getTransposeWeight() ? "weight ([in, out])" : "weight ([out, in])";
  if (failed(expectRank(*this, weightLayout, getWeight(), 2)) ||
      failed(expectSameElementType(*this, {{"input", getInput()},
                                           {"weight", getWeight()},
                                           {"bias", getBias()},
                                           {"result", getResult()}})))
    return failure();
  int64_t inFeatures = inputType.getDimSize(inputType.getRank() - 1);
  int64_t inDim = getTransposeWeight() ? 0 : 1;
  int64_t outFeatures = tensorType(getWeight()).getDimSize(1 - inDim);
  if (failed(expectDim(*this, "weight in-features", getWeight(), inDim,
                       inFeatures, "the last dimension of input")))
    return failure();
  if (getBias()) {
    if (failed(expectRank(*this, "bias", getBias(), 1)) ||
        failed(expectDim(*this, "bias size", getBias(), 0, outFeatures,
                         "weight out-features")))
      return failure();
  }
  SmallVector<int64_t> shape(inputType.getShape());
  shape.back() = outFeatures;
  return expectResultShape(*this, getResult(), shape,
                           "input shape with the last dimension replaced by "
                           "weight out-features");
}

//===----------------------------------------------------------------------===//
// MatmulOp
//===----------------------------------------------------------------------===//

LogicalResult MatmulOp::verify() {
  RankedTensorType lhsType = tensorType(getLhs());
  RankedTensorType rhsType = tensorType(getRhs());
  int64_t rank = lhsType.getRank();
  if (rank < 2)
    return emitOpError() << "expects lhs to have rank at least 2, got "
                         << lhsType;
  if (rhsType.getRank() != rank)
    return emitOpError() << "expects lhs and rhs to have the same rank, got "
                         << lhsType << " and " << rhsType;
  if (failed(expectSameElementType(
          *this,
          {{"lhs", getLhs()}, {"rhs", getRhs()}, {"result", getResult()}})))
    return failure();
  SmallVector<int64_t> shape;
  for (int64_t dim = 0; dim < rank - 2; ++dim) {
    if (!dimsMatch(lhsType.getDimSize(dim), rhsType.getDimSize(dim)))
      return emitOpError() << "expects batch dimension " << dim
                           << " of lhs and rhs to match, got "
                           << dimStr(lhsType.getDimSize(dim)) << " and "
                           << dimStr(rhsType.getDimSize(dim));
    shape.push_back(lhsType.getDimSize(dim));
  }
  int64_t lhsRows = lhsType.getDimSize(rank - 2);
  int64_t lhsCols = lhsType.getDimSize(rank - 1);
  int64_t rhsRows = rhsType.getDimSize(rank - 2);
  int64_t rhsCols = rhsType.getDimSize(rank - 1);
  int64_t m = getTransposeLhs() ? lhsCols : lhsRows;
  int64_t lhsK = getTransposeLhs() ? lhsRows : lhsCols;
  int64_t rhsK = getTransposeRhs() ? rhsCols : rhsRows;
  int64_t n = getTransposeRhs() ? rhsRows : rhsCols;
  if (!dimsMatch(lhsK, rhsK))
    return emitOpError() << "expects the contraction dimensions of lhs ("
                         << dimStr(lhsK) << ") and rhs (" << dimStr(rhsK)
                         << ") to match";
  shape.push_back(m);
  shape.push_back(n);
  return expectResultShape(*this, getResult(), shape,
                           "batch dimensions, then lhs rows and rhs columns");
}

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::verify() {
  if (tensorType(getInput()).getRank() < 1)
    return emitOpError("expects input to have rank at least 1");
  if (failed(
          expectSameType(*this, "input", getInput(), "result", getResult())) ||
      failed(expectSameElementType(
          *this, {{"input", getInput()}, {"weight", getWeight()}})) ||
      failed(expectFeatureVector(*this, "weight", getWeight(), getInput())))
    return failure();
  return expectPositive(*this, "epsilon", getEpsilon());
}

LogicalResult LayerNormOp::verify() {
  if (tensorType(getInput()).getRank() < 1)
    return emitOpError("expects input to have rank at least 1");
  if (failed(
          expectSameType(*this, "input", getInput(), "result", getResult())) ||
      failed(expectSameElementType(*this, {{"input", getInput()},
                                           {"weight", getWeight()},
                                           {"bias", getBias()}})) ||
      failed(expectFeatureVector(*this, "weight", getWeight(), getInput())) ||
      failed(expectFeatureVector(*this, "bias", getBias(), getInput())))
    return failure();
  return expectPositive(*this, "epsilon", getEpsilon());
}

//===----------------------------------------------------------------------===//
// RoPEOp
//===----------------------------------------------------------------------===//

LogicalResult RoPEOp::verify() {
  if (failed(expectRank(*this, "input ([batch, seq, num_heads * head_dim])",
                        getInput(), 3)) ||
      failed(expectSameType(*this, "input", getInput(), "result", getResult())))
    return failure();
  int64_t numHeads = getNumHeads();
  if (numHeads <= 0)
    return emitOpError() << "expects num_heads to be positive, got "
                         << numHeads;
  int64_t hidden = tensorType(getInput()).getDimSize(2);
  if (!ShapedType::isDynamic(hidden)) {
    if (hidden % numHeads != 0)
      return emitOpError() << "expects num_heads (" << numHeads
                           << ") to divide the hidden size of input (" << hidden
                           << ")";
    if ((hidden / numHeads) % 2 != 0)
      return emitOpError() << "expects an even head_dim to rotate in pairs, "
                           << "got " << hidden / numHeads << " (" << hidden
                           << " / num_heads " << numHeads << ")";
  }
  if (failed(expectPositive(*this, "theta", getTheta())))
    return failure();
  if (Value positions = getPositions()) {
    if (failed(expectRank(*this, "positions ([batch, seq])", positions, 2)) ||
        failed(expectDim(*this, "positions batch", positions, 0,
                         tensorType(getInput()).getDimSize(0),
                         "the batch size of input")) ||
        failed(expectDim(*this, "positions length", positions, 1,
                         tensorType(getInput()).getDimSize(1),
                         "the sequence length of input")))
      return failure();
  }
  return success();
}

LogicalResult kiln::nn::verifyRopeTable(Operation *op, Value positions,
                                        Value table, const APFloat &theta) {
  if (failed(expectRank(op, "result ([batch, seq, head_dim])", table, 3)) ||
      failed(expectPositive(op, "theta", theta)))
    return failure();
  RankedTensorType type = tensorType(table);
  int64_t headDim = type.getDimSize(2);
  if (!ShapedType::isDynamic(headDim) && (headDim <= 0 || headDim % 2 != 0))
    return op->emitOpError() << "expects an even, positive head_dim (the "
                                "result's last dimension), got "
                             << headDim;
  if (!positions)
    return success();
  if (failed(expectRank(op, "positions ([batch, seq])", positions, 2)) ||
      failed(expectDim(op, "positions batch", positions, 0, type.getDimSize(0),
                       "the batch size of the table")))
    return failure();
  return expectDim(op, "positions length", positions, 1, type.getDimSize(1),
                   "the sequence length of the table");
}

LogicalResult RoPETableOp::verify() {
  return verifyRopeTable(*this, getPositions(), getResult(), getTheta());
}

LogicalResult kiln::nn::verifyAttentionRope(Operation *op, Value query,
                                            Value rope, int64_t numHeads) {
  if (!rope)
    return success();
  if (failed(expectRank(op, "rope ([batch, seq, head_dim])", rope, 3)))
    return failure();
  RankedTensorType queryType = tensorType(query);
  int64_t hidden = queryType.getDimSize(2);
  int64_t headDim = ShapedType::isDynamic(hidden) || numHeads <= 0
                        ? ShapedType::kDynamic
                        : hidden / numHeads;
  if (failed(expectDim(op, "rope batch", rope, 0, queryType.getDimSize(0),
                       "the batch size of query")) ||
      failed(expectDim(op, "rope length", rope, 1, queryType.getDimSize(1),
                       "the sequence length of query")))
    return failure();
  return expectDim(op, "rope width", rope, 2, headDim, "head_dim");
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

int64_t AttentionOp::getHeadDim() {
  int64_t hidden = tensorType(getQuery()).getDimSize(2);
  if (ShapedType::isDynamic(hidden) || getNumHeads() <= 0)
    return ShapedType::kDynamic;
  return hidden / getNumHeads();
}

/// The operand rules nn.attention and nn.attention_grad share.
static LogicalResult verifyAttentionOperands(Operation *op, Value query,
                                             Value key, Value value,
                                             Value cuSeqlens, int64_t numHeads,
                                             int64_t numKvHeads,
                                             std::optional<APFloat> scale) {
  for (auto [name, operand] : {std::pair<StringRef, Value>{"query", query},
                               {"key", key},
                               {"value", value}})
    if (failed(expectRank(op, name, operand, 3)))
      return failure();
  if (failed(expectSameType(op, "key", key, "value", value)) ||
      failed(expectSameElementType(op, {{"query", query}, {"key", key}})))
    return failure();

  if (numHeads <= 0 || numKvHeads <= 0)
    return op->emitOpError()
           << "expects num_heads and num_kv_heads to be "
           << "positive, got " << numHeads << " and " << numKvHeads;
  if (numHeads % numKvHeads != 0)
    return op->emitOpError() << "expects num_kv_heads (" << numKvHeads
                             << ") to divide num_heads (" << numHeads << ")";

  RankedTensorType queryType = tensorType(query);
  if (failed(expectDim(op, "key batch", key, 0, queryType.getDimSize(0),
                       "the batch size of query")) ||
      failed(expectDim(op, "key length", key, 1, queryType.getDimSize(1),
                       "the sequence length of query")))
    return failure();
  int64_t queryHidden = queryType.getDimSize(2);
  if (ShapedType::isDynamic(queryHidden))
    return success();
  if (queryHidden % numHeads != 0)
    return op->emitOpError()
           << "expects num_heads (" << numHeads
           << ") to divide the hidden size of query (" << queryHidden << ")";
  if (failed(expectDim(op, "key hidden size", key, 2,
                       numKvHeads * (queryHidden / numHeads),
                       "num_kv_heads x head_dim")))
    return failure();

  if (scale && failed(expectPositive(op, "scale", *scale)))
    return failure();
  if (cuSeqlens) {
    int64_t entries = tensorType(cuSeqlens).getDimSize(0);
    if (!ShapedType::isDynamic(entries) && entries < 2)
      return op->emitOpError()
             << "expects cu_seqlens to hold at least 2 offsets (one "
             << "document), got " << entries;
  }
  return success();
}

LogicalResult AttentionOp::verify() {
  if (failed(expectRank(*this, "query", getQuery(), 3)) ||
      failed(expectSameType(*this, "query", getQuery(), "result", getResult())))
    return failure();
  if (failed(verifyAttentionOperands(*this, getQuery(), getKey(), getValue(),
                                     getCuSeqlens(), getNumHeads(),
                                     getNumKvHeads(), getScale())))
    return failure();
  return verifyAttentionRope(*this, getQuery(), getRope(), getNumHeads());
}

LogicalResult AttentionGradOp::verify() {
  if (failed(verifyAttentionOperands(*this, getQuery(), getKey(), getValue(),
                                     getCuSeqlens(), getNumHeads(),
                                     getNumKvHeads(), getScale())) ||
      failed(
          verifyAttentionRope(*this, getQuery(), getRope(), getNumHeads())) ||
      failed(expectSameType(*this, "grad", getGrad(), "query", getQuery())) ||
      failed(expectSameType(*this, "query", getQuery(), "query_grad",
                            getQueryGrad())) ||
      failed(expectSameType(*this, "key", getKey(), "key_grad", getKeyGrad())))
    return failure();
  return expectSameType(*this, "value", getValue(), "value_grad",
                        getValueGrad());
}

//===----------------------------------------------------------------------===//
// Elementwise ops
//===----------------------------------------------------------------------===//

LogicalResult SwiGLUOp::verify() {
  if (failed(expectSameType(*this, "gate", getGate(), "up", getUp())))
    return failure();
  return expectSameType(*this, "gate", getGate(), "result", getResult());
}

LogicalResult GeluOp::verify() {
  return expectSameType(*this, "input", getInput(), "result", getResult());
}

LogicalResult AddOp::verify() {
  if (failed(expectSameType(*this, "lhs", getLhs(), "rhs", getRhs())))
    return failure();
  return expectSameType(*this, "lhs", getLhs(), "result", getResult());
}

LogicalResult MulOp::verify() {
  if (failed(expectSameType(*this, "lhs", getLhs(), "rhs", getRhs())))
    return failure();
  return expectSameType(*this, "lhs", getLhs(), "result", getResult());
}

//===----------------------------------------------------------------------===//
// CrossEntropyOp
//===----------------------------------------------------------------------===//

LogicalResult kiln::nn::verifyLossOperands(Operation *op, Value logits,
                                           Value targets) {
  RankedTensorType logitsType = tensorType(logits);
  RankedTensorType targetsType = tensorType(targets);
  if (logitsType.getRank() < 2)
    return op->emitOpError() << "expects logits ([..., vocab]) to have rank "
                             << "at least 2, got " << logitsType;
  if (targetsType.getRank() != logitsType.getRank() - 1)
    return op->emitOpError()
           << "expects targets to have the leading dimensions of logits (rank "
           << logitsType.getRank() - 1 << "), got " << targetsType;
  for (int64_t dim = 0; dim < targetsType.getRank(); ++dim)
    if (failed(expectDim(op, "targets", targets, dim,
                         logitsType.getDimSize(dim),
                         "the matching dimension of logits")))
      return failure();
  return success();
}

LogicalResult CrossEntropyOp::verify() {
  return verifyLossOperands(*this, getLogits(), getTargets());
}

LogicalResult kiln::nn::verifyLossGrad(Operation *op, Value logits,
                                       Value targets, Value result) {
  if (failed(verifyLossOperands(op, logits, targets)))
    return failure();
  return expectSameType(op, "logits", logits, "result", result);
}

LogicalResult CrossEntropyGradOp::verify() {
  return verifyLossGrad(*this, getLogits(), getTargets(), getResult());
}

//===----------------------------------------------------------------------===//
// QuantizeOp and DequantizeOp
//===----------------------------------------------------------------------===//

LogicalResult QuantizeOp::verify() {
  if (failed(
          verifyCompatibleShape(getInput().getType(), getResult().getType())))
    return emitOpError() << "expects result to have the shape of input, got "
                         << getResult().getType() << " for "
                         << getInput().getType();
  return verifyTiling(*this, getInput(), "input", getScale(), getTileShape());
}

LogicalResult DequantizeOp::verify() {
  if (failed(
          verifyCompatibleShape(getInput().getType(), getResult().getType())))
    return emitOpError() << "expects result to have the shape of input, got "
                         << getResult().getType() << " for "
                         << getInput().getType();
  return verifyTiling(*this, getInput(), "input", getScale(), getTileShape());
}

//===----------------------------------------------------------------------===//
// CastOp, SplitOp, ConcatOp
//===----------------------------------------------------------------------===//

LogicalResult CastOp::verify() {
  if (failed(
          verifyCompatibleShape(getInput().getType(), getResult().getType())))
    return emitOpError() << "expects result to have the shape of input, got "
                         << getResult().getType() << " for "
                         << getInput().getType();
  return success();
}

/// Checks that dimension `dim` of `whole` (the last, or 0) is the sum of
/// `parts`' and that all other dimensions and the element type agree.
static LogicalResult verifyPartition(Operation *op, Value whole,
                                     StringRef wholeName, ValueRange parts,
                                     StringRef partsName, int64_t dim) {
  if (parts.empty())
    return op->emitOpError() << "expects at least one " << partsName;
  RankedTensorType wholeType = tensorType(whole);
  int64_t rank = wholeType.getRank();
  if (rank < 1)
    return op->emitOpError()
           << "expects " << wholeName << " to have rank at least 1";
  if (dim != 0 && dim != rank - 1)
    return op->emitOpError() << "expects dim to be 0 or the last dimension ("
                             << rank - 1 << "), got " << dim;
  int64_t sum = 0;
  for (auto [index, part] : llvm::enumerate(parts)) {
    RankedTensorType partType = tensorType(part);
    std::string name = (partsName + " #" + Twine(index)).str();
    if (partType.getRank() != rank ||
        partType.getElementType() != wholeType.getElementType())
      return op->emitOpError()
             << "expects " << name << " to have the rank and element type of "
             << wholeName << " (" << wholeType << "), got " << partType;
    for (int64_t d = 0; d < rank; ++d)
      if (d != dim &&
          failed(expectDim(op, name, part, d, wholeType.getDimSize(d),
                           "the matching dimension of " + wholeName.str())))
        return failure();
    int64_t width = partType.getDimSize(dim);
    if (ShapedType::isDynamic(width) || ShapedType::isDynamic(sum))
      sum = ShapedType::kDynamic;
    else
      sum += width;
  }
  int64_t total = wholeType.getDimSize(dim);
  if (!dimsMatch(sum, total))
    return op->emitOpError() << "expects dimension " << dim << " of the "
                             << partsName << "s to add up to that of "
                             << wholeName << " (" << total << "), got " << sum;
  return success();
}

int64_t SplitOp::getSplitDim() {
  return getDim() ? static_cast<int64_t>(*getDim())
                  : tensorType(getInput()).getRank() - 1;
}

int64_t ConcatOp::getConcatDim() {
  return getDim() ? static_cast<int64_t>(*getDim())
                  : tensorType(getResult()).getRank() - 1;
}

LogicalResult SplitOp::verify() {
  return verifyPartition(*this, getInput(), "input", getResults(), "result",
                         getSplitDim());
}

LogicalResult ConcatOp::verify() {
  return verifyPartition(*this, getResult(), "result", getInputs(), "input",
                         getConcatDim());
}

//===----------------------------------------------------------------------===//
// Gradient ops
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingGradOp::verify() {
  if (failed(expectAccumulatorType(*this, "result", getResult(), "grad",
                                   getGrad())))
    return failure();
  // The table's shape; its element type is the accumulator's.
  SmallVector<int64_t> shape(tensorType(getGrad()).getShape());
  if (failed(expectRank(*this, "result ([vocab, hidden])", getResult(), 2)))
    return failure();
  SmallVector<int64_t> rows(tensorType(getIds()).getShape());
  rows.push_back(tensorType(getResult()).getDimSize(1));
  return expectResultShape(*this, getGrad(), rows,
                           "ids shape followed by the table's hidden size");
}

LogicalResult LinearWeightGradOp::verify() {
  RankedTensorType gradType = tensorType(getGrad());
  RankedTensorType inputType = tensorType(getInput());
  int64_t rank = gradType.getRank();
  if (rank < 1 || inputType.getRank() != rank)
    return emitOpError() << "expects grad and input to have the same rank "
                         << "(at least 1), got " << gradType << " and "
                         << inputType;
  if (failed(expectSameElementType(
          *this, {{"grad", getGrad()}, {"input", getInput()}})) ||
      failed(expectAccumulatorType(*this, "result", getResult(), "grad",
                                   getGrad())))
    return failure();
  for (int64_t dim = 0; dim + 1 < rank; ++dim)
    if (failed(expectDim(*this, "input", getInput(), dim,
                         gradType.getDimSize(dim),
                         "the matching dimension of grad")))
      return failure();
  int64_t out = gradType.getDimSize(rank - 1);
  int64_t in = inputType.getDimSize(rank - 1);
  SmallVector<int64_t> shape = getTransposeWeight()
                                   ? SmallVector<int64_t>{in, out}
                                   : SmallVector<int64_t>{out, in};
  return expectResultShape(*this, getResult(), shape,
                           getTransposeWeight() ? "[in, out]" : "[out, in]");
}

LogicalResult ColumnSumOp::verify() {
  RankedTensorType inputType = tensorType(getInput());
  if (inputType.getRank() < 1)
    return emitOpError("expects input to have rank at least 1");
  if (failed(expectAccumulatorType(*this, "result", getResult(), "input",
                                   getInput())))
    return failure();
  return expectResultShape(*this, getResult(),
                           {inputType.getDimSize(inputType.getRank() - 1)},
                           "the last dimension of input");
}

/// Shared rules of the norm gradients: grad has the input's type, the
/// optional weight and the result match the op's role.
static LogicalResult verifyNormGrad(Operation *op, Value grad, Value input,
                                    Value weight, Value result,
                                    bool resultIsWeightGrad,
                                    const APFloat &epsilon) {
  if (tensorType(input).getRank() < 1)
    return op->emitOpError("expects input to have rank at least 1");
  if (failed(expectSameType(op, "grad", grad, "input", input)))
    return failure();
  if (weight && (failed(expectSameElementType(
                     op, {{"input", input}, {"weight", weight}})) ||
                 failed(expectFeatureVector(op, "weight", weight, input))))
    return failure();
  if (resultIsWeightGrad) {
    // A weight gradient may stay in its FP32 accumulator.
    if (failed(expectAccumulatorType(op, "result", result, "input", input)) ||
        failed(expectFeatureVector(op, "result", result, input)))
      return failure();
  } else if (failed(expectSameType(op, "input", input, "result", result))) {
    return failure();
  }
  return expectPositive(op, "epsilon", epsilon);
}

LogicalResult RMSNormGradOp::verify() {
  return verifyNormGrad(*this, getGrad(), getInput(), getWeight(), getResult(),
                        /*resultIsWeightGrad=*/false, getEpsilon());
}

LogicalResult RMSNormWeightGradOp::verify() {
  return verifyNormGrad(*this, getGrad(), getInput(), Value(), getResult(),
                        /*resultIsWeightGrad=*/true, getEpsilon());
}

LogicalResult LayerNormGradOp::verify() {
  return verifyNormGrad(*this, getGrad(), getInput(), getWeight(), getResult(),
                        /*resultIsWeightGrad=*/false, getEpsilon());
}

LogicalResult LayerNormWeightGradOp::verify() {
  return verifyNormGrad(*this, getGrad(), getInput(), Value(), getResult(),
                        /*resultIsWeightGrad=*/true, getEpsilon());
}

LogicalResult SwiGLUGradOp::verify() {
  if (failed(expectSameType(*this, "gate", getGate(), "up", getUp())) ||
      failed(expectSameType(*this, "gate", getGate(), "grad", getGrad())) ||
      failed(
          expectSameType(*this, "gate", getGate(), "gate_grad", getGateGrad())))
    return failure();
  return expectSameType(*this, "up", getUp(), "up_grad", getUpGrad());
}

LogicalResult GeluGradOp::verify() {
  if (failed(expectSameType(*this, "grad", getGrad(), "input", getInput())))
    return failure();
  return expectSameType(*this, "input", getInput(), "result", getResult());
}

//===----------------------------------------------------------------------===//
// Optimizer ops
//===----------------------------------------------------------------------===//

LogicalResult kiln::nn::verifyGlobalNorm(Operation *op, ValueRange inputs,
                                         std::optional<uint64_t> shards) {
  if (inputs.empty())
    return op->emitOpError("expects at least one input");
  if (shards && *shards < 1)
    return op->emitOpError() << "expects shards >= 1, got " << *shards;
  return success();
}

LogicalResult GlobalNormOp::verify() {
  return verifyGlobalNorm(*this, getInputs(), getShards());
}

RankedTensorType kiln::nn::shardType(RankedTensorType param, int64_t shards) {
  if (shards <= 1)
    return param;
  int64_t elements = param.getNumElements();
  return RankedTensorType::get({(elements + shards - 1) / shards},
                               param.getElementType());
}

LogicalResult kiln::nn::detail::verifyAdamW(
    Operation *op, Value param, NamedValues sameType, NamedValues moments,
    std::optional<uint64_t> shards, const APFloat &beta1, const APFloat &beta2,
    const APFloat &epsilon, const APFloat &weightDecay,
    const APFloat &maxGradNorm) {
  if (shards && *shards < 1)
    return op->emitOpError() << "expects shards >= 1, got " << *shards;
  // The whole tensor's type is the gradient's (sameType[0]); under ZeRO-1
  // with sharded masters the param (and its update) is this rank's shard.
  auto wholeType = cast<RankedTensorType>(sameType.front().second.getType());
  bool sharded = shards && *shards > 1;
  if (sharded && !wholeType.hasStaticShape())
    return op->emitOpError()
           << "shards a parameter of dynamic shape " << wholeType;
  RankedTensorType shard =
      sharded ? shardType(wholeType, static_cast<int64_t>(*shards)) : wholeType;
  if (!(sharded && param.getType() == shard))
    for (auto [name, value] : sameType)
      if (failed(expectSameType(op, "param", param, name, value)))
        return failure();
  for (auto [name, value] : sameType.drop_front())
    if (failed(expectSameType(op, "param", param, name, value)))
      return failure();
  for (auto [name, value] : moments)
    if (value.getType() != shard)
      return op->emitOpError()
             << "expects " << name << " to be " << shard
             << (shard == wholeType
                     ? StringRef(" (the param's type)")
                     : StringRef(" (this rank's shard of the param)"))
             << ", got " << value.getType();
  for (auto [name, beta] :
       {std::pair<StringRef, double>{"beta1", beta1.convertToDouble()},
        {"beta2", beta2.convertToDouble()}})
    if (!(beta >= 0.0 && beta < 1.0))
      return op->emitOpError()
             << "expects " << name << " in [0, 1), got "
             << llvm::formatv("{0}", llvm::format("%g", beta)).str();
  if (failed(expectPositive(op, "epsilon", epsilon)))
    return failure();
  if (weightDecay.isNegative() || weightDecay.isNaN())
    return op->emitOpError("expects weight_decay to be non-negative");
  if (maxGradNorm.isNegative() || maxGradNorm.isNaN())
    return op->emitOpError(
        "expects max_grad_norm to be non-negative (0 disables clipping)");
  return success();
}

LogicalResult AdamWUpdateOp::verify() { return verifyAdamW(*this); }

LogicalResult kiln::nn::verifyGradAccumulate(Operation *op, ValueRange operands,
                                             ValueRange results) {
  unsigned n = results.size();
  if (n == 0 || operands.size() != 2 * n + 1)
    return op->emitOpError()
           << "expects N accumulators, N gradients and the micro-step index "
              "for N results (N >= 1), got "
           << operands.size() << " operands and " << n << " results";
  Value microStep = operands.back();
  if (cast<RankedTensorType>(microStep.getType()).getRank() != 0)
    return op->emitOpError() << "expects the micro-step index to be a scalar "
                                "(tensor<f32>), got "
                             << microStep.getType();
  for (unsigned i = 0; i < n; ++i) {
    Type type = operands[i].getType();
    if (operands[n + i].getType() != type)
      return op->emitOpError()
             << "expects gradient #" << i << " to have its accumulator's type "
             << type << ", got " << operands[n + i].getType();
    if (results[i].getType() != type)
      return op->emitOpError()
             << "expects result #" << i << " to have its accumulator's type "
             << type << ", got " << results[i].getType();
  }
  return success();
}

LogicalResult GradAccumulateOp::verify() {
  return verifyGradAccumulate(*this, getOperands_(), getAccumulated());
}

#define GET_OP_CLASSES
#include "dialects/nn/NNOps.cpp.inc"
