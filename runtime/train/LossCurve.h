//===- LossCurve.h - The loss-curve picture a run ends with -----*- C++ -*-===//
//
// A self-contained SVG of the loss against the step, written atomically at
// the end of a run (and of an interrupted one).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_LOSSCURVE_H
#define KILN_RUNTIME_TRAIN_LOSSCURVE_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kiln::rt {

/// At most this many loss points are drawn; longer runs are reduced to the
/// lowest and highest loss of each of kMaxPlottedPoints / 2 runs of
/// consecutive steps, which keeps every spike visible.
constexpr std::size_t kMaxPlottedPoints = 2000;

/// What a loss curve shows besides the training loss.
struct LossCurveOptions {
  /// The validation losses (class "validation", a dot each).
  std::vector<std::pair<std::int64_t, double>> validation;
  /// The learning rate of each step, on a second axis at the right (class
  /// "lr", dashed).
  std::vector<std::pair<std::int64_t, double>> learningRate;
  /// The loss axis logarithmic (ticks at 1, 2 and 5 times powers of ten;
  /// losses that are not positive are skipped and counted in the title).
  bool logScale = false;
};

/// A self-contained 800x400 SVG of (step, loss) points: axes with rounded
/// tick values, the loss as a polyline (class "loss"), an exponential moving
/// average (class "smoothed", its span 5% of the points) when there are
/// enough points to need one, what `options` add, a legend when there is
/// more than one curve, and `title`. Non-finite losses are skipped and
/// counted in the title; points are drawn in step order.
std::string
lossCurveSvg(const std::vector<std::pair<std::int64_t, double>> &points,
             const std::string &title, const LossCurveOptions &options);

/// lossCurveSvg with the validation losses alone.
inline std::string lossCurveSvg(
    const std::vector<std::pair<std::int64_t, double>> &points,
    const std::string &title,
    const std::vector<std::pair<std::int64_t, double>> &validation = {}) {
  return lossCurveSvg(points, title, LossCurveOptions{validation, {}, false});
}

/// Writes lossCurveSvg(points, title, options) to `path`, atomically.
void writeLossCurveSvg(
    const std::string &path,
    const std::vector<std::pair<std::int64_t, double>> &points,
    const std::string &title, const LossCurveOptions &options = {});

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_LOSSCURVE_H
