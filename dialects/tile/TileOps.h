//===- TileOps.h - tile dialect operations ----------------------*- C++ -*-===//

#ifndef KILN_DIALECTS_TILE_TILEOPS_H
#define KILN_DIALECTS_TILE_TILEOPS_H

#include "dialects/tile/TileDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <optional>
#include <string>

namespace kiln::tile {
/// True for the nn ops a tile.fused region may hold: those that work element
/// by element or row by row.
bool isFusible(mlir::Operation *op);

/// True for the fusible ops that compute row `r` of their results from row
/// `r` of their row operands and the whole of the others (norm weights and
/// biases, an embedding table): elementwise ops, norms and their input
/// gradients, RoPE, embedding gathers. A region of them runs as one pass
/// over rows. Weight gradients and column sums reduce across rows; split
/// and concat are copies that packed views remove.
bool isRowLocal(mlir::Operation *op);

/// Whether operand `index` of a row-local op is read row by row.
bool isRowOperand(mlir::Operation *op, unsigned index);

/// The rows of a row-read value: its elements over its last dimension for
/// floating-point tensors (`[batch, seq, width]` has batch x seq), all its
/// elements for ids (one token id or position per row).
int64_t rowCount(mlir::Value value);

/// The rows a row-local op reads and writes (its row-read operands and its
/// results), if they agree.
std::optional<int64_t> opRowCount(mlir::Operation *op);

class FusedOp;
/// The row count shared by every row-read value of `fused` when all its ops
/// are row-local and the operands they read whole are inputs of the region,
/// else nullopt, and then `whyNot` (if given) says why: the first op that is
/// not row-local, an operand read whole that the region computes, or a row
/// count that differs. A region with a row count runs as one pass over its
/// rows.
std::optional<int64_t> rowWiseRows(FusedOp fused,
                                   std::string *whyNot = nullptr);

class ConcatOp;
/// The tile.concat `value` is placed into, or null.
ConcatOp concatUser(mlir::Value value);

/// Elements between the starts of consecutive rows (runs of the last
/// dimension) of `value` in memory: its last dimension, unless it is a
/// tile.view of (or is placed into a tile.concat of) a wider tensor.
int64_t rowPitch(mlir::Value value);

/// Whether `value`'s rows are not back to back in memory.
bool isRowStrided(mlir::Value value);

/// Where a value lives: the buffer of `root` (a value that is neither a
/// tile.view, nor placed into a tile.concat, nor the in-place result of a
/// dist.all_reduce), `elementOffset` elements in.
struct Placement {
  mlir::Value root;
  int64_t elementOffset = 0;
};
Placement placement(mlir::Value value);

/// Whether the kernel of `use`'s owner reads that operand correctly when
/// its rows are strided: the attention kernels' query, key and value, and
/// the row operands of a row-wise tile.fused region (rowWiseRows), which
/// the backends run one row at a time. The plan validator and the backends
/// accept exactly these.
bool readsRowStrided(mlir::OpOperand &use);

/// Whether the kernel of `result`'s owner can write it row-strided: the
/// attention backward's query, key and value gradients, and the results
/// of a row-wise tile.fused region.
bool writesRowStrided(mlir::OpResult result);
} // namespace kiln::tile

#define GET_OP_CLASSES
#include "dialects/tile/TileOps.h.inc"

#endif // KILN_DIALECTS_TILE_TILEOPS_H
