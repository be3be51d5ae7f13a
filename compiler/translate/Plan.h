//===- Plan.h - tile IR to the runtime's plan -------------------*- C++ -*-===//
//
// The plan is the one contract between compiler and runtime: a JSON
// manifest of the training step's values (arena offsets, dtypes, shapes),
// its inputs, parameters (Hugging Face names, init, optimizer state,
// gradient) and outputs, and the ordered kernel steps with everything a
// kernel needs. runtime/plan/Schema.h defines the format (the runtime owns
// it), docs/plan.md describes it.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_COMPILER_TRANSLATE_PLAN_H
#define KILN_COMPILER_TRANSLATE_PLAN_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

namespace kiln {

/// The plan's name of an element type (runtime/plan/Schema.h: f32, bf16,
/// i32, i64, f8e4m3, f8e5m2); the printed type for any other.
std::string planDtypeName(mlir::Type type);

/// Writes the plan of `function` (lowered to tile and memory-planned).
mlir::LogicalResult writePlan(mlir::ModuleOp module, llvm::raw_ostream &os,
                              llvm::StringRef function = "train_step");

/// Writes the CUDA source of every kernel of `function` (lowered to tile),
/// each after a `// ----- kernel <name>` line.
mlir::LogicalResult writeCudaSources(mlir::ModuleOp module,
                                     llvm::raw_ostream &os,
                                     llvm::StringRef function = "train_step");

/// Registers `--tile-to-plan` and `--tile-to-cuda` with mlir-translate's
/// registry.
void registerTileToPlanTranslation();

} // namespace kiln

#endif // KILN_COMPILER_TRANSLATE_PLAN_H
