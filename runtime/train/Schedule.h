//===- Schedule.h - The learning-rate schedule ------------------*- C++ -*-===//
//
// The rate climbs linearly to its peak over the warmup steps, then decays
// to peak * minRatio at the last step: by half a cosine (the default, the
// schedule of GPT-3, Llama and llm.c), linearly, not at all (constant), or
// warmup-stable-decay (WSD, as MiniCPM and DeepSeek use it): the peak until
// the last `decayFraction` of the steps, then linearly down.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_SCHEDULE_H
#define KILN_RUNTIME_TRAIN_SCHEDULE_H

#include <cstdint>
#include <optional>
#include <string_view>

namespace kiln::rt {

/// The shape of the decay after the warmup (--lr-schedule).
enum class LrDecay { Cosine, Linear, Constant, Wsd };
std::optional<LrDecay> parseLrDecay(std::string_view name);
std::string_view lrDecayName(LrDecay decay);

/// Linear warmup to `peak`, then `decay` to `peak * minRatio`.
struct LrSchedule {
  double peak;              ///< the highest rate, reached at warmupSteps
  std::int64_t warmupSteps; ///< 0 starts the decay at once
  std::int64_t totalSteps;  ///< the step at which the decay ends
  double minRatio = 0.1;    ///< the final rate as a fraction of peak
  LrDecay decay = LrDecay::Cosine;
  /// WSD: the share of all steps, at the end, over which the rate decays.
  double decayFraction = 0.2;

  /// Throws Error naming the field and its value unless peak > 0 (and
  /// finite), 0 <= warmupSteps <= totalSteps, totalSteps >= 1,
  /// 0 <= minRatio <= 1 and 0 < decayFraction <= 1.
  void validate() const;

  /// The rate for the 1-based `step`: peak * step / warmupSteps up to
  /// warmupSteps; then, with t going from 0 at warmupSteps to 1 at
  /// totalSteps, peak * (minRatio + (1 - minRatio) * f) where f is
  /// (1 + cos(pi * t)) / 2 (cosine), 1 - t (linear), 1 (constant: minRatio
  /// unused); WSD keeps the peak up to step totalSteps - round(decayFraction
  /// * totalSteps) (at least warmupSteps) and decays linearly from there.
  /// Steps before 1 count as 1, steps after totalSteps as totalSteps.
  /// Validates first.
  double at(std::int64_t step) const;
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_SCHEDULE_H
