//===- DistOps.h - dist dialect operations ----------------------*- C++ -*-===//

#ifndef KILN_DIALECTS_DIST_DISTOPS_H
#define KILN_DIALECTS_DIST_DISTOPS_H

#include "dialects/dist/DistDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"

#define GET_OP_CLASSES
#include "dialects/dist/DistOps.h.inc"

#endif // KILN_DIALECTS_DIST_DISTOPS_H
