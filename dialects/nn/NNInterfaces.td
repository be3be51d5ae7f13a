//===- NNInterfaces.td - nn op interfaces -------------------*- tablegen -*-===//

#ifndef KILN_NN_INTERFACES
#define KILN_NN_INTERFACES

include "mlir/IR/OpBase.td"

def NN_DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::kiln::nn";
  let description = [{
    An op that knows its own derivative. `nn-autodiff` walks a function
    backwards and asks each op for the gradients of its operands given the
    gradients of its results; the pass itself knows nothing about any op.
  }];
  let methods = [
    InterfaceMethod<[{
      Builds, at the builder's insertion point, the gradient of every operand
      `i` with `needsGrad[i]` set, given one gradient per result
      (`resultGrads[j]` has the type of result `j`; a result nobody uses gets
      a zero gradient). Appends one value per operand to `operandGrads`: the
      gradient (same type as the operand) or a null value where
      `needsGrad[i]` is false. Fails, with a diagnostic, when it cannot
      differentiate with respect to a requested operand.
    }], "::llvm::LogicalResult", "buildGradients",
      (ins "::mlir::OpBuilder &":$builder,
           "::mlir::ArrayRef<::mlir::Value>":$resultGrads,
           "::llvm::ArrayRef<bool>":$needsGrad,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads)>,
  ];
}

#endif // KILN_NN_INTERFACES
