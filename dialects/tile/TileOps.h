//===- TileOps.h - tile dialect operations ----------------------*- C++ -*-===//

#ifndef KILN_DIALECTS_TILE_TILEOPS_H
#define KILN_DIALECTS_TILE_TILEOPS_H

#include "dialects/tile/TileDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace kiln::tile {
/// True for the nn ops a tile.fused region may hold: those that work element
/// by element or row by row.
bool isFusible(mlir::Operation *op);
} // namespace kiln::tile

#define GET_OP_CLASSES
#include "dialects/tile/TileOps.h.inc"

#endif // KILN_DIALECTS_TILE_TILEOPS_H
