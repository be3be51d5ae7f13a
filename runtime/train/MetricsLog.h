//===- MetricsLog.h - The metrics file of a run -----------------*- C++ -*-===//
//
// One JSON line per step, read back on resume. JSON has no NaN or
// infinity, so a non-finite value is written as null and read back as NaN.
//
//   {"step":1,"loss":5.6,"lr":0.0003,"tokens_per_s":12345.6,
//    "grad_norm":1.9,"elapsed_s":0.41,"tokens_seen":4096,"mfu":0.012}
//
// mfu is a prediction's ratio: the cost model's FLOPs of the step over its
// seconds and the target's peak rate (null where the plan has neither).
// A step that evaluated the model on the validation data also has
// "val_loss" and "val_perplexity" (exp of the loss) at the end.
// (grad_norm, elapsed_s and tokens_seen are newer: a line without them
// reads as NaN, NaN and -1; one without val_loss as NaN.)
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_METRICSLOG_H
#define KILN_RUNTIME_TRAIN_METRICSLOG_H

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace kiln::rt {

/// One line of the metrics file.
struct MetricRecord {
  std::int64_t step = 0;
  double loss = 0;
  double lr = 0;
  double tokensPerSecond = 0;
  /// The global gradient norm before clipping (NaN: not known).
  double gradNorm = 0;
  /// Wall seconds since the run began, resumed parts included.
  double elapsedSeconds = 0;
  /// Data tokens trained on so far (padding not counted; -1: not known).
  std::int64_t tokensSeen = 0;
  /// Model FLOPs utilisation: the compiler's cost-model FLOPs of the step
  /// per second over the peak rate of the target it compiled for (NaN: not
  /// known; a line without it reads as NaN).
  double mfu = std::numeric_limits<double>::quiet_NaN();
  /// The mean loss over the validation tokens after this step (NaN: this
  /// step did not evaluate).
  double valLoss = std::numeric_limits<double>::quiet_NaN();

  bool operator==(const MetricRecord &other) const {
    auto same = [](double a, double b) {
      return a == b || (std::isnan(a) && std::isnan(b));
    };
    return step == other.step && same(loss, other.loss) && same(lr, other.lr) &&
           same(tokensPerSecond, other.tokensPerSecond) &&
           same(gradNorm, other.gradNorm) &&
           same(elapsedSeconds, other.elapsedSeconds) &&
           tokensSeen == other.tokensSeen && same(mfu, other.mfu) &&
           same(valLoss, other.valLoss);
  }
};

/// The JSON line for `record`, without the newline: keys step, loss, lr,
/// tokens_per_s, grad_norm, elapsed_s, tokens_seen, mfu (and val_loss,
/// val_perplexity when valLoss is not NaN) in that order, each number in
/// the shortest form that reads back as the same double, null for a
/// non-finite one.
std::string metricsLine(const MetricRecord &record);

/// The records as CSV: a header (step, loss, lr, tokens_per_s, grad_norm,
/// elapsed_s, tokens_seen, mfu, val_loss, val_perplexity), then a row per
/// record, each number as in metricsLine and an empty field where it is
/// not known.
std::string metricsCsv(const std::vector<MetricRecord> &records);

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
  void write(const MetricRecord &record);

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

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_METRICSLOG_H
