//===- MetricsTest.cpp - Metrics file, loss curve and progress bar --------===//
//
// The metrics file is read back on resume, so its lines must round-trip
// exactly and survive a crash mid-write; the picture must stay a small,
// valid SVG for any run; the progress line must fit the terminal.
//
//===----------------------------------------------------------------------===//

#include "runtime/train/LossCurve.h"
#include "runtime/train/MetricsLog.h"
#include "runtime/train/Progress.h"

#include "../io/IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

using namespace kiln::rt;
using namespace kiln::rt::testing;
using ::testing::ContainsRegex;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

namespace {

/// The text of the file at `path`.
std::string readText(const std::string &path) {
  std::vector<std::byte> bytes = readBytes(path);
  return std::string(reinterpret_cast<const char *>(bytes.data()),
                     bytes.size());
}

/// Writes `text` to `path`, plainly.
void writeText(const std::string &path, std::string_view text) {
  writeBytes(path, bytesOf(text));
}

/// The steps of `records`.
std::vector<std::int64_t> stepsOf(const std::vector<MetricRecord> &records) {
  std::vector<std::int64_t> steps;
  for (const MetricRecord &record : records)
    steps.push_back(record.step);
  return steps;
}

//===----------------------------------------------------------------------===//
// The metrics file
//===----------------------------------------------------------------------===//

TEST(MetricsLogTest, WritesExactJsonLines) {
  EXPECT_EQ(
      metricsLine({1, 5.6, 0.0003, 12345.6, 1.25, 0.5, 4096}),
      R"({"step":1,"loss":5.6,"lr":0.0003,"tokens_per_s":12345.6,)"
      R"("grad_norm":1.25,"elapsed_s":0.5,"tokens_seen":4096,"mfu":null})");
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  MetricsLog log(path, /*append=*/false);
  log.write({1, 5.6, 0.0003, 12345.6});
  // Each line is in the file as soon as write() returns.
  EXPECT_EQ(
      readText(path),
      "{\"step\":1,\"loss\":5.6,\"lr\":0.0003,\"tokens_per_s\":12345.6,"
      "\"grad_norm\":0,\"elapsed_s\":0,\"tokens_seen\":0,\"mfu\":null}\n");
  log.write({2, 5.25, 3e-5, 100});
  EXPECT_EQ(
      readText(path),
      "{\"step\":1,\"loss\":5.6,\"lr\":0.0003,\"tokens_per_s\":12345.6,"
      "\"grad_norm\":0,\"elapsed_s\":0,\"tokens_seen\":0,\"mfu\":null}\n"
      "{\"step\":2,\"loss\":5.25,\"lr\":3e-05,\"tokens_per_s\":100,"
      "\"grad_norm\":0,\"elapsed_s\":0,\"tokens_seen\":0,\"mfu\":null}\n");
}

// An evaluated step's line ends with the validation loss and its
// perplexity; reading it back gives the loss, a line without it NaN.
TEST(MetricsLogTest, ValidationLossEndsTheLine) {
  MetricRecord record{4, 5.5, 0.001, 100, 2, 1.5, 512, 0.25, std::log(2.0)};
  std::string line = metricsLine(record);
  EXPECT_THAT(line, HasSubstr(R"("tokens_seen":512,"mfu":0.25,"val_loss":)"));
  EXPECT_THAT(line, HasSubstr(R"(,"val_perplexity":2})"));
  EXPECT_EQ(line.back(), '}');
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path, /*append=*/false);
    log.write({3, 5.6, 0.001, 100, 2, 1, 384});
    log.write(record);
  }
  std::vector<MetricRecord> records = MetricsLog::read(path);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_TRUE(std::isnan(records[0].valLoss));
  EXPECT_EQ(records[1], record);
  writeText(path, R"({"step":1,"loss":2,"lr":0.1,"tokens_per_s":1,)"
                  R"("val_loss":"low"})"
                  "\n");
  EXPECT_THAT(errorMessage([&] { MetricsLog::read(path); }),
              HasSubstr("field 'val_loss' is not a number"));
}

// metrics.csv: a header and a row per record, unknown values empty.
TEST(MetricsLogTest, WritesCsv) {
  std::vector<MetricRecord> records = {
      {1, 5.5, 0.001, 100, 2, 1.5, 512},
      {2, 5.25, 0.002, 200, NAN, 3, -1, 0.125, std::log(4.0)}};
  EXPECT_EQ(metricsCsv(records),
            "step,loss,lr,tokens_per_s,grad_norm,elapsed_s,tokens_seen,mfu,"
            "val_loss,val_perplexity\n"
            "1,5.5,0.001,100,2,1.5,512,,,\n"
            "2,5.25,0.002,200,,3,,0.125,1.3862943611198906,4\n");
}

TEST(MetricsLogTest, ReadRoundTripsEveryDouble) {
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  std::vector<MetricRecord> written = {
      {1, 0.1 + 0.2, 1.0 / 3, 12345.678901234567},
      {2, 1e-300, 6e-4, 4.9e-324},
      {3, 11.090354888959125, 1.7976931348623157e308, 0},
      {-4, 2.0, 0.0, 1e22},
  };
  {
    MetricsLog log(path, false);
    for (const MetricRecord &r : written)
      log.write({r.step, r.loss, r.lr, r.tokensPerSecond});
  }
  EXPECT_EQ(MetricsLog::read(path), written);
}

TEST(MetricsLogTest, NonFiniteValuesAreNull) {
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path, false);
    log.write({7, NAN, INFINITY, -INFINITY});
  }
  EXPECT_EQ(
      readText(path),
      "{\"step\":7,\"loss\":null,\"lr\":null,\"tokens_per_s\":null,"
      "\"grad_norm\":0,\"elapsed_s\":0,\"tokens_seen\":0,\"mfu\":null}\n");
  std::vector<MetricRecord> records = MetricsLog::read(path);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].step, 7);
  EXPECT_TRUE(std::isnan(records[0].loss));
  EXPECT_TRUE(std::isnan(records[0].lr));
  EXPECT_TRUE(std::isnan(records[0].tokensPerSecond));
}

TEST(MetricsLogTest, AppendKeepsEarlierLines) {
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path, false);
    log.write({1, 3.0, 1e-3, 10});
    log.write({2, 2.5, 1e-3, 10});
  }
  {
    MetricsLog log(path, /*append=*/true);
    log.write({3, 2.0, 1e-3, 10});
  }
  EXPECT_EQ(stepsOf(MetricsLog::read(path)),
            (std::vector<std::int64_t>{1, 2, 3}));
  // Append creates a missing file; a fresh log empties an existing one.
  std::string other = dir.file("new.jsonl");
  MetricsLog(other, true).write({1, 1, 1, 1});
  EXPECT_EQ(MetricsLog::read(other).size(), 1u);
  MetricsLog(path, false).write({9, 1, 1, 1});
  EXPECT_EQ(stepsOf(MetricsLog::read(path)), (std::vector<std::int64_t>{9}));
}

TEST(MetricsLogTest, AppendDropsATornLastLine) {
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  std::string whole = metricsLine({1, 3.0, 1e-3, 10}) + "\n" +
                      metricsLine({2, 2.5, 1e-3, 10}) + "\n";
  writeText(path, whole + R"({"step":3,"lo)");
  // read() skips the torn line a crash leaves...
  EXPECT_EQ(stepsOf(MetricsLog::read(path)), (std::vector<std::int64_t>{1, 2}));
  // ...and appending cuts it, so that the next line starts on its own.
  {
    MetricsLog log(path, true);
    log.write({3, 2.0, 1e-3, 10});
  }
  EXPECT_EQ(readText(path), whole + metricsLine({3, 2.0, 1e-3, 10}) + "\n");

  // A file that is only a torn line is emptied.
  writeText(path, R"({"step":1)");
  MetricsLog(path, true).write({1, 1, 1, 1});
  EXPECT_EQ(readText(path), metricsLine({1, 1, 1, 1}) + "\n");
}

// A line of an older Kiln (before grad_norm, elapsed_s and tokens_seen)
// reads with those unknown.
TEST(MetricsLogTest, ReadsOlderLines) {
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  writeText(path, R"({"step":3,"loss":2,"lr":0.001,"tokens_per_s":10})"
                  "\n");
  std::vector<MetricRecord> records = MetricsLog::read(path);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].step, 3);
  EXPECT_EQ(records[0].loss, 2);
  EXPECT_TRUE(std::isnan(records[0].gradNorm));
  EXPECT_TRUE(std::isnan(records[0].elapsedSeconds));
  EXPECT_EQ(records[0].tokensSeen, -1);
  EXPECT_TRUE(std::isnan(records[0].mfu));
}

TEST(MetricsLogTest, ReadRejectsMalformedLines) {
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  std::string good = metricsLine({1, 3.0, 1e-3, 10}) + "\n";
  struct Case {
    std::string line;
    std::string message;
  } cases[] = {
      {"not json", "not valid JSON"},
      {"[1, 2]", "not a JSON object"},
      {R"({"loss":1,"lr":1,"tokens_per_s":1})",
       "field 'step' is missing or not an integer"},
      {R"({"step":1.5,"loss":1,"lr":1,"tokens_per_s":1})",
       "field 'step' is missing or not an integer"},
      {R"({"step":2,"loss":"low","lr":1,"tokens_per_s":1})",
       "field 'loss' is missing or not a number"},
      {R"({"step":2,"loss":1,"tokens_per_s":1})",
       "field 'lr' is missing or not a number"},
      {R"({"step":2,"loss":1,"lr":1,"tokens_per_s":1,"grad_norm":"big"})",
       "field 'grad_norm' is not a number"},
      {R"({"step":2,"loss":1,"lr":1,"tokens_per_s":1,"tokens_seen":1.5})",
       "field 'tokens_seen' is not an integer"},
  };
  for (const Case &c : cases) {
    // Line 3: the blank line 2 is skipped but counted.
    writeText(path, good + "\n" + c.line + "\n" + good);
    EXPECT_THAT(errorMessage([&] { MetricsLog::read(path); }),
                HasSubstr(path + ":3: not a metrics record: " + c.message));
  }
  EXPECT_THAT(errorMessage([&] { MetricsLog::read(dir.file("missing")); }),
              HasSubstr(dir.file("missing")));
}

TEST(MetricsLogTest, TruncateAfterKeepsEarlierLinesByteForByte) {
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  std::string kept;
  {
    MetricsLog log(path, false);
    for (int step = 1; step <= 10; ++step) {
      log.write({step, 10.0 / step, 1e-4 * step, 1000.5 * step});
      if (step <= 6)
        kept +=
            metricsLine({step, 10.0 / step, 1e-4 * step, 1000.5 * step}) + "\n";
    }
  }
  writeText(path, readText(path) + R"({"step":11,)"); // torn by a crash
  MetricsLog::truncateAfter(path, 6);
  EXPECT_EQ(readText(path), kept);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"metrics.jsonl"});
  MetricsLog::truncateAfter(path, 100); // nothing after step 100
  EXPECT_EQ(readText(path), kept);
  MetricsLog::truncateAfter(path, 0);
  EXPECT_EQ(readText(path), "");
  EXPECT_THAT(
      errorMessage([&] { MetricsLog::truncateAfter(dir.file("none"), 1); }),
      HasSubstr(dir.file("none")));
}

TEST(MetricsLogTest, UnwritablePathNamesPathAndReason) {
  TempDir dir;
  // Tests run as root, where permissions stop nothing: a missing directory
  // does.
  std::string path = dir.file("missing/metrics.jsonl");
  for (bool append : {false, true})
    EXPECT_THAT(errorMessage([&] { MetricsLog log(path, append); }),
                HasSubstr(path + ": cannot open the metrics log for writing: "
                                 "No such file or directory"));
}

//===----------------------------------------------------------------------===//
// The loss-curve picture
//===----------------------------------------------------------------------===//

/// The coordinate pairs of the polyline of class `name` in `svg`; fails the
/// test and returns none if there is no such polyline.
std::vector<std::pair<double, double>> polylinePoints(const std::string &svg,
                                                      const std::string &name) {
  // Plain searches, not std::regex: libstdc++'s matcher recurses once per
  // character, and a long run's points overflow the stack under ASan.
  const std::string pointsAttr = " points=\"";
  std::size_t tag = svg.find("<polyline class=\"" + name + "\"");
  std::size_t tagEnd = svg.find('>', tag);
  std::size_t begin = svg.find(pointsAttr, tag);
  if (tag == std::string::npos || begin == std::string::npos ||
      begin > tagEnd) {
    ADD_FAILURE() << "no polyline of class " << name;
    return {};
  }
  begin += pointsAttr.size();
  std::vector<std::pair<double, double>> points;
  std::string text = svg.substr(begin, svg.find('"', begin) - begin);
  for (std::size_t pos = 0; pos < text.size();) {
    std::size_t end = text.find(' ', pos);
    if (end == std::string::npos)
      end = text.size();
    std::string pair = text.substr(pos, end - pos);
    std::size_t comma = pair.find(',');
    EXPECT_NE(comma, std::string::npos) << pair;
    points.emplace_back(std::stod(pair.substr(0, comma)),
                        std::stod(pair.substr(comma + 1)));
    pos = end + 1;
  }
  return points;
}

/// Checks what every picture must be: one SVG element, 800x400, with no
/// non-finite number written into it.
void expectWellFormed(const std::string &svg) {
  EXPECT_THAT(svg, StartsWith("<svg xmlns=\"http://www.w3.org/2000/svg\" "
                              "width=\"800\" height=\"400\""));
  EXPECT_THAT(svg, EndsWith("</svg>\n"));
  EXPECT_EQ(svg.find("<svg"), svg.rfind("<svg"));
  EXPECT_THAT(svg, Not(ContainsRegex("[\"(, -](nan|inf)")));
  // Every element is closed: as many "<" as ">" and no "<" inside a tag.
  std::size_t depth = 0;
  for (char c : svg) {
    if (c == '<') {
      ASSERT_EQ(depth++, 0u);
    } else if (c == '>') {
      ASSERT_EQ(depth--, 1u);
    }
  }
}

TEST(LossCurveTest, PlotsEveryPointOfASmallRun) {
  std::vector<std::pair<std::int64_t, double>> points = {
      {1, 10.9}, {2, 8.1}, {3, 6.5}, {4, 5.0}, {5, 4.2}};
  std::string svg = lossCurveSvg(points, "gpt2 on shakespeare");
  expectWellFormed(svg);
  EXPECT_THAT(svg, HasSubstr(">gpt2 on shakespeare</text>"));
  auto plotted = polylinePoints(svg, "loss");
  ASSERT_EQ(plotted.size(), 5u);
  // Steps run left to right, falling losses go down the picture.
  for (std::size_t i = 1; i < plotted.size(); ++i) {
    EXPECT_GT(plotted[i].first, plotted[i - 1].first);
    EXPECT_GT(plotted[i].second, plotted[i - 1].second);
  }
  // Few points get dots and no smoothing.
  EXPECT_THAT(svg, HasSubstr("<circle"));
  EXPECT_THAT(svg, Not(HasSubstr("class=\"smoothed\"")));
  // Rounded ticks: losses 10.9..4.2 get 4, 6, ..., 12.
  for (const char *label : {">4</text>", ">6</text>", ">12</text>"})
    EXPECT_THAT(svg, HasSubstr(label));
}

// The validation losses are a curve of their own with a dot each, inside
// the axes (which cover them) and named in the legend.
TEST(LossCurveTest, PlotsTheValidationLoss) {
  std::vector<std::pair<std::int64_t, double>> points = {
      {1, 10.9}, {2, 8.1}, {3, 6.5}, {4, 5.0}, {5, 4.2}};
  std::string svg = lossCurveSvg(points, "run", {{2, 9.0}, {5, 3.1}});
  expectWellFormed(svg);
  auto val = polylinePoints(svg, "validation");
  ASSERT_EQ(val.size(), 2u);
  auto loss = polylinePoints(svg, "loss");
  EXPECT_DOUBLE_EQ(val[1].first, loss[4].first);
  // 3.1 is below every training loss: lower in the picture, still inside.
  EXPECT_GT(val[1].second, loss[4].second);
  EXPECT_LE(val[1].second, 348);
  EXPECT_THAT(svg, HasSubstr(">validation loss</text>"));
  EXPECT_THAT(svg, HasSubstr(">2</text>")); // the axis reaches down to 3.1
  // Without validation points there is no such curve.
  EXPECT_THAT(lossCurveSvg(points, "run"),
              Not(HasSubstr("class=\"validation\"")));
}

// The learning rate on its own axis: a dashed curve, labelled at the right.
TEST(LossCurveTest, PlotsTheLearningRateOnASecondAxis) {
  std::vector<std::pair<std::int64_t, double>> points = {
      {1, 6.0}, {2, 5.0}, {3, 4.5}, {4, 4.2}};
  LossCurveOptions options;
  options.learningRate = {{1, 5e-4}, {2, 1e-3}, {3, 7e-4}, {4, 1e-4}};
  std::string svg = lossCurveSvg(points, "run", options);
  expectWellFormed(svg);
  auto rate = polylinePoints(svg, "lr");
  ASSERT_EQ(rate.size(), 4u);
  // The peak rate is highest in the picture; the axis starts at 0.
  EXPECT_LT(rate[1].second, rate[0].second);
  EXPECT_GT(rate[3].second, rate[2].second);
  EXPECT_THAT(svg, HasSubstr(">learning rate</text>"));
  EXPECT_THAT(svg, HasSubstr(">0.0010</text>"));
}

// --log-scale: the loss axis is logarithmic, ticked at 1, 2, 5 x 10^k; a
// loss that is not positive cannot be drawn and is counted.
TEST(LossCurveTest, LogScaleTicksPowersOfTen) {
  std::vector<std::pair<std::int64_t, double>> points = {
      {1, 80}, {2, 9}, {3, 1.5}, {4, 0.3}, {5, 0}};
  LossCurveOptions options;
  options.logScale = true;
  std::string svg = lossCurveSvg(points, "run", options);
  expectWellFormed(svg);
  for (const char *label :
       {">0.5</text>", ">1</text>", ">10</text>", ">50</text>"})
    EXPECT_THAT(svg, HasSubstr(label));
  EXPECT_THAT(svg, HasSubstr("1 non-positive or non-finite loss skipped"));
  EXPECT_THAT(svg, HasSubstr(">loss (log scale)</text>"));
  // Equal ratios are equal distances: 80 -> 9 and 9 -> ~1.01 nearly match,
  // 9 -> 1.5 is log10(6) of a decade.
  auto plotted = polylinePoints(svg, "loss");
  ASSERT_EQ(plotted.size(), 4u);
  double decade =
      (plotted[1].second - plotted[0].second) / std::log10(80.0 / 9);
  EXPECT_NEAR(plotted[2].second - plotted[1].second,
              decade * std::log10(9 / 1.5), 0.2);
}

TEST(LossCurveTest, PlotsASinglePoint) {
  std::string svg = lossCurveSvg({{500, 3.25}}, "one step");
  expectWellFormed(svg);
  EXPECT_EQ(polylinePoints(svg, "loss").size(), 1u);
  EXPECT_THAT(svg, HasSubstr("<circle"));
  EXPECT_THAT(svg, HasSubstr(">500</text>"));
}

TEST(LossCurveTest, SkipsNonFiniteLosses) {
  std::string svg = lossCurveSvg(
      {{1, 5.0}, {2, NAN}, {3, 4.0}, {4, INFINITY}, {5, 3.5}}, "diverging");
  expectWellFormed(svg);
  EXPECT_THAT(svg, HasSubstr(">diverging (2 non-finite losses skipped)<"));
  EXPECT_EQ(polylinePoints(svg, "loss").size(), 3u);

  std::string none = lossCurveSvg({{1, NAN}}, "");
  expectWellFormed(none);
  EXPECT_THAT(none, HasSubstr(">loss (1 non-finite loss skipped)<"));
  EXPECT_THAT(none, HasSubstr("no finite loss values to plot"));
  EXPECT_THAT(none, Not(HasSubstr("<polyline")));
  expectWellFormed(lossCurveSvg({}, "empty"));
}

TEST(LossCurveTest, DecimatesALongRunKeepingSpikes) {
  std::vector<std::pair<std::int64_t, double>> points;
  for (std::int64_t step = 1; step <= 100000; ++step)
    points.emplace_back(step, 2.0 + 1.0 / std::sqrt(double(step)) +
                                  0.05 * std::sin(double(step)));
  points[54321].second = 20.0; // one spike among 100 000 steps
  std::string svg = lossCurveSvg(points, "long run");
  expectWellFormed(svg);
  auto plotted = polylinePoints(svg, "loss");
  EXPECT_LE(plotted.size(), kMaxPlottedPoints);
  EXPECT_GE(plotted.size(), kMaxPlottedPoints / 2);
  for (std::size_t i = 1; i < plotted.size(); ++i)
    ASSERT_GE(plotted[i].first, plotted[i - 1].first);
  // Losses up to 20 get an axis from 0 to 20: the spike is the highest point
  // and touches the top of the plot (y = 44).
  double top = 1e9;
  for (const auto &[x, y] : plotted)
    top = std::min(top, y);
  EXPECT_DOUBLE_EQ(top, 44.0);
  auto smoothedPoints = polylinePoints(svg, "smoothed");
  EXPECT_GT(smoothedPoints.size(), 100u);
  EXPECT_LE(smoothedPoints.size(), kMaxPlottedPoints);
  EXPECT_THAT(svg, Not(HasSubstr("<circle")));
  EXPECT_THAT(svg, HasSubstr(">100k</text>")); // steps in thousands
  EXPECT_LT(svg.size(), 100000u);
}

TEST(LossCurveTest, SortsStepsAndEscapesTheTitle) {
  std::string svg =
      lossCurveSvg({{3, 1.0}, {1, 3.0}, {2, 2.0}}, "loss < 2 & \"fast\"");
  expectWellFormed(svg);
  EXPECT_THAT(svg, HasSubstr(">loss &lt; 2 &amp; &quot;fast&quot;</text>"));
  auto plotted = polylinePoints(svg, "loss");
  ASSERT_EQ(plotted.size(), 3u);
  EXPECT_LT(plotted[0].first, plotted[1].first);
  EXPECT_LT(plotted[1].first, plotted[2].first);
}

TEST(LossCurveTest, WritesTheFileAtomically) {
  TempDir dir;
  std::string path = dir.file("loss.svg");
  std::vector<std::pair<std::int64_t, double>> points = {{1, 3.0}, {2, 2.0}};
  writeLossCurveSvg(path, points, "run");
  EXPECT_EQ(readText(path), lossCurveSvg(points, "run"));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"loss.svg"});
  EXPECT_THAT(errorMessage([&] {
                writeLossCurveSvg(dir.file("missing/loss.svg"), points, "");
              }),
              HasSubstr(dir.file("missing/loss.svg")));
}

//===----------------------------------------------------------------------===//
// The progress bar
//===----------------------------------------------------------------------===//

TEST(ProgressTest, FormatsDurations) {
  EXPECT_EQ(formatDuration(0), "0s");
  EXPECT_EQ(formatDuration(12.4), "12s");
  EXPECT_EQ(formatDuration(59.4), "59s");
  EXPECT_EQ(formatDuration(59.6), "1m00s");
  EXPECT_EQ(formatDuration(83), "1m23s");
  EXPECT_EQ(formatDuration(3599), "59m59s");
  EXPECT_EQ(formatDuration(3720), "1h02m");
  EXPECT_EQ(formatDuration(100 * 3600 + 5 * 60), "100h05m");
  EXPECT_EQ(formatDuration(-1), "--");
  EXPECT_EQ(formatDuration(NAN), "--");
  EXPECT_EQ(formatDuration(INFINITY), "--");
}

TEST(ProgressTest, FormatsRates) {
  EXPECT_EQ(formatRate(0), "0");
  EXPECT_EQ(formatRate(950), "950");
  EXPECT_EQ(formatRate(999.4), "999");
  EXPECT_EQ(formatRate(999.6), "1.0k");
  EXPECT_EQ(formatRate(45200), "45.2k");
  EXPECT_EQ(formatRate(999960), "1.0M");
  EXPECT_EQ(formatRate(1.3e6), "1.3M");
  EXPECT_EQ(formatRate(2.5e9), "2.5G");
  EXPECT_EQ(formatRate(1.5e15), "1500.0T");
  EXPECT_EQ(formatRate(-1), "--");
  EXPECT_EQ(formatRate(NAN), "--");
}

TEST(ProgressTest, FormatsTheLine) {
  EXPECT_EQ(progressLine(120, 1000, 3.2144, 45200, 83),
            "step  120/1000 [##....................] loss 3.214 | 45.2k tok/s "
            "| ETA 1m23s");
  EXPECT_EQ(progressLine(1000, 1000, 2.5, 45200, 0),
            "step 1000/1000 [######################] loss 2.500 | 45.2k tok/s "
            "| ETA 0s");
  EXPECT_EQ(progressLine(3, 10, NAN, 12, NAN, 60),
            "step  3/10 [#.....] loss nan | 12 tok/s | ETA --");
}

TEST(ProgressTest, ShowsTheDetailsAfterTheLoss) {
  EXPECT_EQ(progressLine(3, 10, 2.5, 12, 4, 200, "lr 0.001 | norm 1.5"),
            "step  3/10 [###############..................................."
            "] loss 2.500 | lr 0.001 | norm 1.5 | 12 tok/s | ETA 4s");
}

TEST(ProgressTest, LineFitsTheTerminal) {
  // The bar stays put and fits, whatever the numbers.
  for (int columns : {40, 60, 80, 120, 300}) {
    std::size_t bracket = std::string::npos;
    for (std::int64_t step : {1, 500, 99999, 100000}) {
      std::string line =
          progressLine(step, 100000, 11.5 - step * 1e-4, 1.23e6, 7200, columns);
      EXPECT_LE(line.size(), static_cast<std::size_t>(columns - 1)) << line;
      if (columns >= 80) {
        ASSERT_NE(line.find('['), std::string::npos) << line;
        if (bracket == std::string::npos)
          bracket = line.find(']');
        EXPECT_EQ(line.find(']'), bracket) << line;
      }
    }
  }
  // No room for a bar: the numbers alone; a wide terminal caps the bar.
  EXPECT_EQ(progressLine(5, 10, 1.0, 100, 5, 50),
            "step  5/10 loss 1.000 | 100 tok/s | ETA 5s");
  std::string wide = progressLine(5, 10, 1.0, 100, 5, 300);
  EXPECT_EQ(wide.find(']') - wide.find('[') - 1, 50u) << wide;
}

/// What a ProgressBar drawing on a temporary file printed.
class ProgressBarOutput {
public:
  ProgressBarOutput() : file_(std::tmpfile()) {}
  ~ProgressBarOutput() { std::fclose(file_); }
  std::FILE *file() { return file_; }
  std::string text() {
    std::fflush(file_);
    std::rewind(file_);
    std::string out;
    int c;
    while ((c = std::fgetc(file_)) != EOF)
      out += static_cast<char>(c);
    return out;
  }

private:
  std::FILE *file_;
};

TEST(ProgressBarTest, DisabledPrintsNothing) {
  ProgressBarOutput out;
  {
    ProgressBar bar(10, 1, /*enabled=*/false, out.file());
    for (int step = 1; step <= 10; ++step)
      bar.update(step, 2.0, 100);
    bar.finish();
  }
  EXPECT_EQ(out.text(), "");
}

TEST(ProgressBarTest, RedrawsOneLineAndEndsIt) {
  ProgressBarOutput out;
  {
    ProgressBar bar(10, 1, /*enabled=*/true, out.file());
    for (int step = 1; step <= 10; ++step)
      bar.update(step, 2.0, 1500);
    bar.finish();
    bar.finish(); // does nothing more
  }
  std::string text = out.text();
  EXPECT_THAT(text, StartsWith("\rstep  1/10 ["));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  std::string last = text.substr(text.rfind('\r') + 1);
  EXPECT_THAT(last, StartsWith("step 10/10 [#"));
  EXPECT_THAT(last, EndsWith("] loss 2.000 | 1.5k tok/s | ETA 0s\n"));
}

TEST(ProgressBarTest, PrintsMessagesAboveTheBar) {
  ProgressBarOutput out;
  {
    ProgressBar bar(100, 51, /*enabled=*/true, out.file()); // resumed at 51
    bar.update(51, 3.0, 10);
    bar.printAbove("saved checkpoint step 51");
    // The destructor ends the line of an unfinished bar.
  }
  std::string text = out.text();
  EXPECT_THAT(text, HasSubstr("\rsaved checkpoint step 51\n\rstep  51/100 ["));
  EXPECT_THAT(text, EndsWith("\n"));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2) << text;

  ProgressBarOutput plain;
  {
    ProgressBar bar(100, 1, /*enabled=*/false, plain.file());
    bar.update(1, 3.0, 10);
    bar.printAbove("saved checkpoint step 1");
  }
  EXPECT_EQ(plain.text(), "saved checkpoint step 1\n");
}

} // namespace
