//===- Metrics.h - What a training run reports ------------------*- C++ -*-===//
//
// A run reports three ways: one JSON line per step in a metrics file (read
// back on resume), a progress bar on a terminal, and a loss-curve picture at
// the end. JSON has no NaN or infinity, so a non-finite value is written as
// null and read back as NaN.
//
//   {"step":1,"loss":5.6,"lr":0.0003,"tokens_per_s":12345.6}
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_METRICS_H
#define KILN_RUNTIME_TRAIN_METRICS_H

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::rt {

//===----------------------------------------------------------------------===//
// The metrics file
//===----------------------------------------------------------------------===//

/// One line of the metrics file.
struct MetricRecord {
  std::int64_t step = 0;
  double loss = 0;
  double lr = 0;
  double tokensPerSecond = 0;

  bool operator==(const MetricRecord &) const = default;
};

/// The JSON line for `record`, without the newline: keys step, loss, lr,
/// tokens_per_s in that order, each number in the shortest form that reads
/// back as the same double, null for a non-finite one.
std::string metricsLine(const MetricRecord &record);

/// A metrics file being written, one JSON line per step.
class MetricsLog {
public:
  /// Opens `path`, emptying it unless `append` (a resumed run keeps the
  /// lines before it; a torn last line, left by a crash in the middle of a
  /// write, is dropped). Throws Error naming the path and the system's reason
  /// if the file cannot be opened.
  MetricsLog(const std::string &path, bool append);
  ~MetricsLog();
  MetricsLog(const MetricsLog &) = delete;
  MetricsLog &operator=(const MetricsLog &) = delete;

  /// Appends one line and hands it to the system at once, so that the file
  /// is complete up to the last step even if the run dies. Throws Error on a
  /// failed write.
  void write(std::int64_t step, double loss, double lr, double tokensPerSecond);

  const std::string &path() const { return path_; }

  /// The records of the metrics file at `path`, in file order. Blank lines
  /// are skipped, and so is a torn last line (one without its newline that
  /// does not parse). Throws Error naming the file and line for any other
  /// line that is not a metrics record, and if the file cannot be read.
  static std::vector<MetricRecord> read(const std::string &path);

  /// Rewrites the metrics file at `path` atomically, keeping the lines of
  /// records with step <= `lastStep` byte for byte: for resuming from a
  /// checkpoint older than the last logged step. Throws as read() does.
  static void truncateAfter(const std::string &path, std::int64_t lastStep);

private:
  std::string path_;
  int fd_ = -1;
};

//===----------------------------------------------------------------------===//
// The loss-curve picture
//===----------------------------------------------------------------------===//

/// At most this many loss points are drawn; longer runs are reduced to the
/// lowest and highest loss of each of kMaxPlottedPoints / 2 runs of
/// consecutive steps, which keeps every spike visible.
constexpr std::size_t kMaxPlottedPoints = 2000;

/// A self-contained 800x400 SVG of (step, loss) points: axes with rounded
/// tick values, the loss as a polyline (class "loss"), an exponential moving
/// average (class "smoothed") when there are enough points to need one, and
/// `title`. Non-finite losses are skipped and counted in the title; points
/// are drawn in step order.
std::string
lossCurveSvg(const std::vector<std::pair<std::int64_t, double>> &points,
             const std::string &title);

/// Writes lossCurveSvg(points, title) to `path`, atomically.
void writeLossCurveSvg(
    const std::string &path,
    const std::vector<std::pair<std::int64_t, double>> &points,
    const std::string &title);

//===----------------------------------------------------------------------===//
// The progress bar
//===----------------------------------------------------------------------===//

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
/// The step is padded to the width of totalSteps and the bar fills the room
/// the rest leaves, so the bar stays put as the numbers change; a terminal
/// too narrow for a bar gets the line without one.
std::string progressLine(std::int64_t step, std::int64_t totalSteps,
                         double loss, double tokensPerSecond, double etaSeconds,
                         int columns = 80);

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
  /// always for the last step.
  void update(std::int64_t step, double loss, double tokensPerSecond);

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
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_METRICS_H
