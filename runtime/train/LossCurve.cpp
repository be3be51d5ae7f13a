//===- LossCurve.cpp - The loss-curve picture a run ends with -------------===//

#include "runtime/train/LossCurve.h"

#include "runtime/Error.h"
#include "runtime/io/AtomicFile.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <tuple>

namespace kiln::rt {

namespace {

using Point = std::pair<std::int64_t, double>;

// The picture's size and the plot area inside it, in SVG user units.
constexpr double kSvgWidth = 800;
constexpr double kSvgHeight = 400;
constexpr double kPlotLeft = 72;
constexpr double kPlotRight = 728; // (the rate's axis to its right)
constexpr double kPlotTop = 44;
constexpr double kPlotBottom = 348;

/// The most ticks an axis gets (the rounded spacing usually gives fewer).
constexpr int kMaxStepTicks = 9;
constexpr int kMaxLossTicks = 7;

/// Below this many points the curve is plain enough to need no smoothing,
/// and at or below kMaxMarkedPoints each point also gets a dot.
constexpr std::size_t kMinSmoothedPoints = 50;
constexpr std::size_t kMaxMarkedPoints = 30;

/// The moving average's span (the inverse of its weight) as a fraction of
/// the points.
constexpr double kSmoothingSpan = 0.05;

// Colours: the loss in blue, its average in orange (matplotlib's first two).
constexpr std::string_view kLossColour = "#1f77b4";
constexpr std::string_view kSmoothedColour = "#ff7f0e";
constexpr std::string_view kValidationColour = "#2ca02c";
constexpr std::string_view kRateColour = "#7f7f7f";

/// A "nice" number near `x` (1, 2 or 5 times a power of ten): the nearest
/// one if `round`, else the next one up.
double niceNumber(double x, bool round) {
  double exponent = std::floor(std::log10(x));
  double power = std::pow(10.0, exponent);
  double fraction = x / power;
  double nice;
  if (round)
    nice = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  else
    nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * power;
}

/// An axis: its ends are multiples of `spacing`, the distance between ticks.
struct Axis {
  double low;
  double high;
  double spacing;

  /// Where `value` falls, from 0 at `low` to 1 at `high`.
  double fraction(double value) const { return (value - low) / (high - low); }
};

/// An axis with rounded ticks that covers [low, high] (Heckbert's "nice
/// numbers for graph labels"); integer ticks only if `integral`.
Axis niceAxis(double low, double high, int maxTicks, bool integral) {
  if (!(high > low)) { // one value: widen around it
    double pad = integral ? 1 : std::max(std::abs(low) * 0.1, 1e-3);
    low -= pad;
    high += pad;
  }
  double spacing =
      niceNumber(niceNumber(high - low, false) / (maxTicks - 1), true);
  if (integral)
    spacing = std::max(spacing, 1.0);
  return {std::floor(low / spacing) * spacing,
          std::ceil(high / spacing) * spacing, spacing};
}

/// The labels of `axis`'s ticks, with a k/M/G suffix on large values and as
/// many decimals as the spacing needs.
std::vector<std::pair<double, std::string>> tickLabels(const Axis &axis) {
  double largest = std::max(std::abs(axis.low), std::abs(axis.high));
  double scale = 1;
  std::string_view suffix;
  if (largest >= 1e10) {
    scale = 1e9;
    suffix = "G";
  } else if (largest >= 1e7) {
    scale = 1e6;
    suffix = "M";
  } else if (largest >= 1e4) {
    scale = 1e3;
    suffix = "k";
  }
  int decimals = std::max(
      0, static_cast<int>(std::ceil(-std::log10(axis.spacing / scale) - 1e-9)));
  std::vector<std::pair<double, std::string>> labels;
  long long first = std::llround(axis.low / axis.spacing);
  long long last = std::llround(axis.high / axis.spacing);
  for (long long i = first; i <= last; ++i) {
    double value = static_cast<double>(i) * axis.spacing + 0.0; // no "-0"
    labels.emplace_back(
        value, value == 0
                   ? std::string("0")
                   : fmt::format("{:.{}f}{}", value / scale, decimals, suffix));
  }
  return labels;
}

/// `text` with XML's special characters escaped.
std::string escapeXml(std::string_view text) {
  std::string escaped;
  for (char c : text) {
    switch (c) {
    case '&':
      escaped += "&amp;";
      break;
    case '<':
      escaped += "&lt;";
      break;
    case '>':
      escaped += "&gt;";
      break;
    case '"':
      escaped += "&quot;";
      break;
    default:
      escaped += c;
    }
  }
  return escaped;
}

/// At most `maxPoints` of `points`: the lowest and highest of each of
/// maxPoints / 2 runs of consecutive points, in order.
std::vector<Point> decimate(const std::vector<Point> &points,
                            std::size_t maxPoints) {
  if (points.size() <= maxPoints)
    return points;
  std::size_t buckets = maxPoints / 2;
  std::vector<Point> kept;
  kept.reserve(maxPoints);
  for (std::size_t b = 0; b < buckets; ++b) {
    auto begin = points.begin() + b * points.size() / buckets;
    auto end = points.begin() + (b + 1) * points.size() / buckets;
    auto [low, high] =
        std::minmax_element(begin, end, [](const Point &a, const Point &c) {
          return a.second < c.second;
        });
    if (low == high) {
      kept.push_back(*low);
      continue;
    }
    kept.push_back(*std::min(low, high));
    kept.push_back(*std::max(low, high));
  }
  return kept;
}

/// The losses of `points` smoothed by an exponential moving average run
/// forwards and then backwards, which cancels the average's lag (a plain
/// one trails the steep first steps of a run); sampled at no more than
/// kMaxPlottedPoints / 2 of the points.
std::vector<Point> smoothed(const std::vector<Point> &points) {
  double span =
      std::max(2.0, static_cast<double>(points.size()) * kSmoothingSpan);
  double weight = 1 / span;
  std::vector<double> average(points.size());
  double value = points.front().second;
  for (std::size_t i = 0; i < points.size(); ++i)
    average[i] = value += weight * (points[i].second - value);
  value = average.back();
  for (std::size_t i = points.size(); i-- > 0;)
    average[i] = value += weight * (average[i] - value);
  std::size_t samples = std::min(points.size(), kMaxPlottedPoints / 2);
  std::vector<Point> sampled;
  sampled.reserve(samples);
  for (std::size_t k = 0; k < samples; ++k) {
    std::size_t i = samples == 1 ? 0 : k * (points.size() - 1) / (samples - 1);
    sampled.emplace_back(points[i].first, average[i]);
  }
  return sampled;
}

} // namespace

std::string lossCurveSvg(const std::vector<Point> &points,
                         const std::string &title,
                         const LossCurveOptions &options) {
  const bool logScale = options.logScale;
  auto finiteOf = [&](const std::vector<Point> &all) {
    std::vector<Point> kept;
    for (const Point &point : all)
      if (std::isfinite(point.second) && (!logScale || point.second > 0))
        kept.push_back(point);
    std::stable_sort(
        kept.begin(), kept.end(),
        [](const Point &a, const Point &b) { return a.first < b.first; });
    return kept;
  };
  std::vector<Point> finite = finiteOf(points);
  std::vector<Point> val = finiteOf(options.validation);
  std::vector<Point> rates;
  for (const Point &point : options.learningRate)
    if (std::isfinite(point.second))
      rates.push_back(point);
  std::size_t skipped = points.size() - finite.size();
  std::string heading = title.empty() ? "loss" : title;
  if (skipped > 0)
    heading +=
        fmt::format(" ({} {}loss{} skipped)", skipped,
                    logScale ? "non-positive or non-finite " : "non-finite ",
                    skipped == 1 ? "" : "es");

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" "
      "height=\"{1}\" viewBox=\"0 0 {0} {1}\" font-family=\"Helvetica, "
      "Arial, sans-serif\" font-size=\"12\">\n"
      "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" "
      "font-weight=\"bold\" fill=\"#222\">{3}</text>\n",
      kSvgWidth, kSvgHeight, (kPlotLeft + kPlotRight) / 2, escapeXml(heading));
  std::string frame = fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" "
      "stroke=\"#888\"/>\n",
      kPlotLeft, kPlotTop, kPlotRight - kPlotLeft, kPlotBottom - kPlotTop);

  if (finite.empty()) {
    svg += frame;
    svg +=
        fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" "
                    "fill=\"#666\">no finite loss values to plot</text>\n",
                    (kPlotLeft + kPlotRight) / 2, (kPlotTop + kPlotBottom) / 2);
    return svg + "</svg>\n";
  }

  // (The axes cover the validation points too.)
  std::vector<Point> all = finite;
  all.insert(all.end(), val.begin(), val.end());
  auto [lowest, highest] = std::minmax_element(
      all.begin(), all.end(),
      [](const Point &a, const Point &b) { return a.second < b.second; });
  auto [first, last] = std::minmax_element(
      all.begin(), all.end(),
      [](const Point &a, const Point &b) { return a.first < b.first; });
  Axis steps = niceAxis(static_cast<double>(first->first),
                        static_cast<double>(last->first), kMaxStepTicks,
                        /*integral=*/true);
  // A logarithmic axis runs over log10 of the losses, its ticks at 1, 2
  // and 5 times powers of ten (every integer multiple within one decade).
  auto scaled = [&](double loss) { return logScale ? std::log10(loss) : loss; };
  Axis losses = niceAxis(lowest->second, highest->second, kMaxLossTicks,
                         /*integral=*/false);
  std::vector<std::pair<double, std::string>> lossTicks;
  if (logScale) {
    double low = std::log10(lowest->second), high = std::log10(highest->second);
    double pad = std::max(0.02 * (high - low), 0.01);
    losses = {low - pad, high + pad, 0};
    bool narrow = high - low < 1;
    for (double decade = std::floor(losses.low); decade <= losses.high;
         ++decade)
      for (int m = 1; m <= 9; ++m) {
        if (!narrow && m != 1 && m != 2 && m != 5)
          continue;
        double value = m * std::pow(10.0, decade);
        if (std::log10(value) >= losses.low && std::log10(value) <= losses.high)
          lossTicks.emplace_back(value, fmt::format("{:g}", value));
      }
  } else {
    lossTicks = tickLabels(losses);
  }
  auto x = [&](double step) {
    return kPlotLeft + steps.fraction(step) * (kPlotRight - kPlotLeft);
  };
  auto y = [&](double loss) {
    return kPlotBottom -
           losses.fraction(scaled(loss)) * (kPlotBottom - kPlotTop);
  };
  // A curve's points, its values placed by `yOf` (the loss axis's, or the
  // rate's).
  auto polylineOn = [&](const auto &yOf, const std::vector<Point> &curve,
                        std::string_view attributes) {
    std::string text =
        fmt::format("<polyline {} fill=\"none\" stroke-linejoin=\"round\" "
                    "points=\"",
                    attributes);
    for (std::size_t i = 0; i < curve.size(); ++i)
      text += fmt::format("{}{:.1f},{:.1f}", i ? " " : "",
                          x(static_cast<double>(curve[i].first)),
                          yOf(curve[i].second));
    return text + "\"/>\n";
  };
  auto polyline = [&](const std::vector<Point> &curve,
                      std::string_view attributes) {
    return polylineOn(y, curve, attributes);
  };

  // Grid lines and tick labels.
  std::string grid = "<g stroke=\"#e8e8e8\">\n";
  std::string labels = "<g fill=\"#333\">\n";
  for (const auto &[value, label] : tickLabels(steps)) {
    grid += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" "
                        "y2=\"{2}\"/>\n",
                        x(value), kPlotTop, kPlotBottom);
    labels += fmt::format("<text x=\"{:.1f}\" y=\"{}\" "
                          "text-anchor=\"middle\">{}</text>\n",
                          x(value), kPlotBottom + 16, label);
  }
  for (const auto &[value, label] : lossTicks) {
    grid += fmt::format("<line x1=\"{1}\" y1=\"{0:.1f}\" x2=\"{2}\" "
                        "y2=\"{0:.1f}\"/>\n",
                        y(value), kPlotLeft, kPlotRight);
    labels += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\" "
                          "dominant-baseline=\"middle\">{}</text>\n",
                          kPlotLeft - 6, y(value), label);
  }
  svg += grid + "</g>\n" + labels + "</g>\n" + frame;
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" "
                     "fill=\"#222\">step</text>\n",
                     (kPlotLeft + kPlotRight) / 2, kSvgHeight - 14);
  svg += fmt::format("<text x=\"18\" y=\"{0}\" text-anchor=\"middle\" "
                     "transform=\"rotate(-90 18 {0})\" fill=\"#222\">{1}"
                     "</text>\n",
                     (kPlotTop + kPlotBottom) / 2,
                     logScale ? "loss (log scale)" : "loss");

  // The curves, then a legend if there are two of them.
  // A curve with more points than the plot has pixels across is a band of
  // noise; lighter, it leaves the moving average readable on top of it.
  bool dense = static_cast<double>(finite.size()) > kPlotRight - kPlotLeft;
  svg += polyline(decimate(finite, kMaxPlottedPoints),
                  fmt::format("class=\"loss\" stroke=\"{}\" "
                              "stroke-width=\"1.2\" stroke-opacity=\"{}\"",
                              kLossColour, dense ? 0.6 : 1.0));
  if (finite.size() <= kMaxMarkedPoints) {
    svg += fmt::format("<g fill=\"{}\">\n", kLossColour);
    for (const Point &point : finite)
      svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\"/>\n",
                         x(static_cast<double>(point.first)), y(point.second));
    svg += "</g>\n";
  }
  // The legend's entries: (label, colour, stroke width).
  std::vector<std::tuple<std::string_view, std::string_view, double>> legend{
      {"loss", kLossColour, 1.5}};
  if (finite.size() >= kMinSmoothedPoints) {
    svg += polyline(smoothed(finite),
                    fmt::format("class=\"smoothed\" stroke=\"{}\" "
                                "stroke-width=\"2\" stroke-opacity=\"0.8\"",
                                kSmoothedColour));
    legend.emplace_back("moving average", kSmoothedColour, 2);
  }
  if (!val.empty()) {
    svg += polyline(val, fmt::format("class=\"validation\" stroke=\"{}\" "
                                     "stroke-width=\"2\"",
                                     kValidationColour));
    svg += fmt::format("<g fill=\"{}\">\n", kValidationColour);
    for (const Point &point : val)
      svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\"/>\n",
                         x(static_cast<double>(point.first)), y(point.second));
    svg += "</g>\n";
    legend.emplace_back("validation loss", kValidationColour, 2);
  }
  if (!rates.empty()) {
    // The rate on its own axis at the right, from 0.
    double top = std::max_element(rates.begin(), rates.end(),
                                  [](const Point &a, const Point &b) {
                                    return a.second < b.second;
                                  })
                     ->second;
    Axis axis = niceAxis(0, top > 0 ? top : 1, 5, /*integral=*/false);
    auto yRate = [&](double rate) {
      return kPlotBottom - axis.fraction(rate) * (kPlotBottom - kPlotTop);
    };
    svg += polylineOn(yRate, decimate(rates, kMaxPlottedPoints),
                      fmt::format("class=\"lr\" stroke=\"{}\" "
                                  "stroke-width=\"1.2\" "
                                  "stroke-dasharray=\"4 3\"",
                                  kRateColour));
    svg += fmt::format("<g fill=\"{}\">\n", kRateColour);
    for (const auto &[value, label] : tickLabels(axis))
      svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" "
                         "dominant-baseline=\"middle\">{}</text>\n",
                         kPlotRight + 6, yRate(value), label);
    svg += fmt::format("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" "
                       "transform=\"rotate(90 {0} {1})\">learning rate</text>\n"
                       "</g>\n",
                       kSvgWidth - 12, (kPlotTop + kPlotBottom) / 2);
    legend.emplace_back("learning rate", kRateColour, 1.2);
  }
  if (legend.size() > 1) {
    double legendX = kPlotRight - 160;
    double legendY = kPlotTop + 10;
    svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"150\" height=\"{}\" "
                       "fill=\"white\" fill-opacity=\"0.85\" "
                       "stroke=\"#ccc\"/>\n",
                       legendX, legendY, 16 * legend.size() + 10);
    for (std::size_t i = 0; i < legend.size(); ++i) {
      auto [label, colour, width] = legend[i];
      double rowY = legendY + 13 + 16 * static_cast<double>(i);
      svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" "
                         "y2=\"{1}\" stroke=\"{3}\" stroke-width=\"{4}\"/>\n"
                         "<text x=\"{5}\" y=\"{1}\" "
                         "dominant-baseline=\"middle\">{6}</text>\n",
                         legendX + 8, rowY, legendX + 32, colour, width,
                         legendX + 40, label);
    }
  }
  return svg + "</svg>\n";
}

void writeLossCurveSvg(const std::string &path,
                       const std::vector<Point> &points,
                       const std::string &title,
                       const LossCurveOptions &options) {
  std::string svg = lossCurveSvg(points, title, options);
  writeFileAtomic(path, std::as_bytes(std::span(svg.data(), svg.size())));
}

} // namespace kiln::rt
