//===- DistDialect.h - The dist dialect -------------------------*- C++ -*-===//

#ifndef KILN_DIALECTS_DIST_DISTDIALECT_H
#define KILN_DIALECTS_DIST_DISTDIALECT_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/Dialect.h"

#include "dialects/dist/DistDialect.h.inc"
#include "dialects/dist/DistEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/dist/DistAttrs.h.inc"

#endif // KILN_DIALECTS_DIST_DISTDIALECT_H
