//===- TileDialect.h - The tile dialect -------------------------*- C++ -*-===//

#ifndef KILN_DIALECTS_TILE_TILEDIALECT_H
#define KILN_DIALECTS_TILE_TILEDIALECT_H

#include "mlir/IR/Dialect.h"

#include "dialects/tile/TileDialect.h.inc"

#endif // KILN_DIALECTS_TILE_TILEDIALECT_H
