//===- Report.h - Pass remarks grouped across layers ------------*- C++ -*-===//
//
// The planning passes report what they chose as remarks at the Hugging Face
// module that an op computes. A model repeats its layers, so identical
// choices of many layers are one remark ("forward, layers 0-31: ...").
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES_REPORT_H
#define KILN_PASSES_REPORT_H

#include "mlir/IR/Location.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <optional>
#include <string>

namespace kiln {

/// One choice of a pass, for its report.
struct Decision {
  mlir::Location loc;
  unsigned position; ///< of the op in the module, in program order
  std::string text;  ///< "<direction>: <what and why>", without the location
};

/// The decoder layer a location names ("model.layers.3.self_attn",
/// "transformer.h.3.attn": 3), if it names one; the front end gives every op
/// its Hugging Face module's name.
std::optional<int64_t> layerOf(mlir::Location loc);

/// "0-3, 5, 7-31" for sorted, distinct layer indices.
std::string layerRanges(llvm::ArrayRef<int64_t> layers);

/// Emits one remark per distinct decision text, "<pass>: <direction>,
/// layers 0-3: <rest>", at the location of the first: a decision that
/// appears twice at one location (an op that both the forward function and
/// the training step hold) once; decisions at locations that name no layer
/// are counted ("layers 0-3 and 1 more") and noted ("the same for this
/// <noun>").
void emitGroupedRemarks(llvm::StringRef pass, llvm::StringRef noun,
                        llvm::MutableArrayRef<Decision> decisions);

} // namespace kiln

#endif // KILN_PASSES_REPORT_H
