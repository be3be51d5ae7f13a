//===- NNDialect.td - The nn dialect ------------------------*- tablegen -*-===//
//
// The tensor-level training graph: the forward pass of a transformer as the
// front end builds it, and later the gradient and optimizer ops.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_NN_DIALECT
#define KILN_NN_DIALECT

include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/OpBase.td"

def NN_Dialect : Dialect {
  let name = "nn";
  let cppNamespace = "::kiln::nn";
  let summary = "Tensor-level transformer training graph";
  let description = [{
    The `nn` dialect describes a transformer's computation at the granularity
    of the operations a model author thinks in: embeddings, linear layers,
    normalisation, rotary embeddings, attention, activations and the loss.
    Values are builtin ranked tensors of `bf16` or `f32` (activations and
    weights), `f8E4M3FN` or `f8E5M2` (quantized GEMM operands) and `i32`/`i64`
    (token ids).

    Activations keep the hidden dimension flat: a query projection is
    `tensor<BxSx(H*D)xbf16>`, and ops that work per head (`nn.rope`,
    `nn.attention`) carry the head counts as attributes. This is the layout
    the `linear` layers produce, so no reshapes appear between them.
  }];
  let useDefaultAttributePrinterParser = 1;
}

//===----------------------------------------------------------------------===//
// Enums and attributes
//===----------------------------------------------------------------------===//

def NN_GeluApproximation : I32EnumAttr<"GeluApproximation",
    "how GELU evaluates the Gaussian CDF", [
      I32EnumAttrCase<"none", 0>,
      I32EnumAttrCase<"tanh", 1>
    ]> {
  let cppNamespace = "::kiln::nn";
  let genSpecializedAttr = 0;
}

def NN_GeluApproximationAttr : EnumAttr<NN_Dialect, NN_GeluApproximation,
                                        "gelu_approximation">;

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

def NN_Float : AnyTypeOf<[BF16, F32]>;
def NN_FP8 : AnyTypeOf<[F8E4M3FN, F8E5M2]>;
def NN_FloatTensor : RankedTensorOf<[BF16, F32]>;
def NN_FP8Tensor : RankedTensorOf<[F8E4M3FN, F8E5M2]>;
def NN_F32Tensor : RankedTensorOf<[F32]>;
def NN_IndexTensor : RankedTensorOf<[I32, I64]>;
def NN_I32Vector : 1DTensorOf<[I32]>;
def NN_Scalar : 0DTensorOf<[F32]>;

//===----------------------------------------------------------------------===//
// Base op class
//===----------------------------------------------------------------------===//

class NN_Op<string mnemonic, list<Trait> traits = []> :
    Op<NN_Dialect, mnemonic, traits>;

#endif // KILN_NN_DIALECT
