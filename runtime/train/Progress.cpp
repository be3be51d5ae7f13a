//===- Progress.cpp - The progress bar of a run ---------------------------===//

#include "runtime/train/Progress.h"

#include "runtime/Error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <sys/ioctl.h>
#include <unistd.h>

namespace kiln::rt {

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
                         int columns, std::string_view details) {
  std::size_t stepDigits = fmt::formatted_size("{}", totalSteps);
  std::string counter =
      fmt::format("step {:>{}}/{}", step, stepDigits, totalSteps);
  std::string numbers =
      fmt::format("loss {:.3f} | {}{}{} tok/s | ETA {}", loss, details,
                  details.empty() ? "" : " | ", formatRate(tokensPerSecond),
                  formatDuration(etaSeconds));
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

void ProgressBar::update(std::int64_t step, double loss, double tokensPerSecond,
                         std::string details) {
  if (!enabled_ || finished_)
    return;
  Clock::time_point now = Clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  std::int64_t done = step - firstStep_ + 1;
  std::int64_t left = std::max<std::int64_t>(totalSteps_ - step, 0);
  step_ = step;
  loss_ = loss;
  tokensPerSecond_ = tokensPerSecond;
  details_ = std::move(details);
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
                                  etaSeconds_, terminalColumns(out_), details_);
  // Blanks cover what is left of a longer line drawn before.
  std::size_t width = std::max(line.size(), drawnWidth_);
  fmt::print(out_, "\r{:<{}}", line, width);
  std::fflush(out_);
  drawnWidth_ = line.size();
  drawnLast_ = true;
}

} // namespace kiln::rt
