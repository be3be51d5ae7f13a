//===- BuildModel.h - Model configs to nn IR --------------------*- C++ -*-===//
//
// The front end: builds the forward pass of a supported model, from token ids
// to the mean cross-entropy loss, as a function in the nn dialect.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_COMPILER_FRONTEND_BUILDMODEL_H
#define KILN_COMPILER_FRONTEND_BUILDMODEL_H

#include "compiler/frontend/ModelConfig.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace kiln {

/// The precision the forward pass computes in. Parameters are always FP32
/// master weights; with BF16 they are cast at their use and activations are
/// BF16 (reductions accumulate in FP32 inside each op).
enum class Precision { BF16, FP32 };

/// How the data fills the batch rows (--packing): contiguous windows across
/// documents, whole documents packed into rows, or one padded document per
/// row.
enum class Packing { Stream, Documents, Pad };

struct BatchShape {
  int64_t batch = 1;
  int64_t seqLen = 1024;
  Precision precision = Precision::BF16;
  /// Packing::Documents: the step takes `cu_seqlens` (int32, batch * seqLen
  /// + 1 cumulative offsets over the flattened batch, the unused tail
  /// repeating the last) and attention stays within each document. The
  /// plan's model records the packing and the end-of-document token (`eot`
  /// when given, the config's `eos_token_id`) for the runtime's packer.
  Packing packing = Packing::Stream;
  std::optional<int64_t> endOfText;
};

/// The most bytes of activations a training step may compute (10^15, a
/// petabyte: thousands of times what one GPU holds). A step beyond it is
/// refused before any IR exists; within it and kMaxParameters, every
/// tensor's size and the arena's fit in 64 bits.
constexpr int64_t kMaxStepActivationBytes = 1'000'000'000'000'000;

/// Builds `func.func @forward(tokens, positions, targets, params...) -> loss`.
/// Inputs are `tensor<batch x seq x i32>` marked `kiln.input`; parameters are
/// FP32 tensors marked `kiln.param` with their Hugging Face name and
/// `kiln.init` with their initialisation (`normal:<std>`, `ones`, `zeros`).
/// Fails when the shape contradicts the config (e.g. a sliding window shorter
/// than the sequence, or the step's activations exceed
/// kMaxStepActivationBytes).
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
buildForward(mlir::MLIRContext &context, const ModelConfig &config,
             const BatchShape &shape);

/// One parameter of a built forward function.
struct ParameterInfo {
  std::string name;
  std::vector<int64_t> shape;
  std::string init;
  /// The product of the shape, saturating at INT64_MAX (which buildForward's
  /// size limits keep its parameters far from).
  int64_t numElements() const;
};

/// The parameters of a function built by buildForward, in argument order.
std::vector<ParameterInfo> listParameters(mlir::ModuleOp module);

} // namespace kiln

#endif // KILN_COMPILER_FRONTEND_BUILDMODEL_H
