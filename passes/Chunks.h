//===- Chunks.h - The pipeline chunk tags of ops ----------------*- C++ -*-===//
//
// nn-autodiff tags every op of the training step with the chunk a pipeline
// schedule places it in (F forward, B input gradients, W weight gradients,
// O optimizer); the lowering passes carry the tag to what replaces the op.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES_CHUNKS_H
#define KILN_PASSES_CHUNKS_H

#include "dialects/nn/PassAttrs.h"

#include "mlir/IR/Operation.h"
#include "llvm/ADT/StringRef.h"

namespace kiln {

constexpr llvm::StringLiteral kChunkAttr = attrs::kChunk.name;

/// Gives `to` the chunk tag of `from`, if it has one.
inline void copyChunk(mlir::Operation *from, mlir::Operation *to) {
  if (mlir::Attribute chunk = from->getAttr(kChunkAttr))
    to->setAttr(kChunkAttr, chunk);
}

} // namespace kiln

#endif // KILN_PASSES_CHUNKS_H
