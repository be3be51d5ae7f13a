//===- Metrics.cpp - What a training run reports --------------------------===//

#include "runtime/train/Metrics.h"

#include "runtime/Error.h"
#include "runtime/io/AtomicFile.h"
#include "runtime/io/InputFile.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fcntl.h>
#include <limits>
#include <span>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kiln::rt {

//===----------------------------------------------------------------------===//
// The metrics file
//===----------------------------------------------------------------------===//

namespace {

/// A number as JSON: the shortest text that reads back as the same double,
/// or null (JSON has no NaN or infinity).
std::string jsonNumber(double value) {
  return std::isfinite(value) ? fmt::format("{}", value) : "null";
}

/// Writes all of `text` to `fd`; throws Error naming `path` on failure.
void writeAll(int fd, std::string_view text, const std::string &path) {
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int err = errno;
      throw Error(fmt::format("{}: cannot write a metrics record: {}", path,
                              errnoMessage(err)));
    }
    done += static_cast<std::size_t>(n);
  }
}

/// Cuts a last line that lacks its newline (a write torn by a crash) from
/// the file open as `fd`, so that appended lines start on a line of their
/// own.
void dropTornLine(int fd, const std::string &path) {
  auto fail = [&](std::string_view what) {
    int err = errno;
    throw Error(fmt::format("{}: cannot {} the metrics log: {}", path, what,
                            errnoMessage(err)));
  };
  struct stat info;
  if (::fstat(fd, &info) != 0)
    fail("inspect");
  off_t end = info.st_size;
  // Scans backwards in blocks for the last newline.
  char block[4096];
  off_t keep = 0;
  for (off_t blockEnd = end; blockEnd > 0;) {
    off_t blockStart = std::max<off_t>(0, blockEnd - off_t(sizeof(block)));
    std::size_t length = static_cast<std::size_t>(blockEnd - blockStart);
    ssize_t n = ::pread(fd, block, length, blockStart);
    if (n < 0 && errno == EINTR)
      continue;
    if (n != static_cast<ssize_t>(length))
      fail("read");
    std::string_view text(block, length);
    std::size_t newline = text.rfind('\n');
    if (newline != std::string_view::npos) {
      keep = blockStart + static_cast<off_t>(newline) + 1;
      break;
    }
    blockEnd = blockStart;
  }
  if (keep != end && ::ftruncate(fd, keep) != 0)
    fail("repair the torn last line of");
}

/// One record of a metrics file and the text of its line.
struct MetricsLine {
  MetricRecord record;
  std::string_view text;
};

/// The field `key` of a metrics line as a double (null reads as NaN); false
/// if it is missing or not a number.
bool numberField(const nlohmann::json &object, const char *key, double &out) {
  auto it = object.find(key);
  if (it == object.end())
    return false;
  if (it->is_null()) {
    out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  if (!it->is_number())
    return false;
  out = it->get<double>();
  return true;
}

/// Parses the line `text` into `record`; returns what is wrong with it, or
/// "" if nothing is.
std::string parseRecord(std::string_view text, MetricRecord &record) {
  nlohmann::json object = nlohmann::json::parse(text, nullptr,
                                                /*allow_exceptions=*/false);
  if (object.is_discarded())
    return "not valid JSON";
  if (!object.is_object())
    return "not a JSON object";
  auto step = object.find("step");
  if (step == object.end() || !step->is_number_integer())
    return "field 'step' is missing or not an integer";
  record.step = step->get<std::int64_t>();
  struct Field {
    const char *key;
    double &value;
  };
  for (Field field : {Field{"loss", record.loss}, Field{"lr", record.lr},
                      Field{"tokens_per_s", record.tokensPerSecond}})
    if (!numberField(object, field.key, field.value))
      return fmt::format("field '{}' is missing or not a number", field.key);
  return "";
}

/// The records of the metrics file `path`, whose bytes are `contents`.
std::vector<MetricsLine> parseMetrics(const std::string &path,
                                      std::string_view contents) {
  std::vector<MetricsLine> lines;
  std::size_t lineNumber = 0;
  for (std::size_t pos = 0; pos < contents.size();) {
    ++lineNumber;
    std::size_t newline = contents.find('\n', pos);
    bool torn = newline == std::string_view::npos;
    std::size_t end = torn ? contents.size() : newline;
    std::string_view text = contents.substr(pos, end - pos);
    pos = torn ? end : end + 1;
    if (text.find_first_not_of(" \t\r") == std::string_view::npos)
      continue;
    MetricRecord record;
    std::string problem = parseRecord(text, record);
    if (problem.empty())
      lines.push_back({record, text});
    else if (!torn)
      throw Error(fmt::format("{}:{}: not a metrics record: {}", path,
                              lineNumber, problem));
  }
  return lines;
}

/// The whole file at `path` as text.
std::string readText(const std::string &path) {
  std::vector<std::byte> bytes = InputFile(path).readAll();
  return std::string(reinterpret_cast<const char *>(bytes.data()),
                     bytes.size());
}

} // namespace

std::string metricsLine(const MetricRecord &record) {
  return fmt::format(R"({{"step":{},"loss":{},"lr":{},"tokens_per_s":{}}})",
                     record.step, jsonNumber(record.loss),
                     jsonNumber(record.lr), jsonNumber(record.tokensPerSecond));
}

MetricsLog::MetricsLog(const std::string &path, bool append) : path_(path) {
  int flags =
      O_CREAT | O_CLOEXEC | (append ? O_RDWR | O_APPEND : O_WRONLY | O_TRUNC);
  fd_ = ::open(path_.c_str(), flags, 0666);
  if (fd_ < 0) {
    int err = errno;
    throw Error(fmt::format("{}: cannot open the metrics log for writing: {}",
                            path_, errnoMessage(err)));
  }
  if (append) {
    try {
      dropTornLine(fd_, path_);
    } catch (...) {
      ::close(fd_);
      throw;
    }
  }
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0)
    ::close(fd_);
}

void MetricsLog::write(std::int64_t step, double loss, double lr,
                       double tokensPerSecond) {
  // One write() per line: a reader never sees half a line unless the run
  // dies inside the call.
  writeAll(fd_, metricsLine({step, loss, lr, tokensPerSecond}) + "\n", path_);
}

std::vector<MetricRecord> MetricsLog::read(const std::string &path) {
  std::string contents = readText(path);
  std::vector<MetricRecord> records;
  for (const MetricsLine &line : parseMetrics(path, contents))
    records.push_back(line.record);
  return records;
}

void MetricsLog::truncateAfter(const std::string &path, std::int64_t lastStep) {
  std::string contents = readText(path);
  std::string kept;
  for (const MetricsLine &line : parseMetrics(path, contents)) {
    if (line.record.step > lastStep)
      continue;
    kept += line.text;
    kept += '\n';
  }
  writeFileAtomic(path, std::as_bytes(std::span(kept.data(), kept.size())));
}

//===----------------------------------------------------------------------===//
// The loss-curve picture
//===----------------------------------------------------------------------===//

namespace {

using Point = std::pair<std::int64_t, double>;

// The picture's size and the plot area inside it, in SVG user units.
constexpr double kSvgWidth = 800;
constexpr double kSvgHeight = 400;
constexpr double kPlotLeft = 72;
constexpr double kPlotRight = 776;
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
constexpr double kSmoothingSpan = 1.0 / 100;

// Colours: the loss in blue, its average in orange (matplotlib's first two).
constexpr std::string_view kLossColour = "#1f77b4";
constexpr std::string_view kSmoothedColour = "#ff7f0e";

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
                         const std::string &title) {
  std::vector<Point> finite;
  for (const Point &point : points)
    if (std::isfinite(point.second))
      finite.push_back(point);
  std::stable_sort(
      finite.begin(), finite.end(),
      [](const Point &a, const Point &b) { return a.first < b.first; });
  std::size_t skipped = points.size() - finite.size();
  std::string heading = title.empty() ? "loss" : title;
  if (skipped > 0)
    heading += fmt::format(" ({} non-finite loss{} skipped)", skipped,
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

  auto [lowest, highest] = std::minmax_element(
      finite.begin(), finite.end(),
      [](const Point &a, const Point &b) { return a.second < b.second; });
  Axis steps = niceAxis(static_cast<double>(finite.front().first),
                        static_cast<double>(finite.back().first), kMaxStepTicks,
                        /*integral=*/true);
  Axis losses = niceAxis(lowest->second, highest->second, kMaxLossTicks,
                         /*integral=*/false);
  auto x = [&](double step) {
    return kPlotLeft + steps.fraction(step) * (kPlotRight - kPlotLeft);
  };
  auto y = [&](double loss) {
    return kPlotBottom - losses.fraction(loss) * (kPlotBottom - kPlotTop);
  };
  auto polyline = [&](const std::vector<Point> &curve,
                      std::string_view attributes) {
    std::string text =
        fmt::format("<polyline {} fill=\"none\" stroke-linejoin=\"round\" "
                    "points=\"",
                    attributes);
    for (std::size_t i = 0; i < curve.size(); ++i)
      text += fmt::format("{}{:.1f},{:.1f}", i ? " " : "",
                          x(static_cast<double>(curve[i].first)),
                          y(curve[i].second));
    return text + "\"/>\n";
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
  for (const auto &[value, label] : tickLabels(losses)) {
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
                     "transform=\"rotate(-90 18 {0})\" fill=\"#222\">loss"
                     "</text>\n",
                     (kPlotTop + kPlotBottom) / 2);

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
  if (finite.size() >= kMinSmoothedPoints) {
    svg += polyline(smoothed(finite),
                    fmt::format("class=\"smoothed\" stroke=\"{}\" "
                                "stroke-width=\"2\" stroke-opacity=\"0.8\"",
                                kSmoothedColour));
    double legendX = kPlotRight - 160;
    double legendY = kPlotTop + 10;
    svg += fmt::format(
        "<rect x=\"{0}\" y=\"{1}\" width=\"150\" height=\"42\" fill=\"white\" "
        "fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n"
        "<line x1=\"{2}\" y1=\"{3}\" x2=\"{4}\" y2=\"{3}\" stroke=\"{6}\" "
        "stroke-width=\"1.5\"/>\n"
        "<text x=\"{5}\" y=\"{3}\" dominant-baseline=\"middle\">loss</text>\n"
        "<line x1=\"{2}\" y1=\"{8}\" x2=\"{4}\" y2=\"{8}\" stroke=\"{7}\" "
        "stroke-width=\"2\"/>\n"
        "<text x=\"{5}\" y=\"{8}\" dominant-baseline=\"middle\">moving "
        "average</text>\n",
        legendX, legendY, legendX + 8, legendY + 13, legendX + 32, legendX + 40,
        kLossColour, kSmoothedColour, legendY + 29);
  }
  return svg + "</svg>\n";
}

void writeLossCurveSvg(const std::string &path,
                       const std::vector<Point> &points,
                       const std::string &title) {
  std::string svg = lossCurveSvg(points, title);
  writeFileAtomic(path, std::as_bytes(std::span(svg.data(), svg.size())));
}

//===----------------------------------------------------------------------===//
// The progress bar
//===----------------------------------------------------------------------===//

namespace {

/// Room kept after the bar for the numbers; a line whose numbers are longer
/// gets a shorter bar.
constexpr std::size_t kNumbersWidth =
    std::string_view("loss 10.000 | 999.9k tok/s | ETA 59m59s").size();

/// The bar is never drawn narrower or wider than this.
constexpr std::int64_t kMinBarWidth = 5;
constexpr std::int64_t kMaxBarWidth = 50;

/// The least time between redraws: more often only costs terminal output.
constexpr std::chrono::milliseconds kRedrawInterval(100);

/// The width of the terminal `out` shows on: the terminal's own if it has
/// one, else $COLUMNS, else 80.
int terminalColumns(std::FILE *out) {
  struct winsize size;
  if (::ioctl(::fileno(out), TIOCGWINSZ, &size) == 0 && size.ws_col > 0)
    return size.ws_col;
  if (const char *columns = std::getenv("COLUMNS")) {
    int value = std::atoi(columns);
    if (value > 0)
      return value;
  }
  return 80;
}

} // namespace

std::string formatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0)
    return "--";
  long long whole = std::llround(seconds);
  if (whole < 60)
    return fmt::format("{}s", whole);
  if (whole < 3600)
    return fmt::format("{}m{:02}s", whole / 60, whole % 60);
  return fmt::format("{}h{:02}m", whole / 3600, whole % 3600 / 60);
}

std::string formatRate(double perSecond) {
  if (!std::isfinite(perSecond) || perSecond < 0)
    return "--";
  if (perSecond < 999.5)
    return fmt::format("{:.0f}", perSecond);
  static constexpr struct {
    double scale;
    char suffix;
  } kUnits[] = {{1e3, 'k'}, {1e6, 'M'}, {1e9, 'G'}, {1e12, 'T'}};
  for (const auto &unit : kUnits) {
    double scaled = perSecond / unit.scale;
    // Past 999.95 the rounded value would print as 1000.0: next unit.
    if (scaled < 999.95 || unit.suffix == 'T')
      return fmt::format("{:.1f}{}", scaled, unit.suffix);
  }
  return "--"; // not reached: the last unit takes every rate
}

std::string progressLine(std::int64_t step, std::int64_t totalSteps,
                         double loss, double tokensPerSecond, double etaSeconds,
                         int columns) {
  std::size_t stepDigits = fmt::formatted_size("{}", totalSteps);
  std::string counter =
      fmt::format("step {:>{}}/{}", step, stepDigits, totalSteps);
  std::string numbers =
      fmt::format("loss {:.3f} | {} tok/s | ETA {}", loss,
                  formatRate(tokensPerSecond), formatDuration(etaSeconds));
  std::int64_t room = std::max(columns - 1, 0);
  // " [" + bar + "] " surround the bar.
  std::int64_t barWidth = std::min<std::int64_t>(
      kMaxBarWidth,
      room - static_cast<std::int64_t>(
                 counter.size() + 4 + std::max(kNumbersWidth, numbers.size())));
  std::string line;
  if (barWidth >= kMinBarWidth) {
    std::int64_t done = std::clamp<std::int64_t>(step, 0, totalSteps);
    std::int64_t filled = totalSteps > 0 ? done * barWidth / totalSteps : 0;
    line = fmt::format("{} [{}{}] {}", counter, std::string(filled, '#'),
                       std::string(barWidth - filled, '.'), numbers);
  } else {
    line = counter + " " + numbers;
  }
  if (static_cast<std::int64_t>(line.size()) > room)
    line.resize(static_cast<std::size_t>(room));
  return line;
}

ProgressBar::ProgressBar(std::int64_t totalSteps, std::int64_t firstStep,
                         bool enabled, std::FILE *out)
    : totalSteps_(totalSteps), firstStep_(firstStep), enabled_(enabled),
      out_(out), start_(Clock::now()), lastDraw_(start_) {}

ProgressBar::~ProgressBar() {
  try {
    finish();
  } catch (...) { // a failed write to the terminal is not worth a crash
  }
}

void ProgressBar::update(std::int64_t step, double loss,
                         double tokensPerSecond) {
  if (!enabled_ || finished_)
    return;
  Clock::time_point now = Clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  std::int64_t done = step - firstStep_ + 1;
  std::int64_t left = std::max<std::int64_t>(totalSteps_ - step, 0);
  step_ = step;
  loss_ = loss;
  tokensPerSecond_ = tokensPerSecond;
  etaSeconds_ =
      done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(left)
               : std::numeric_limits<double>::quiet_NaN();
  updated_ = true;
  drawnLast_ = false;
  if (drawnWidth_ == 0 || step >= totalSteps_ ||
      now - lastDraw_ >= kRedrawInterval) {
    redraw();
    lastDraw_ = now;
  }
}

void ProgressBar::printAbove(std::string_view text) {
  bool bar = enabled_ && !finished_ && drawnWidth_ > 0;
  if (bar)
    fmt::print(out_, "\r{}\r", std::string(drawnWidth_, ' '));
  drawnWidth_ = 0;
  fmt::print(out_, "{}\n", text);
  if (bar)
    redraw();
  std::fflush(out_);
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) {
    finished_ = true;
    return;
  }
  finished_ = true;
  if (!updated_)
    return;
  if (!drawnLast_)
    redraw();
  std::fputc('\n', out_);
  std::fflush(out_);
}

void ProgressBar::redraw() {
  std::string line = progressLine(step_, totalSteps_, loss_, tokensPerSecond_,
                                  etaSeconds_, terminalColumns(out_));
  // Blanks cover what is left of a longer line drawn before.
  std::size_t width = std::max(line.size(), drawnWidth_);
  fmt::print(out_, "\r{:<{}}", line, width);
  std::fflush(out_);
  drawnWidth_ = line.size();
  drawnLast_ = true;
}

} // namespace kiln::rt
