//===- Schedule.h - The learning-rate schedule ------------------*- C++ -*-===//
//
// Training uses linear warmup then cosine decay, the schedule of GPT-3,
// Llama and llm.c: the rate climbs linearly to its peak over the warmup
// steps, then follows half a cosine down to peak * minRatio at the last step.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_SCHEDULE_H
#define KILN_RUNTIME_TRAIN_SCHEDULE_H

#include <cstdint>

namespace kiln::rt {

/// Linear warmup to `peak`, then cosine decay to `peak * minRatio`.
struct LrSchedule {
  double peak;              ///< the highest rate, reached at warmupSteps
  std::int64_t warmupSteps; ///< 0 starts the decay at once
  std::int64_t totalSteps;  ///< the step at which the decay ends
  double minRatio = 0.1;    ///< the final rate as a fraction of peak

  /// Throws Error naming the field and its value unless peak > 0 (and
  /// finite), 0 <= warmupSteps <= totalSteps, totalSteps >= 1 and
  /// 0 <= minRatio <= 1.
  void validate() const;

  /// The rate for the 1-based `step`: peak * step / warmupSteps up to
  /// warmupSteps, then peak * (minRatio + (1 - minRatio) * (1 + cos(pi * t))
  /// / 2) with t going from 0 at warmupSteps to 1 at totalSteps. Steps before
  /// 1 count as 1, steps after totalSteps as totalSteps. Validates first.
  double at(std::int64_t step) const;
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_SCHEDULE_H
