//===- FusedRegion.h - A fused step decoded for the host --------*- C++ -*-===//
//
// A fused step's body turned, once at plan load, into a list of typed ops
// whose operands are resolved to memory. A region whose ops are all
// row-local (norms and their input gradients, RoPE, elementwise ops,
// embedding gathers, over the same rows) runs as one parallel pass over its
// rows: each thread runs every op on a row before the next, its temporaries
// a row each in scratch, FP32 values read and written in place in the
// arena. Any other region runs op by op over whole tensors (FP32 inputs
// read in place, other inputs widened into scratch, temporaries in scratch
// sized at load). Either way running it allocates nothing, compares no
// strings and copies nothing it can read in place, and it computes exactly
// what the nn ops would unfused: the same per-row functions
// (RowKernels.h), each result rounded to its temporary's dtype.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_HOST_FUSEDREGION_H
#define KILN_RUNTIME_HOST_FUSEDREGION_H

#include "runtime/host/RowKernels.h"
#include "runtime/plan/Plan.h"

#include <cstddef>
#include <vector>

namespace kiln::rt::host {

class FusedRegion {
public:
  /// Decodes `step` (a FusedStep validated by Plan::parse) against `arena`.
  /// An FP32 temporary that is yielded into an FP32 output is computed in
  /// place in the output (Plan::parse checked that outputs overlap no input
  /// of their step); the other temporaries and the widened inputs need
  /// scratchFloats() floats of scratch, which attach() provides.
  FusedRegion(const Plan &plan, const Step &step, std::byte *arena);

  std::size_t scratchFloats() const { return floats; }
  std::size_t narrowBytes() const { return narrowed; }
  /// Points the scratch locals into `scratch` (scratchFloats() floats) and
  /// FP8 rounding into `narrow` (narrowBytes()). Steps run one at a time,
  /// so every region of a plan shares one scratch buffer.
  void attach(float *scratch, std::byte *narrow);

  /// Runs the body and stores the yields into the outputs.
  void run();

  /// Whether the region runs as one pass over rows.
  bool rowWise() const { return rowMode; }

private:
  /// A local value: FP32 data (in the arena or scratch) or i32 ids.
  struct Local {
    float *data = nullptr;
    const std::int32_t *ids = nullptr;
    const TensorInfo *info = nullptr;
    std::int64_t elements = 0;
    std::int64_t dim = 1; ///< last dimension
    std::int64_t rows = 0;
    /// Elements between its rows in memory: dim, unless it is a row-strided
    /// input or output in the arena (a view into a packed tensor).
    std::int64_t pitch = 1;
  };
  /// A non-FP32 input widened into scratch before the body runs.
  struct Widen {
    ElemType dtype;
    const std::byte *source;
    std::size_t local;
    std::int64_t elements;
  };
  /// A yield stored (narrowed) into an output.
  struct Store {
    ElemType dtype;
    std::size_t local;
    std::byte *target;
    std::int64_t elements;
    std::int64_t pitch; ///< of the output, in elements
  };

  /// Decides whether the region runs row by row and lays out its rows.
  void planRows(const std::vector<const std::byte *> &inputBytes);
  void runOp(const BodyOp &op);
  void runRows();
  /// Runs `op` on row `r`: `row[i]` is row r of local i (or all of it for a
  /// local read whole), `ids[i]` its ids.
  void runRowOp(const BodyOp &op, std::size_t opIndex, std::int64_t r,
                float *const *row, const std::int32_t *const *ids, int thread);
  /// Rounds a result to what its dtype holds.
  void round(const Local &local);

  /// Where row r of a local is, in row mode.
  enum class RowPlace {
    Arena,  ///< FP32 in the arena: data + r x dim
    Buffer, ///< the thread's row buffer at `offset`
    Whole,  ///< read whole (a norm weight; FP32 or widened once)
    Table,  ///< an embedding table read in its dtype, row by row
    Ids,    ///< ids + r
  };
  struct RowLocal {
    RowPlace place = RowPlace::Whole;
    std::size_t offset = 0;
    ElemType dtype = ElemType::F32;
    /// An input's bytes: a table's, or those a Buffer row is widened from.
    const std::byte *raw = nullptr;
  };

  const std::vector<BodyOp> &body;
  bool rowMode = false;
  std::int64_t rows = 0, rowWork = 0;
  std::vector<RowLocal> rowLocals;
  std::size_t rowFloats = 0;  ///< per thread
  std::size_t rowScratch = 0; ///< offset of the threads' rows in scratch
  int threads = 1;
  /// Per thread, one RoPE rotation per op (its cosines and sines).
  std::vector<std::vector<row::Rope<float>>> ropes;
  std::vector<std::size_t> ropeIndex; ///< per op: its rotation, if a rope
  /// Per thread, the current row of every local.
  std::vector<std::vector<float *>> rowPointers;
  std::vector<std::vector<const std::int32_t *>> rowIds;
  float *scratchBase = nullptr;
  std::vector<Local> locals;
  std::vector<Widen> widens;
  std::vector<Store> stores;
  /// Locals in scratch and their offsets (floats), set by attach.
  std::vector<std::pair<std::size_t, std::size_t>> placed;
  std::size_t floats = 0, narrowed = 0;
  /// Narrowed bytes for the FP8 round trip of a result.
  std::byte *narrow = nullptr;
};

} // namespace kiln::rt::host

#endif // KILN_RUNTIME_HOST_FUSEDREGION_H
