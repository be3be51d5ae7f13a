//===- Passes.td - Kiln passes ------------------------------*- tablegen -*-===//
//
// Every Kiln pass is declared here; kiln-opt registers them all through the
// generated registration. Names are kebab-case with the dialect as prefix.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES
#define KILN_PASSES

include "mlir/Pass/PassBase.td"

#endif // KILN_PASSES
