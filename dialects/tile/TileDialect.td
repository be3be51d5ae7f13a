//===- TileDialect.td - The tile dialect --------------------*- tablegen -*-===//

#ifndef KILN_TILE_DIALECT
#define KILN_TILE_DIALECT

include "mlir/IR/OpBase.td"

def Tile_Dialect : Dialect {
  let name = "tile";
  let cppNamespace = "::kiln::tile";
  let summary = "Kernel-granularity training step";
  let description = [{
    One `tile` op is one kernel launch: a GEMM with its epilogue, an attention
    kernel, a loss kernel, an optimizer update, or a `tile.fused` region of
    elementwise and row-wise `nn` ops that runs as one kernel. Each op carries
    what both backends need to run it: operand shapes and element types (from
    its types), GEMM geometry and layouts, attention head counts. After
    `tile-plan-memory`, every value also has an offset in the step's arena
    (`kiln.offsets`), and `kiln-translate --tile-to-plan` writes the plan the
    runtime executes.
  }];
  let dependentDialects = ["::kiln::nn::NNDialect"];
}

class Tile_Op<string mnemonic, list<Trait> traits = []> :
    Op<Tile_Dialect, mnemonic, traits>;

#endif // KILN_TILE_DIALECT
