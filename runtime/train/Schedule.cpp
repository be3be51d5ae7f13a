//===- Schedule.cpp - The learning-rate schedule --------------------------===//

#include "runtime/train/Schedule.h"

#include "runtime/Error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

namespace kiln::rt {

void LrSchedule::validate() const {
  auto fail = [](const std::string &problem) {
    throw Error("learning-rate schedule: " + problem);
  };
  if (!(peak > 0) || !std::isfinite(peak))
    fail(fmt::format("peak rate must be positive and finite, got {}", peak));
  if (totalSteps < 1)
    fail(fmt::format("total steps must be at least 1, got {}", totalSteps));
  if (warmupSteps < 0)
    fail(fmt::format("warmup steps must not be negative, got {}", warmupSteps));
  if (warmupSteps > totalSteps)
    fail(fmt::format("warmup steps ({}) must not exceed total steps ({})",
                     warmupSteps, totalSteps));
  if (!(minRatio >= 0 && minRatio <= 1))
    fail(fmt::format("minimum ratio must be in [0, 1], got {}", minRatio));
}

double LrSchedule::at(std::int64_t step) const {
  validate();
  step = std::clamp<std::int64_t>(step, 1, totalSteps);
  if (step <= warmupSteps)
    return peak * static_cast<double>(step) / static_cast<double>(warmupSteps);
  double progress = static_cast<double>(step - warmupSteps) /
                    static_cast<double>(totalSteps - warmupSteps);
  double cosine = 0.5 * (1 + std::cos(std::numbers::pi * progress));
  return peak * (minRatio + (1 - minRatio) * cosine);
}

} // namespace kiln::rt
