//===- TileOps.cpp - tile dialect operations ------------------------------===//

#include "dialects/tile/TileOps.h"
#include "dialects/dist/DistOps.h"
#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/TypeUtilities.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"

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

namespace {
/// The rows of one op's row-read values, if they agree with `rows` (set
/// from the first); else why not.
std::optional<std::string> agreeRows(Operation *op,
                                     std::optional<int64_t> &rows) {
  auto check = [&](Value v, const Twine &what) -> std::optional<std::string> {
    int64_t r = rowCount(v);
    if (ShapedType::isDynamic(r))
      return llvm::formatv("{0} of '{1}' has a dynamic shape", what.str(),
                           op->getName())
          .str();
    if (rows && *rows != r)
      return llvm::formatv("{0} of '{1}' has {2} rows, the region's others "
                           "{3}",
                           what.str(), op->getName(), r, *rows)
          .str();
    rows = r;
    return std::nullopt;
  };
  for (OpOperand &operand : op->getOpOperands())
    if (isRowOperand(op, operand.getOperandNumber()))
      if (auto reason = check(operand.get(),
                              "operand #" + Twine(operand.getOperandNumber())))
        return reason;
  for (OpResult result : op->getResults())
    if (auto reason =
            check(result, "result #" + Twine(result.getResultNumber())))
      return reason;
  return std::nullopt;
}
} // namespace

std::optional<int64_t> kiln::tile::opRowCount(Operation *op) {
  std::optional<int64_t> rows;
  if (agreeRows(op, rows))
    return std::nullopt;
  return rows;
}

std::optional<int64_t> kiln::tile::rowWiseRows(FusedOp fused,
                                               std::string *whyNot) {
  auto refuse = [&](std::string reason) -> std::optional<int64_t> {
    if (whyNot)
      *whyNot = std::move(reason);
    return std::nullopt;
  };
  std::optional<int64_t> rows;
  for (Operation &op : fused.getBody().front().without_terminator()) {
    if (!isRowLocal(&op))
      return refuse(
          llvm::formatv("'{0}' is not row-local", op.getName()).str());
    // An operand read whole (a norm's weight) must exist before any row is
    // computed: it comes from outside the region.
    for (OpOperand &operand : op.getOpOperands())
      if (!isRowOperand(&op, operand.getOperandNumber()) &&
          !isa<BlockArgument>(operand.get()))
        return refuse(llvm::formatv("operand #{0} of '{1}' is read whole but "
                                    "computed in the region",
                                    operand.getOperandNumber(), op.getName())
                          .str());
    if (std::optional<std::string> reason = agreeRows(&op, rows))
      return refuse(*reason);
  }
  if (!rows)
    return refuse("it holds no row-read value");
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
  return verifyEpilogue();
}

LogicalResult GemmOp::verifyEpilogue() {
  StringRef epilogue = getEpilogue();
  bool gelu = epilogue == kGeluTanh, dgelu = epilogue == kDgeluTanh;
  bool bgradA = epilogue == kBgradA, bgradB = epilogue == kBgradB;
  if (!gelu && !dgelu && !bgradA && !bgradB && epilogue != kNone)
    return emitOpError() << "unknown epilogue '" << epilogue
                         << "' (none, gelu_tanh, dgelu_tanh, bgrad_a, bgrad_b)";
  bool bgrad = bgradA || bgradB;
  if (getExtras().size() > 1 || (!getExtras().empty() && !gelu && !bgrad))
    return emitOpError() << "has " << getExtras().size()
                         << " results after the first; the " << epilogue
                         << " epilogue writes "
                         << (gelu    ? "at most one (the pre-activation)"
                             : bgrad ? "one (the bias gradient)"
                                     : "none");
  if (getPreActivation() &&
      getPreActivation().getType() != getResult().getType())
    return emitOpError() << "expects pre_activation of the result's type "
                         << getResult().getType() << ", got "
                         << getPreActivation().getType();
  if (static_cast<bool>(getAux()) != dgelu)
    return emitOpError(dgelu ? "with the dgelu_tanh epilogue needs aux, the "
                               "pre-activation"
                             : "has an aux operand, which only the dgelu_tanh "
                               "epilogue reads");
  if (dgelu &&
      failed(expectElements(*this, "aux", getAux(),
                            getBatch() * getM() * getN(), "batch x m x n")))
    return failure();
  if (dgelu && getBias())
    return emitOpError("with the dgelu_tanh epilogue takes no bias");
  if (static_cast<bool>(getBiasGrad()) != bgrad)
    return emitOpError(bgrad ? "with a bgrad epilogue needs a bias_grad result"
                             : "has a bias_grad result, which only the "
                               "bgrad_a and bgrad_b epilogues write");
  if (!bgrad)
    return success();
  if (getBatch() != 1 || getBias())
    return emitOpError("with a bgrad epilogue expects one problem and no bias");
  if (bgradA && !getTransposeA())
    return emitOpError("with bgrad_a expects transpose_a (A stored [k, m])");
  if (bgradB && getTransposeB())
    return emitOpError("with bgrad_b expects B stored [k, n] (no transpose_b)");
  if (getElementTypeOrSelf(getBiasGrad().getType()) !=
      getElementTypeOrSelf(getResult().getType()))
    return emitOpError() << "expects bias_grad in the result's element type "
                         << getElementTypeOrSelf(getResult().getType())
                         << ", got " << getBiasGrad().getType();
  return expectElements(*this, "bias_grad", getBiasGrad(),
                        bgradA ? getM() : getN(), bgradA ? "m" : "n");
}

/// The rules the flash attention kernels share: head counts, tile sizes,
/// the log-sum-exp shape [batch, num_heads, seq] and the rope table.
static LogicalResult verifyAttention(Operation *op, Value query, Value lse,
                                     Value rope, int64_t numHeads,
                                     int64_t numKvHeads, int64_t blockQ,
                                     int64_t blockK, int64_t warps,
                                     int64_t stages) {
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
  return nn::verifyAttentionRope(op, query, rope, numHeads);
}

LogicalResult FlashAttentionFwdOp::verify() {
  return verifyAttention(*this, getQuery(), getLse(), getRope(), getNumHeads(),
                         getNumKvHeads(), getBlockQ(), getBlockK(),
                         getNumWarps(), getNumStages());
}

LogicalResult FlashAttentionBwdOp::verify() {
  return verifyAttention(*this, getQuery(), getLse(), getRope(), getNumHeads(),
                         getNumKvHeads(), getBlockQ(), getBlockK(),
                         getNumWarps(), getNumStages());
}

LogicalResult RoPETableOp::verify() {
  return nn::verifyRopeTable(*this, getPositions(), getResult(), getTheta());
}

LogicalResult CrossEntropyOp::verify() {
  return nn::verifyLossOperands(*this, getLogits(), getTargets());
}

LogicalResult CrossEntropyGradOp::verify() {
  return nn::verifyLossGrad(*this, getLogits(), getTargets(), getResult());
}

LogicalResult LinearCrossEntropyOp::verify() {
  auto inputType = cast<RankedTensorType>(getInput().getType());
  auto weightType = cast<RankedTensorType>(getWeight().getType());
  if (inputType.getRank() < 2)
    return emitOpError() << "expects input ([..., hidden]) to have rank at "
                            "least 2, got "
                         << inputType;
  if (weightType.getRank() != 2)
    return emitOpError() << "expects weight ([vocab, hidden]) to have rank "
                            "2, got "
                         << weightType;
  if (inputType.getElementType() != weightType.getElementType())
    return emitOpError() << "expects input and weight to have one element "
                            "type, got "
                         << inputType << " and " << weightType;
  int64_t hidden = inputType.getShape().back();
  if (failed(
          verifyCompatibleShape(ArrayRef<int64_t>{hidden},
                                ArrayRef<int64_t>{weightType.getDimSize(1)})))
    return emitOpError() << "expects weight dimension 1 to be the input's "
                            "hidden size "
                         << hidden << ", got " << weightType;
  auto targetsType = cast<RankedTensorType>(getTargets().getType());
  if (failed(verifyCompatibleShape(targetsType.getShape(),
                                   inputType.getShape().drop_back())))
    return emitOpError() << "expects targets to have the leading dimensions "
                            "of input, got "
                         << targetsType << " for " << inputType;
  if (getInputGrad().getType() != inputType)
    return emitOpError() << "expects input_grad to have the type of input "
                         << inputType << ", got " << getInputGrad().getType();
  auto weightGradType = cast<RankedTensorType>(getWeightGrad().getType());
  if (weightGradType.getShape() != weightType.getShape() ||
      !weightGradType.getElementType().isF32())
    return emitOpError() << "expects weight_grad to be the FP32 accumulator "
                            "of weight "
                         << weightType << ", got " << weightGradType;
  if (getFp32Logits() && !inputType.getElementType().isBF16())
    return emitOpError() << "expects fp32_logits only with bf16 operands, "
                            "got "
                         << inputType;
  int64_t chunk = getChunkRows();
  if (chunk < 1)
    return emitOpError() << "expects chunk_rows to be positive, got " << chunk;
  int64_t tokens = ShapedType::isDynamic(numElements(getTargets()))
                       ? ShapedType::kDynamic
                       : numElements(getTargets());
  if (!ShapedType::isDynamic(tokens) && chunk > tokens)
    return emitOpError() << "expects chunk_rows to be at most the " << tokens
                         << " tokens, got " << chunk;
  auto scratchType = cast<RankedTensorType>(getLogitsScratch().getType());
  if (failed(verifyCompatibleShape(
          scratchType.getShape(),
          ArrayRef<int64_t>{chunk, weightType.getDimSize(0)})))
    return emitOpError() << "expects logits_scratch to be [chunk_rows, vocab] "
                            "= ["
                         << chunk << ", " << weightType.getDimSize(0)
                         << "], got " << scratchType;
  return success();
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
  return nn::verifyGlobalNorm(*this, getInputs(), getShards());
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

/// What an op that overwrites `replaced` with `result` in place needs: no
/// later use of `replaced` in the block and, once memory is planned, the
/// same offset for both.
static LogicalResult verifyOverwrittenInPlace(Operation *op, Value replaced,
                                              StringRef label, Value result,
                                              StringRef resultLabel) {
  for (Operation *user : replaced.getUsers())
    if (user != op && user->getBlock() == op->getBlock() &&
        op->isBeforeInBlock(user)) {
      InFlightDiagnostic diag = op->emitOpError()
                                << "expects no use of " << label
                                << " after the update, which overwrites it in "
                                   "place";
      diag.attachNote(user->getLoc()) << "used here";
      return diag;
    }
  std::optional<int64_t> resultOffset = plannedOffset(result);
  std::optional<int64_t> operandOffset = plannedOffset(replaced);
  if (resultOffset && operandOffset && *resultOffset != *operandOffset)
    return op->emitOpError()
           << "expects " << resultLabel << " at the offset of " << label
           << " (in place), got " << *resultOffset << " and " << *operandOffset;
  return success();
}

LogicalResult GradAccumulateOp::verify() {
  if (failed(nn::verifyGradAccumulate(*this, getOperands_(), getAccumulated())))
    return failure();
  unsigned n = getNumGrads();
  llvm::DenseMap<Value, unsigned> seen;
  for (unsigned i = 0; i < 2 * n; ++i) {
    auto [it, inserted] = seen.try_emplace(getOperands_()[i], i);
    if (!inserted && (i < n || it->second < n))
      return emitOpError() << "expects accumulator #"
                           << (it->second < n ? it->second : i)
                           << " to be a value of its own: the accumulation "
                              "overwrites it in place";
  }
  for (unsigned i = 0; i < n; ++i)
    if (failed(verifyOverwrittenInPlace(
            *this, getAccumulator(i), ("accumulator #" + Twine(i)).str(),
            getAccumulated()[i], ("result #" + Twine(i)).str())))
      return failure();
  return success();
}

LogicalResult AdamWOp::verify() {
  unsigned n = getNumParams();
  if (getOperands_().size() < 3)
    return emitOpError() << "expects the learning rate, the step and the "
                            "gradient norm after the tensors";
  for (auto [label, scalar] : {std::pair<StringRef, Value>{"lr", getLr()},
                               {"step", getStep()},
                               {"grad_norm", getGradNorm()}})
    if (cast<RankedTensorType>(scalar.getType()).getRank() != 0)
      return emitOpError() << "expects " << label << " to be a scalar "
                           << "(tensor<f32>), got " << scalar.getType();
  unsigned per = getTensorsPerParam();
  if (getTensors().empty() || getTensors().size() % per != 0)
    return emitOpError() << "expects " << per
                         << " tensors per parameter (params, grads, exp_avgs, "
                            "exp_avg_sqs"
                         << (getComputeCopies() ? ", compute copies" : "")
                         << "), got " << getTensors().size();
  if (getUpdated().size() != (per - 1) * n)
    return emitOpError() << "expects " << per - 1 << " results per parameter ("
                         << (per - 1) * n << "), got " << getUpdated().size();
  // Names of one parameter's tensors: "param", or "param #3" of many.
  auto name = [&](StringRef base, unsigned i) {
    return n == 1 ? base.str() : (base + " #" + Twine(i)).str();
  };
  auto isF32 = [](Value v) {
    return getElementTypeOrSelf(v.getType()).isF32();
  };
  for (Value v : llvm::concat<Value>(getOperands_(), getUpdated()))
    if (!isF32(v) && !getComputeCopies())
      return emitOpError() << "expects f32 tensors, got " << v.getType();
  for (unsigned i = 0; getComputeCopies() && i < n; ++i) {
    auto paramType = cast<RankedTensorType>(getParam(i).getType());
    Type copyType = paramType.clone(BFloat16Type::get(getContext()));
    for (auto [label, value] :
         {std::pair<StringRef, Value>{"compute copy", getComputeCopy(i)},
          {"new compute copy", getNewComputeCopy(i)}})
      if (value.getType() != copyType)
        return emitOpError() << "expects " << name(label, i) << " to be the "
                             << "parameter's BF16 copy (" << copyType
                             << "), got " << value.getType();
  }
  for (unsigned i = 0; i < n; ++i) {
    if (!isF32(getParam(i)))
      return emitOpError() << "expects " << name("param", i)
                           << " to be f32 (the master), got "
                           << getParam(i).getType();
    std::string names[] = {name("grad", i),        name("exp_avg", i),
                           name("exp_avg_sq", i),  name("new_param", i),
                           name("new_exp_avg", i), name("new_exp_avg_sq", i)};
    if (failed(nn::detail::verifyAdamW(
            *this, getParam(i),
            {{names[0], getGrad(i)}, {names[3], getNewParam(i)}},
            {{names[1], getExpAvg(i)},
             {names[2], getExpAvgSq(i)},
             {names[4], getNewExpAvg(i)},
             {names[5], getNewExpAvgSq(i)}},
            getShards(), getBeta1(), getBeta2(), getEpsilon(), getWeightDecay(),
            getMaxGradNorm())))
      return failure();
  }
  // The update runs in place, so what it overwrites must be its own: 4N
  // different operands, nothing reading the old values afterwards.
  SmallVector<std::pair<std::string, Value>> operands;
  for (auto [base, kind] : {std::pair<StringRef, unsigned>{"param", 0},
                            {"grad", 1},
                            {"exp_avg", 2},
                            {"exp_avg_sq", 3},
                            {"compute copy", 4}})
    for (unsigned i = 0; kind < per && i < n; ++i)
      operands.push_back({name(base, i), getTensors()[kind * n + i]});
  llvm::DenseMap<Value, StringRef> seen;
  for (auto &[label, value] : operands) {
    auto [it, inserted] = seen.try_emplace(value, label);
    if (!inserted)
      return emitOpError()
             << "expects " << it->second << " and " << label
             << " to be different values: the update overwrites params, "
                "exp_avgs and exp_avg_sqs in place";
  }
  static constexpr StringRef kResults[] = {
      "new_param", "new_exp_avg", "new_exp_avg_sq", "new compute copy"};
  for (unsigned index = 0; index < getUpdated().size(); ++index)
    if (failed(verifyOverwrittenInPlace(
            *this, getReplaced(index),
            operands[index < n ? index : index + n].first, getUpdated()[index],
            name(kResults[index / n], index % n))))
      return failure();
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

namespace {
/// Elements between consecutive indices of dimension `dim` (the first or
/// the last) of a value whose rows are `pitch` elements apart.
int64_t indexStep(RankedTensorType type, int64_t dim, int64_t pitch) {
  int64_t rank = type.getRank();
  if (dim == rank - 1)
    return 1;
  int64_t rows = 1;
  for (int64_t d = dim + 1; d < rank - 1; ++d)
    rows *= type.getDimSize(d);
  return rows * pitch;
}

int64_t lastDimOf(Value v) {
  auto type = cast<RankedTensorType>(v.getType());
  return type.getRank() == 0 ? 1 : type.getShape().back();
}

/// The rules tile.view and tile.concat share: `dim` is the first or the
/// last dimension of `type`.
LogicalResult checkViewDim(Operation *op, RankedTensorType type, int64_t dim) {
  if (type.getRank() == 0 || (dim != 0 && dim != type.getRank() - 1))
    return op->emitOpError()
           << "expects dim to be the first or the last dimension of " << type
           << ", got " << dim;
  return success();
}
} // namespace

ConcatOp kiln::tile::concatUser(Value value) {
  for (Operation *user : value.getUsers())
    if (auto concat = dyn_cast<ConcatOp>(user))
      return concat;
  return nullptr;
}

/// The operand a collective's result `value` overwrites in place (the
/// collectives of dist-reduce-gradients), or null.
static Value inPlaceOperand(Value value) {
  Operation *op = value.getDefiningOp();
  unsigned index = isa_and_nonnull<OpResult>(value)
                       ? cast<OpResult>(value).getResultNumber()
                       : 0;
  if (auto into = dyn_cast_or_null<kiln::dist::AllGatherIntoOp>(op))
    return into.getDests()[index];
  if (!isa_and_nonnull<kiln::dist::AllReduceOp, kiln::dist::ReduceScatterOp,
                       kiln::dist::AllGatherOp>(op))
    return Value();
  return op->getOperand(index);
}

int64_t kiln::tile::rowPitch(Value value) {
  // A single row has no pitch to speak of.
  if (rowCount(value) <= 1)
    return lastDimOf(value);
  if (auto view = value.getDefiningOp<ViewOp>())
    return rowPitch(view.getSource());
  if (ConcatOp concat = concatUser(value))
    return rowPitch(concat.getResult());
  if (Value operand = inPlaceOperand(value))
    return rowPitch(operand);
  return lastDimOf(value);
}

bool kiln::tile::isRowStrided(Value value) {
  return rowPitch(value) != lastDimOf(value);
}

Placement kiln::tile::placement(Value value) {
  // A collective works in place: each result where its operand is.
  if (Value operand = inPlaceOperand(value))
    return placement(operand);
  if (auto view = value.getDefiningOp<ViewOp>()) {
    Placement source = placement(view.getSource());
    auto type = cast<RankedTensorType>(view.getSource().getType());
    source.elementOffset +=
        view.getStart() *
        indexStep(type, view.getDim(), rowPitch(view.getSource()));
    return source;
  }
  if (ConcatOp concat = concatUser(value)) {
    Placement whole = placement(concat.getResult());
    auto type = cast<RankedTensorType>(concat.getType());
    int64_t step =
        indexStep(type, concat.getDim(), rowPitch(concat.getResult()));
    for (Value input : concat.getInputs()) {
      if (input == value)
        break;
      whole.elementOffset +=
          cast<RankedTensorType>(input.getType()).getDimSize(concat.getDim()) *
          step;
    }
    return whole;
  }
  return {value, 0};
}

bool kiln::tile::readsRowStrided(OpOperand &use) {
  Operation *op = use.getOwner();
  unsigned index = use.getOperandNumber();
  if (isa<FlashAttentionFwdOp>(op))
    return index < 3; // query, key, value
  if (isa<FlashAttentionBwdOp>(op))
    return index >= 1 && index <= 3; // query, key, value
  if (isa<ViewOp>(op))
    return true; // a view of a view: the pitches compose
  auto fused = dyn_cast<FusedOp>(op);
  if (!fused || !rowWiseRows(fused) ||
      !isa<FloatType>(getElementTypeOrSelf(use.get().getType())))
    return false;
  // Every op of the region that reads it reads it row by row.
  BlockArgument arg = fused.getBody().front().getArgument(index);
  return llvm::all_of(arg.getUses(), [](OpOperand &inner) {
    return !isa<YieldOp>(inner.getOwner()) &&
           isRowOperand(inner.getOwner(), inner.getOperandNumber());
  });
}

bool kiln::tile::writesRowStrided(OpResult result) {
  Operation *op = result.getOwner();
  if (isa<FlashAttentionBwdOp>(op))
    return result.getResultNumber() < 3; // the query, key and value grads
  auto fused = dyn_cast<FusedOp>(op);
  return fused && rowWiseRows(fused) &&
         isa<FloatType>(getElementTypeOrSelf(result.getType()));
}

LogicalResult ViewOp::verify() {
  auto source = cast<RankedTensorType>(getSource().getType());
  auto result = cast<RankedTensorType>(getType());
  int64_t dim = getDim();
  if (failed(checkViewDim(*this, source, dim)))
    return failure();
  if (source.getElementType() != result.getElementType() ||
      source.getRank() != result.getRank())
    return emitOpError() << "expects a result of the source's element type "
                            "and rank, got "
                         << result << " from " << source;
  for (int64_t d = 0; d < source.getRank(); ++d)
    if (d != dim && source.getDimSize(d) != result.getDimSize(d))
      return emitOpError() << "expects the result to keep dimension " << d
                           << " of the source (" << source.getDimSize(d)
                           << "), got " << result.getDimSize(d);
  if (getStart() < 0 ||
      getStart() + result.getDimSize(dim) > source.getDimSize(dim))
    return emitOpError() << "expects [start, start + " << result.getDimSize(dim)
                         << ") within the " << source.getDimSize(dim)
                         << " of dimension " << dim << ", got start "
                         << getStart();
  return success();
}

LogicalResult ConcatOp::verify() {
  auto result = cast<RankedTensorType>(getType());
  int64_t dim = getDim();
  if (failed(checkViewDim(*this, result, dim)))
    return failure();
  if (getInputs().empty())
    return emitOpError("expects at least one input");
  int64_t total = 0;
  bool arguments = isa<BlockArgument>(getInputs().front());
  for (auto [index, input] : llvm::enumerate(getInputs())) {
    auto type = cast<RankedTensorType>(input.getType());
    if (type.getElementType() != result.getElementType() ||
        type.getRank() != result.getRank())
      return emitOpError() << "expects input #" << index << " of the "
                           << "result's element type and rank, got " << type;
    for (int64_t d = 0; d < result.getRank(); ++d)
      if (d != dim && type.getDimSize(d) != result.getDimSize(d))
        return emitOpError()
               << "expects input #" << index << " to have dimension " << d
               << " of the result (" << result.getDimSize(d) << "), got "
               << type.getDimSize(d);
    total += type.getDimSize(dim);
    // Placed inside the result's buffer: nothing else may place it.
    if (input.getDefiningOp<ViewOp>())
      return emitOpError() << "input #" << index
                           << " is a tile.view, which lives in its source's "
                              "buffer";
    if (isa<BlockArgument>(input) != arguments)
      return emitOpError() << "expects its inputs to be all block arguments "
                              "or all op results; input #"
                           << index << " is not";
    if (arguments && dim != 0)
      return emitOpError() << "places block arguments side by side only "
                              "along the first dimension, got dim "
                           << dim;
    for (Operation *user : input.getUsers())
      if (user != getOperation() && isa<ConcatOp>(user))
        return emitOpError() << "input #" << index
                             << " is also an input of another tile.concat";
    if (llvm::count(getInputs(), input) > 1)
      return emitOpError() << "input #" << index << " appears twice";
  }
  if (total != result.getDimSize(dim))
    return emitOpError() << "expects the inputs' dimension " << dim
                         << " to add up to the result's "
                         << result.getDimSize(dim) << ", got " << total;
  return success();
}

#define GET_OP_CLASSES
#include "dialects/tile/TileOps.cpp.inc"
