//===- NNGradients.cpp - Derivatives of the nn ops ------------------------===//
//
// DifferentiableOpInterface implementations: each op builds the gradients of
// its operands from the gradients of its results. Gradients that only feed
// parameters (weight and bias gradients) are separate ops from those that
// flow on to earlier layers, so that nn-autodiff can split the backward pass
// into input-gradient (B) and weight-gradient (W) work.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"

#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace kiln::nn;

namespace {
/// Appends `grad` when the operand wants one, else a null value.
void push(SmallVectorImpl<Value> &grads, ArrayRef<bool> needsGrad, Value grad) {
  grads.push_back(needsGrad[grads.size()] ? grad : Value());
}

/// Appends a null gradient for an operand that cannot have one (ids,
/// positions, sequence offsets), failing if one was asked for.
LogicalResult pushNone(Operation *op, SmallVectorImpl<Value> &grads,
                       ArrayRef<bool> needsGrad, StringRef what) {
  if (needsGrad[grads.size()])
    return op->emitOpError() << "cannot differentiate with respect to " << what;
  grads.push_back(Value());
  return success();
}
} // namespace

LogicalResult EmbeddingOp::buildGradients(OpBuilder &b,
                                          ArrayRef<Value> resultGrads,
                                          ArrayRef<bool> needsGrad,
                                          SmallVectorImpl<Value> &grads) {
  Value table;
  if (needsGrad[0])
    table = EmbeddingGradOp::create(b, getLoc(), getTable().getType(),
                                    resultGrads[0], getIds());
  grads.push_back(table);
  return pushNone(*this, grads, needsGrad, "the token ids");
}

LogicalResult LinearOp::buildGradients(OpBuilder &b,
                                       ArrayRef<Value> resultGrads,
                                       ArrayRef<bool> needsGrad,
                                       SmallVectorImpl<Value> &grads) {
  Location loc = getLoc();
  Value dy = resultGrads[0];
  bool transposed = getTransposeWeight();
  // y = x W^T  =>  dx = dy W, a linear layer whose weight is read [in, out].
  push(grads, needsGrad,
       needsGrad[0] ? LinearOp::create(b, loc, getInput().getType(), dy,
                                       getWeight(), Value(), !transposed)
                          .getResult()
                    : Value());
  push(grads, needsGrad,
       needsGrad[1] ? LinearWeightGradOp::create(b, loc, getWeight().getType(),
                                                 dy, getInput(), transposed)
                          .getResult()
                    : Value());
  if (getBias())
    push(grads, needsGrad,
         needsGrad[2]
             ? ColumnSumOp::create(b, loc, getBias().getType(), dy).getResult()
             : Value());
  return success();
}

LogicalResult MatmulOp::buildGradients(OpBuilder &b,
                                       ArrayRef<Value> resultGrads,
                                       ArrayRef<bool> needsGrad,
                                       SmallVectorImpl<Value> &grads) {
  Location loc = getLoc();
  Value dc = resultGrads[0];
  bool ta = getTransposeLhs(), tb = getTransposeRhs();
  // C = op(A) op(B): d op(A) = dC op(B)^T and d op(B) = op(A)^T dC, each
  // transposed back when the operand was read transposed.
  Value da, db;
  if (needsGrad[0])
    da = ta ? MatmulOp::create(b, loc, getLhs().getType(), getRhs(), dc,
                               /*transpose_lhs=*/tb, /*transpose_rhs=*/true)
            : MatmulOp::create(b, loc, getLhs().getType(), dc, getRhs(),
                               /*transpose_lhs=*/false, /*transpose_rhs=*/!tb);
  if (needsGrad[1])
    db = tb ? MatmulOp::create(b, loc, getRhs().getType(), dc, getLhs(),
                               /*transpose_lhs=*/true, /*transpose_rhs=*/ta)
            : MatmulOp::create(b, loc, getRhs().getType(), getLhs(), dc,
                               /*transpose_lhs=*/!ta, /*transpose_rhs=*/false);
  grads.append({da, db});
  return success();
}

/// The gradients of a norm: the input gradient (B work) and the weight
/// gradient (W work) are separate ops; a bias gradient is a column sum.
template <typename InputGrad, typename WeightGrad, typename Norm>
static LogicalResult buildNormGradients(Norm op, OpBuilder &b, Value bias,
                                        ArrayRef<Value> resultGrads,
                                        ArrayRef<bool> needsGrad,
                                        SmallVectorImpl<Value> &grads) {
  Location loc = op.getLoc();
  Value dy = resultGrads[0];
  Value dx, dw;
  if (needsGrad[0])
    dx = InputGrad::create(b, loc, op.getInput().getType(), dy, op.getInput(),
                           op.getWeight(), op.getEpsilonAttr());
  if (needsGrad[1])
    dw = WeightGrad::create(b, loc, op.getWeight().getType(), dy, op.getInput(),
                            op.getEpsilonAttr());
  grads.append({dx, dw});
  if (bias)
    push(grads, needsGrad,
         needsGrad[2]
             ? ColumnSumOp::create(b, loc, bias.getType(), dy).getResult()
             : Value());
  return success();
}

LogicalResult RMSNormOp::buildGradients(OpBuilder &b,
                                        ArrayRef<Value> resultGrads,
                                        ArrayRef<bool> needsGrad,
                                        SmallVectorImpl<Value> &grads) {
  return buildNormGradients<RMSNormGradOp, RMSNormWeightGradOp>(
      *this, b, /*bias=*/Value(), resultGrads, needsGrad, grads);
}

LogicalResult LayerNormOp::buildGradients(OpBuilder &b,
                                          ArrayRef<Value> resultGrads,
                                          ArrayRef<bool> needsGrad,
                                          SmallVectorImpl<Value> &grads) {
  return buildNormGradients<LayerNormGradOp, LayerNormWeightGradOp>(
      *this, b, getBias(), resultGrads, needsGrad, grads);
}

LogicalResult RoPEOp::buildGradients(OpBuilder &b, ArrayRef<Value> resultGrads,
                                     ArrayRef<bool> needsGrad,
                                     SmallVectorImpl<Value> &grads) {
  // A rotation's transpose is the rotation by the negated angle.
  Value dx;
  if (needsGrad[0])
    dx = RoPEOp::create(b, getLoc(), getInput().getType(), resultGrads[0],
                        getPositions(), getNumHeadsAttr(), getThetaAttr(),
                        getInverse() ? UnitAttr() : b.getUnitAttr());
  grads.push_back(dx);
  if (getPositions())
    return pushNone(*this, grads, needsGrad, "the positions");
  return success();
}

LogicalResult AttentionOp::buildGradients(OpBuilder &b,
                                          ArrayRef<Value> resultGrads,
                                          ArrayRef<bool> needsGrad,
                                          SmallVectorImpl<Value> &grads) {
  auto grad = AttentionGradOp::create(
      b, getLoc(), getQuery().getType(), getKey().getType(),
      getValue().getType(), resultGrads[0], getQuery(), getKey(), getValue(),
      getCuSeqlens(), getRope(), getNumHeadsAttr(), getNumKvHeadsAttr(),
      getCausalAttr(), getScaleAttr());
  push(grads, needsGrad, grad.getQueryGrad());
  push(grads, needsGrad, grad.getKeyGrad());
  push(grads, needsGrad, grad.getValueGrad());
  if (getCuSeqlens() && failed(pushNone(*this, grads, needsGrad, "cu_seqlens")))
    return failure();
  if (getRope())
    return pushNone(*this, grads, needsGrad, "rope");
  return success();
}

LogicalResult SwiGLUOp::buildGradients(OpBuilder &b,
                                       ArrayRef<Value> resultGrads,
                                       ArrayRef<bool> needsGrad,
                                       SmallVectorImpl<Value> &grads) {
  auto grad =
      SwiGLUGradOp::create(b, getLoc(), getGate().getType(), getUp().getType(),
                           resultGrads[0], getGate(), getUp());
  push(grads, needsGrad, grad.getGateGrad());
  push(grads, needsGrad, grad.getUpGrad());
  return success();
}

LogicalResult GeluOp::buildGradients(OpBuilder &b, ArrayRef<Value> resultGrads,
                                     ArrayRef<bool> needsGrad,
                                     SmallVectorImpl<Value> &grads) {
  grads.push_back(GeluGradOp::create(b, getLoc(), getInput().getType(),
                                     resultGrads[0], getInput(),
                                     getApproximateAttr()));
  return success();
}

LogicalResult AddOp::buildGradients(OpBuilder &, ArrayRef<Value> resultGrads,
                                    ArrayRef<bool> needsGrad,
                                    SmallVectorImpl<Value> &grads) {
  push(grads, needsGrad, resultGrads[0]);
  push(grads, needsGrad, resultGrads[0]);
  return success();
}

LogicalResult MulOp::buildGradients(OpBuilder &b, ArrayRef<Value> resultGrads,
                                    ArrayRef<bool> needsGrad,
                                    SmallVectorImpl<Value> &grads) {
  Location loc = getLoc();
  Value dy = resultGrads[0];
  Value dlhs, drhs;
  if (needsGrad[0])
    dlhs = MulOp::create(b, loc, getLhs().getType(), dy, getRhs());
  if (needsGrad[1])
    drhs = MulOp::create(b, loc, getRhs().getType(), dy, getLhs());
  grads.append({dlhs, drhs});
  return success();
}

LogicalResult CrossEntropyOp::buildGradients(OpBuilder &b,
                                             ArrayRef<Value> resultGrads,
                                             ArrayRef<bool> needsGrad,
                                             SmallVectorImpl<Value> &grads) {
  grads.push_back(CrossEntropyGradOp::create(
      b, getLoc(), getLogits().getType(), resultGrads[0], getLogits(),
      getTargets(), getIgnoreIndexAttr()));
  return pushNone(*this, grads, needsGrad, "the targets");
}

LogicalResult CastOp::buildGradients(OpBuilder &b, ArrayRef<Value> resultGrads,
                                     ArrayRef<bool> needsGrad,
                                     SmallVectorImpl<Value> &grads) {
  grads.push_back(
      CastOp::create(b, getLoc(), getInput().getType(), resultGrads[0]));
  return success();
}

LogicalResult SplitOp::buildGradients(OpBuilder &b, ArrayRef<Value> resultGrads,
                                      ArrayRef<bool> needsGrad,
                                      SmallVectorImpl<Value> &grads) {
  grads.push_back(ConcatOp::create(b, getLoc(), getInput().getType(),
                                   resultGrads, getDimAttr()));
  return success();
}

LogicalResult ConcatOp::buildGradients(OpBuilder &b,
                                       ArrayRef<Value> resultGrads,
                                       ArrayRef<bool> needsGrad,
                                       SmallVectorImpl<Value> &grads) {
  auto split = SplitOp::create(b, getLoc(), getInputs().getTypes(),
                               resultGrads[0], getDimAttr());
  for (Value part : split.getResults())
    push(grads, needsGrad, part);
  return success();
}
