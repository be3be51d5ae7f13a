//===- PassAttrs.h - Attributes the passes exchange -------------*- C++ -*-===//
//
// The discardable attributes that one stage of the pipeline writes and a
// later one reads: the front end marks parameters and inputs, nn-autodiff
// marks optimizer state, outputs and pipeline chunks, tile-plan-memory
// writes arena offsets, and kiln-translate --tile-to-plan reads them all.
// Each name is spelled here once; every reader and writer uses these.
//
// They keep the `kiln.` prefix rather than a dialect's (`nn.`): they are
// part of the plan's contract with the runtime, not of one dialect's ops,
// and lit tests and plans written by hand spell them so.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_DIALECTS_NN_PASSATTRS_H
#define KILN_DIALECTS_NN_PASSATTRS_H

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Operation.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/StringRef.h"

namespace kiln::attrs {

/// The name of a discardable attribute and the type of its value, with
/// typed access on ops, function arguments and function results. Converts
/// to its name, so it can stand wherever a name is expected.
template <typename AttrT> struct PassAttr {
  llvm::StringLiteral name;

  constexpr operator llvm::StringRef() const { return name; }

  /// The value on `op`; null when absent or of another type.
  AttrT get(mlir::Operation *op) const {
    return op->getAttrOfType<AttrT>(name);
  }
  void set(mlir::Operation *op, AttrT value) const { op->setAttr(name, value); }
  /// The value on argument `index` of `func`.
  AttrT getArg(mlir::FunctionOpInterface func, unsigned index) const {
    return func.getArgAttrOfType<AttrT>(index, name);
  }
  /// The value on result `index` of `func`.
  AttrT getResult(mlir::FunctionOpInterface func, unsigned index) const {
    return func.getResultAttrOfType<AttrT>(index, name);
  }
  /// `name = value`, for argument and result dictionaries.
  mlir::NamedAttribute named(AttrT value) const {
    return mlir::NamedAttribute(mlir::StringAttr::get(value.getContext(), name),
                                value);
  }
};

/// What every Kiln attribute name starts with (the translator copies op
/// attributes into the plan except these).
inline constexpr llvm::StringLiteral kPrefix = "kiln.";

// Function arguments and results (front end, nn-autodiff).
/// A parameter's Hugging Face name, e.g. "model.layers.0.mlp.up_proj.weight".
inline constexpr PassAttr<mlir::StringAttr> kParam{"kiln.param"};
/// A parameter's initialisation, e.g. "normal:0.02", "ones", "zeros".
inline constexpr PassAttr<mlir::StringAttr> kInit{"kiln.init"};
/// A step input: "tokens", "positions", "targets", "lr", "step".
inline constexpr PassAttr<mlir::StringAttr> kInput{"kiln.input"};
/// A step output: "loss".
inline constexpr PassAttr<mlir::StringAttr> kOutput{"kiln.output"};
/// AdamW's first moment of the named parameter.
inline constexpr PassAttr<mlir::StringAttr> kExpAvg{"kiln.exp_avg"};
/// AdamW's second moment of the named parameter.
inline constexpr PassAttr<mlir::StringAttr> kExpAvgSq{"kiln.exp_avg_sq"};
/// The BF16 compute copy of the named parameter that the optimizer writes
/// (nn-fuse's optimizer group), an argument and a result of the step.
inline constexpr PassAttr<mlir::StringAttr> kComputeCopy{"kiln.compute_copy"};
/// The FP32 accumulator of the named parameter's gradient over the
/// micro-batches of a step (nn-accumulate-gradients), an argument and a
/// result of the step.
inline constexpr PassAttr<mlir::StringAttr> kGradAccumulator{
    "kiln.grad_accumulator"};

// Ops (nn-autodiff, carried by the lowerings).
/// The pipeline chunk of an op of the step: "F", "B", "W" or "O".
inline constexpr PassAttr<mlir::StringAttr> kChunk{"kiln.chunk"};

// Memory plan (tile-plan-memory).
/// A function argument's offset in the arena's persistent region.
inline constexpr PassAttr<mlir::IntegerAttr> kOffset{"kiln.offset"};
/// The arena offset of each result of an op.
inline constexpr PassAttr<mlir::DenseI64ArrayAttr> kOffsets{"kiln.offsets"};
/// The planned function's arena size: persistent region plus peak.
inline constexpr PassAttr<mlir::IntegerAttr> kArenaBytes{"kiln.arena_bytes"};
/// The planned function's persistent region (arguments).
inline constexpr PassAttr<mlir::IntegerAttr> kPersistentBytes{
    "kiln.persistent_bytes"};
/// The planned function's largest single buffer.
inline constexpr PassAttr<mlir::IntegerAttr> kLargestBufferBytes{
    "kiln.largest_buffer_bytes"};

// Module (front end).
/// What the runtime needs to know about the model beyond the step.
inline constexpr PassAttr<mlir::DictionaryAttr> kModel{"kiln.model"};

/// Sets entry `name` of `module`'s kiln.model (the passes that shape the
/// step record what they chose there: micro_batches, data_parallel).
inline void setModelEntry(mlir::Operation *module, llvm::StringRef name,
                          mlir::Attribute value) {
  mlir::NamedAttrList model;
  if (mlir::DictionaryAttr dict = kModel.get(module))
    model.assign(dict.getValue());
  model.set(name, value);
  kModel.set(module, model.getDictionary(module->getContext()));
}

} // namespace kiln::attrs

#endif // KILN_DIALECTS_NN_PASSATTRS_H
