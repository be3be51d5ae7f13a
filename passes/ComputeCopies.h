//===- ComputeCopies.h - BF16 compute copies as step arguments --*- C++ -*-===//
//
// A BF16 step may keep each weight's BF16 copy across steps instead of
// casting its FP32 master every step: the copy is an argument of the step
// (`kiln.compute_copy`) that replaces the cast, and the step returns the
// next step's copy. nn-fuse's optimizer group (the update writes the copy)
// and dist-reduce-gradients' ZeRO-1 (the ranks gather it) both do this.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES_COMPUTECOPIES_H
#define KILN_PASSES_COMPUTECOPIES_H

#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

namespace kiln {

/// Replaces `rounding` (the BF16 cast of parameter `name`) by a new argument
/// of `func`, its compute copy, placed at `loc`; returns the argument.
inline mlir::Value replaceCastByComputeCopy(mlir::func::FuncOp func,
                                            nn::CastOp rounding,
                                            mlir::StringAttr name,
                                            mlir::Location loc) {
  mlir::Builder b(func.getContext());
  unsigned index = func.getNumArguments();
  (void)func.insertArgument(
      index, rounding.getType(),
      b.getDictionaryAttr({attrs::kComputeCopy.named(name)}), loc);
  mlir::Value copy = func.getArgument(index);
  rounding.getResult().replaceAllUsesWith(copy);
  rounding.erase();
  return copy;
}

/// Returns `copy`, parameter `name`'s next compute copy, from `func`.
inline void returnComputeCopy(mlir::func::FuncOp func, mlir::Value copy,
                              mlir::StringAttr name) {
  mlir::Builder b(func.getContext());
  (void)func.insertResult(
      func.getNumResults(), copy.getType(),
      b.getDictionaryAttr({attrs::kComputeCopy.named(name)}));
  mlir::Operation *ret = func.getBody().front().getTerminator();
  ret->insertOperands(ret->getNumOperands(), copy);
}

} // namespace kiln

#endif // KILN_PASSES_COMPUTECOPIES_H
