//===- HostBackend.h - Runs a plan on the CPU -------------------*- C++ -*-===//
//
// The reference backend: one arena for the whole step, every kernel step run
// by the host kernels in FP32 with the plan's storage types emulated exactly
// (BF16 values are rounded to nearest-even when stored, as the GPU's stores
// round them).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_HOST_HOSTBACKEND_H
#define KILN_RUNTIME_HOST_HOSTBACKEND_H

#include "runtime/Backend.h"
#include "runtime/dist/Communicator.h"

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kiln::rt {

namespace host {
class FusedRegion;
}

class HostBackend final : public Backend {
public:
  /// Allocates the arena (zeroed) and decodes every fused region against
  /// it; the plan's steps were validated by Plan::parse. `comm` (kept, may
  /// be null for one process) runs the plan's collectives; it must span the
  /// ranks the plan was compiled for.
  explicit HostBackend(const Plan &plan, Communicator *comm = nullptr);
  ~HostBackend();

  const Plan &plan() const override { return planRef; }
  std::string describe() const override;

  /// The bytes of a value in the arena.
  std::span<std::byte> bytes(int64_t value);

  /// A value converted to FP32, and FP32 data stored into a value (rounded
  /// to its element type).
  std::vector<float> read(int64_t value) override;
  void write(int64_t value, std::span<const float> data) override;
  void writeInt32(int64_t value, std::span<const int32_t> data) override;

  /// Seconds spent per kernel kind (fused regions by their ops) over all
  /// runs so far, for profiles.
  const std::map<std::string, double> &kernelSeconds() const override;

protected:
  /// Runs the step, adding its time to kernelSeconds.
  void runStep(std::size_t index, const Step &step) override;

private:
  /// Runs a step that is not fused; adds to `gemmSeconds` the time of
  /// GEMMs inside another kernel (linear_cross_entropy's).
  void execute(const Step &step, double &gemmSeconds);

  const Plan &planRef;
  Communicator *comm;
  std::unique_ptr<std::byte[], void (*)(std::byte *)> arena;
  /// Per step: its fused body decoded at load (null for other kernels), its
  /// profile key and its time.
  std::vector<std::unique_ptr<host::FusedRegion>> fusedRegions;
  /// The scratch of the fused regions: temporaries, widened inputs, FP8
  /// round trips.
  std::vector<float> fusedScratch;
  std::vector<std::byte> fusedNarrow;
  std::vector<std::string> stepKeys;
  std::vector<double> stepSeconds;
  /// Per step: the time of GEMMs inside a kernel that is not a gemm step
  /// (linear_cross_entropy's), counted as GEMM time by the profile.
  std::vector<double> stepGemmSeconds;
  mutable std::map<std::string, double> seconds;
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_HOST_HOSTBACKEND_H
