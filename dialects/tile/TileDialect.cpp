//===- TileDialect.cpp - The tile dialect ---------------------------------===//

#include "dialects/tile/TileDialect.h"
#include "dialects/nn/NNDialect.h"
#include "dialects/tile/TileOps.h"

using namespace mlir;
using namespace kiln::tile;

#include "dialects/tile/TileDialect.cpp.inc"

void TileDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/tile/TileOps.cpp.inc"
      >();
}
