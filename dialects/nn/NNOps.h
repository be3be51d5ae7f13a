//===- NNOps.h - nn dialect operations --------------------------*- C++ -*-===//

#ifndef KILN_DIALECTS_NN_NNOPS_H
#define KILN_DIALECTS_NN_NNOPS_H

#include "dialects/nn/NNDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/nn/NNEnums.h.inc"
#include "dialects/nn/NNInterfaces.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/nn/NNAttrs.h.inc"

#define GET_OP_CLASSES
#include "dialects/nn/NNOps.h.inc"

namespace kiln::nn {

// The rules an nn op shares with the tile kernel that lowers it, so that
// both reject the same IR with the same diagnostics.

/// `logits` is `[..., vocab]` and `targets` its leading dimensions.
mlir::LogicalResult verifyLossOperands(mlir::Operation *op, mlir::Value logits,
                                       mlir::Value targets);

/// The loss operands, and a gradient of the type of the logits.
mlir::LogicalResult verifyLossGrad(mlir::Operation *op, mlir::Value logits,
                                   mlir::Value targets, mlir::Value result);

/// A rotary table ([batch, seq, head_dim] with an even head_dim) and its
/// optional positions ([batch, seq]).
mlir::LogicalResult verifyRopeTable(mlir::Operation *op, mlir::Value positions,
                                    mlir::Value table,
                                    const llvm::APFloat &theta);

/// The table an attention op rotates its query and key by: [batch, seq,
/// head_dim] of `query` ([batch, seq, num_heads * head_dim]). `rope` may be
/// null.
mlir::LogicalResult verifyAttentionRope(mlir::Operation *op, mlir::Value query,
                                        mlir::Value rope, int64_t numHeads);

/// At least one tensor to take the norm of.
mlir::LogicalResult verifyGlobalNorm(mlir::Operation *op,
                                     mlir::ValueRange inputs,
                                     std::optional<uint64_t> shards);

/// A gradient accumulation (nn.grad_accumulate, tile.grad_accumulate):
/// N accumulators, N gradients of their types and a scalar micro-step
/// index among `operands`, N `results` of the accumulators' types.
mlir::LogicalResult verifyGradAccumulate(mlir::Operation *op,
                                         mlir::ValueRange operands,
                                         mlir::ValueRange results);

/// The moments of one rank's ZeRO-1 shard of a parameter of type `param`
/// split `shards` ways: `tensor<ceil(n / shards) x f32>` (the parameter's
/// own type when `shards` is 1).
mlir::RankedTensorType shardType(mlir::RankedTensorType param, int64_t shards);

namespace detail {
using NamedValues = llvm::ArrayRef<std::pair<llvm::StringRef, mlir::Value>>;
mlir::LogicalResult
verifyAdamW(mlir::Operation *op, mlir::Value param, NamedValues sameType,
            NamedValues moments, std::optional<uint64_t> shards,
            const llvm::APFloat &beta1, const llvm::APFloat &beta2,
            const llvm::APFloat &epsilon, const llvm::APFloat &weightDecay,
            const llvm::APFloat &maxGradNorm);
} // namespace detail

/// An AdamW update (nn.adamw_update, tile.adamw): the gradient (the first
/// of `sameType`) and new parameter of the parameter's type, the moments
/// too; or (ZeRO-1, `shards` S > 1) the moments of the gradient's shard
/// (shardType), and the parameter and its update whole or that shard (a
/// sharded master); betas in [0, 1), a positive epsilon and non-negative
/// weight decay and clipping threshold.
template <typename AdamWOp> mlir::LogicalResult verifyAdamW(AdamWOp op) {
  return detail::verifyAdamW(
      op, op.getParam(),
      {{"grad", op.getGrad()}, {"new_param", op.getNewParam()}},
      {{"exp_avg", op.getExpAvg()},
       {"exp_avg_sq", op.getExpAvgSq()},
       {"new_exp_avg", op.getNewExpAvg()},
       {"new_exp_avg_sq", op.getNewExpAvgSq()}},
      op.getShards(), op.getBeta1(), op.getBeta2(), op.getEpsilon(),
      op.getWeightDecay(), op.getMaxGradNorm());
}

} // namespace kiln::nn

#endif // KILN_DIALECTS_NN_NNOPS_H
