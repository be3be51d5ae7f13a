//===- Schedule.cpp - The learning-rate schedule --------------------------===//

#include "runtime/train/Schedule.h"

#include "runtime/Error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

namespace kiln::rt {

namespace {
constexpr std::string_view kDecayNames[] = {"cosine", "linear", "constant",
                                            "wsd"};
} // namespace

std::optional<LrDecay> parseLrDecay(std::string_view name) {
  for (std::size_t i = 0; i < std::size(kDecayNames); ++i)
    if (name == kDecayNames[i])
      return static_cast<LrDecay>(i);
  return std::nullopt;
}

std::string_view lrDecayName(LrDecay decay) {
  return kDecayNames[static_cast<std::size_t>(decay)];
}

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
  if (!(decayFraction > 0 && decayFraction <= 1))
    fail(
        fmt::format("decay fraction must be in (0, 1], got {}", decayFraction));
}

double LrSchedule::at(std::int64_t step) const {
  validate();
  step = std::clamp<std::int64_t>(step, 1, totalSteps);
  if (step <= warmupSteps)
    return peak * static_cast<double>(step) / static_cast<double>(warmupSteps);
  std::int64_t decayStart = warmupSteps;
  if (decay == LrDecay::Wsd)
    decayStart = std::max<std::int64_t>(
        warmupSteps,
        totalSteps -
            std::llround(decayFraction * static_cast<double>(totalSteps)));
  if (decay == LrDecay::Constant || step <= decayStart)
    return peak;
  double t = static_cast<double>(step - decayStart) /
             static_cast<double>(totalSteps - decayStart);
  double left = decay == LrDecay::Cosine
                    ? 0.5 * (1 + std::cos(std::numbers::pi * t))
                    : 1 - t;
  return peak * (minRatio + (1 - minRatio) * left);
}

} // namespace kiln::rt
