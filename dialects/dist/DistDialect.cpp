//===- DistDialect.cpp - The dist dialect ---------------------------------===//

#include "dialects/dist/DistDialect.h"
#include "dialects/dist/DistOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kiln::dist;

#include "dialects/dist/DistDialect.cpp.inc"
#include "dialects/dist/DistEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/dist/DistAttrs.cpp.inc"

void DistDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/dist/DistAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "dialects/dist/DistOps.cpp.inc"
      >();
}

LogicalResult GroupAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                StringRef name, int64_t size) {
  if (name.empty())
    return emitError() << "a group needs a name";
  if (size < 1)
    return emitError() << "group \"" << name << "\" must hold at least one "
                       << "rank, got " << size;
  return success();
}

LogicalResult ActionAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 Chunk kind, int64_t stage,
                                 int64_t microBatch) {
  if (stage < 0)
    return emitError() << "action " << stringifyChunk(kind)
                       << ": stage must be at least 0, got " << stage;
  if (microBatch < 0)
    return emitError() << "action " << stringifyChunk(kind)
                       << ": micro-batch must be at least 0, got "
                       << microBatch;
  if (kind == Chunk::O && microBatch != 0)
    return emitError() << "action O runs once per step: its micro-batch "
                          "must be 0, got "
                       << microBatch;
  return success();
}
