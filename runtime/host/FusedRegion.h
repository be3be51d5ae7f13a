//===- FusedRegion.h - A fused step decoded for the host --------*- C++ -*-===//
//
// A fused step's body turned, once at plan load, into a list of typed ops
// whose operands are resolved to memory: FP32 inputs are read in place in
// the arena, other inputs are widened into scratch, temporaries live in
// scratch sized at load. Running it allocates nothing, compares no strings
// and copies nothing it can read in place; it computes exactly what the
// nn ops would unfused (same per-element operation order, each result
// rounded to its temporary's dtype).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_HOST_FUSEDREGION_H
#define KILN_RUNTIME_HOST_FUSEDREGION_H

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

private:
  /// A local value: FP32 data (in the arena or scratch) or i32 ids.
  struct Local {
    float *data = nullptr;
    const std::int32_t *ids = nullptr;
    const TensorInfo *info = nullptr;
    std::int64_t elements = 0;
    std::int64_t dim = 1; ///< last dimension
    std::int64_t rows = 0;
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
  };

  void runOp(const BodyOp &op);
  /// Rounds a result to what its dtype holds.
  void round(const Local &local);

  const std::vector<BodyOp> &body;
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
