//===- Backend.h - What runs a plan -----------------------------*- C++ -*-===//
//
// The runtime runs one plan on one of two backends behind this interface:
// `host` (the reference, CPU) and `cuda` (NVRTC-compiled kernels and
// cuBLASLt on an NVIDIA GPU). The trainer sees only this.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_BACKEND_H
#define KILN_RUNTIME_BACKEND_H

#include "runtime/plan/Plan.h"

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kiln::rt {

class Backend {
public:
  virtual ~Backend() = default;

  virtual const Plan &plan() const = 0;
  /// A description for logs: "host (2 threads)", "cuda (NVIDIA H100, sm_90a)".
  virtual std::string describe() const = 0;

  /// A value converted to FP32; FP32 data stored into a value (rounded to
  /// its element type); token ids stored into an i32 value.
  virtual std::vector<float> read(int64_t value) = 0;
  virtual void write(int64_t value, std::span<const float> data) = 0;
  virtual void writeInt32(int64_t value, std::span<const int32_t> data) = 0;

  /// Which steps a run takes: all of them (one micro-batch per step), or,
  /// for gradient accumulation, those of one micro-batch (chunks F, B, W;
  /// the last micro-batch's also the steps marked to run only then, as the
  /// data-parallel reduction of the sums) and the optimizer's (O, which
  /// Plan::load checked come last); or, for evaluation, the forward alone:
  /// the F steps and the step that computes the `loss` output, which then
  /// computes the loss only (no gradient).
  enum class Steps { All, MicroStep, LastMicroStep, Optimizer, Evaluate };

  /// Runs the `which` steps in order; `beforeChunk` is called before each
  /// run of steps of one chunk kind ('F', 'B', 'W', 'O'), e.g. to read
  /// gradients before the optimizer consumes them. A step's error names
  /// the step.
  void run(const std::function<void(char chunk)> &beforeChunk,
           Steps which = Steps::All);

  /// Seconds per kernel kind over all runs, for profiles.
  virtual const std::map<std::string, double> &kernelSeconds() const = 0;

protected:
  /// Whether the steps being run are an evaluation's (Steps::Evaluate):
  /// the loss step then skips its gradient.
  bool evaluating() const { return evaluating_; }
  /// Runs (or, on a GPU, queues) step `index` of the plan.
  virtual void runStep(std::size_t index, const Step &step) = 0;
  /// After the last step of a run: waits for queued work, reports what it
  /// found wrong.
  virtual void finishRun() {}

private:
  bool evaluating_ = false;
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_BACKEND_H
