//===- Gemms.h - The tile.gemm of a linear layer ----------------*- C++ -*-===//
//
// The GEMM geometry of nn.linear and nn.linear_weight_grad, shared by
// nn-lower-to-tile (plain GEMMs) and nn-fuse (GEMMs with an epilogue).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES_GEMMS_H
#define KILN_PASSES_GEMMS_H

#include "dialects/nn/NNOps.h"

#include "mlir/IR/BuiltinTypes.h"

namespace kiln {

/// The operands and shape of one tile.gemm.
struct GemmGeometry {
  mlir::Value a, b;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool transposeA = false, transposeB = false;
};

namespace detail {
inline int64_t lastDim(mlir::Value v) {
  return mlir::cast<mlir::RankedTensorType>(v.getType()).getShape().back();
}
inline int64_t numElements(mlir::Value v) {
  return mlir::cast<mlir::RankedTensorType>(v.getType()).getNumElements();
}
} // namespace detail

/// `x W^T (+ b)` (or `x W` with transpose_weight): one GEMM with the
/// activations viewed as a [tokens, in] matrix. Static shapes.
inline GemmGeometry linearGeometry(nn::LinearOp op) {
  int64_t k = detail::lastDim(op.getInput());
  return {op.getInput(),
          op.getWeight(),
          /*batch=*/1,
          detail::numElements(op.getInput()) / k,
          detail::lastDim(op.getResult()),
          k,
          /*transposeA=*/false,
          /*transposeB=*/!op.getTransposeWeight()};
}

/// dW = dy^T x summed over tokens ([out, in]), or x^T dy for a weight stored
/// [in, out]: the tokens are the GEMM's contraction dimension, and A is
/// stored [k, m]. Static shapes.
inline GemmGeometry weightGradGeometry(nn::LinearWeightGradOp op) {
  mlir::Value dy = op.getGrad(), x = op.getInput();
  mlir::Value a = op.getTransposeWeight() ? x : dy;
  mlir::Value b = op.getTransposeWeight() ? dy : x;
  return {a,
          b,
          /*batch=*/1,
          detail::lastDim(a),
          detail::lastDim(b),
          detail::numElements(x) / detail::lastDim(x),
          /*transposeA=*/true,
          /*transposeB=*/false};
}

} // namespace kiln

#endif // KILN_PASSES_GEMMS_H
