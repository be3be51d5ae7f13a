//===- NNOps.h - nn dialect operations --------------------------*- C++ -*-===//

#ifndef KILN_DIALECTS_NN_NNOPS_H
#define KILN_DIALECTS_NN_NNOPS_H

#include "dialects/nn/NNDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/nn/NNEnums.h.inc"
#include "dialects/nn/NNInterfaces.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/nn/NNAttrs.h.inc"

#define GET_OP_CLASSES
#include "dialects/nn/NNOps.h.inc"

#endif // KILN_DIALECTS_NN_NNOPS_H
