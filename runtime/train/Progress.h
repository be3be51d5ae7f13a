//===- Progress.h - The progress bar of a run -------------------*- C++ -*-===//
//
// A progress line redrawn in place on a terminal, and the human-readable
// durations and rates it and the run's log lines use.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_PROGRESS_H
#define KILN_RUNTIME_TRAIN_PROGRESS_H

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace kiln::rt {

/// A duration for humans, rounded to the second: "12s", "1m23s", "1h02m";
/// "--" for a negative or non-finite one (an ETA not known yet).
std::string formatDuration(double seconds);

/// A rate with an SI suffix and three or four significant digits: "950",
/// "45.2k", "1.3M"; "--" for a negative or non-finite one.
std::string formatRate(double perSecond);

/// The progress line, at most `columns - 1` characters (the last column is
/// left free so that the terminal does not wrap):
///
///   step  120/1000 [##.................] loss 3.214 | 45.2k tok/s | ETA 1m23s
///
/// with `details` ("lr 3e-04 | norm 1.2"), when given, after the loss.
/// The step is padded to the width of totalSteps and the bar fills the room
/// the rest leaves, so the bar stays put as the numbers change; a terminal
/// too narrow for a bar gets the line without one.
std::string progressLine(std::int64_t step, std::int64_t totalSteps,
                         double loss, double tokensPerSecond, double etaSeconds,
                         int columns = 80, std::string_view details = {});

/// A progress line redrawn in place with '\r' on a terminal. The ETA is the
/// average time per step since the bar was made times the steps left.
class ProgressBar {
public:
  /// A bar for steps firstStep..totalSteps (firstStep > 1 on resume) that
  /// draws on `out` if `enabled` (the caller passes isatty(stderr)) and
  /// prints nothing otherwise.
  ProgressBar(std::int64_t totalSteps, std::int64_t firstStep, bool enabled,
              std::FILE *out = stderr);
  /// Finishes the line, so that an error printed next starts on its own.
  ~ProgressBar();
  ProgressBar(const ProgressBar &) = delete;
  ProgressBar &operator=(const ProgressBar &) = delete;

  /// Records that `step` is done. Redraws at most ten times a second, and
  /// always for the last step. `details` as progressLine takes them.
  void update(std::int64_t step, double loss, double tokensPerSecond,
              std::string details = {});

  /// Prints `text` and a newline on the bar's stream (enabled or not); an
  /// enabled bar is cleared first and redrawn below it.
  void printAbove(std::string_view text);

  /// Draws the last update and ends the line. Later calls do nothing.
  void finish();

private:
  using Clock = std::chrono::steady_clock;

  /// Overwrites the terminal's line with the last update's.
  void redraw();

  std::int64_t totalSteps_;
  std::int64_t firstStep_;
  bool enabled_;
  std::FILE *out_;
  Clock::time_point start_;
  Clock::time_point lastDraw_;
  bool updated_ = false;   ///< update() has been called
  bool drawnLast_ = false; ///< the last update is on the screen
  bool finished_ = false;
  std::size_t drawnWidth_ = 0; ///< characters on the screen's line
  std::int64_t step_ = 0;
  double loss_ = 0;
  double tokensPerSecond_ = 0;
  double etaSeconds_ = 0;
  std::string details_;
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_PROGRESS_H
