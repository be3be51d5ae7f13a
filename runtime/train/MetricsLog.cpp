//===- MetricsLog.cpp - The metrics file of a run -------------------------===//

#include "runtime/train/MetricsLog.h"

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
#include <sys/stat.h>
#include <unistd.h>

namespace kiln::rt {

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
  // (Newer fields: absent in older runs' lines.)
  for (Field field :
       {Field{"grad_norm", record.gradNorm},
        Field{"elapsed_s", record.elapsedSeconds}, Field{"mfu", record.mfu},
        Field{"val_loss", record.valLoss}})
    if (!object.contains(field.key))
      field.value = std::numeric_limits<double>::quiet_NaN();
    else if (!numberField(object, field.key, field.value))
      return fmt::format("field '{}' is not a number", field.key);
  record.tokensSeen = -1;
  if (auto seen = object.find("tokens_seen"); seen != object.end()) {
    if (!seen->is_number_integer())
      return "field 'tokens_seen' is not an integer";
    record.tokensSeen = seen->get<std::int64_t>();
  }
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
  std::string validation;
  if (!std::isnan(record.valLoss))
    validation = fmt::format(R"(,"val_loss":{},"val_perplexity":{})",
                             jsonNumber(record.valLoss),
                             jsonNumber(std::exp(record.valLoss)));
  return fmt::format(
      R"({{"step":{},"loss":{},"lr":{},"tokens_per_s":{},"grad_norm":{},)"
      R"("elapsed_s":{},"tokens_seen":{},"mfu":{}{}}})",
      record.step, jsonNumber(record.loss), jsonNumber(record.lr),
      jsonNumber(record.tokensPerSecond), jsonNumber(record.gradNorm),
      jsonNumber(record.elapsedSeconds), record.tokensSeen,
      jsonNumber(record.mfu), validation);
}

std::string metricsCsv(const std::vector<MetricRecord> &records) {
  auto number = [](double value) {
    return std::isfinite(value) ? fmt::format("{}", value) : std::string();
  };
  std::string csv = "step,loss,lr,tokens_per_s,grad_norm,elapsed_s,"
                    "tokens_seen,mfu,val_loss,val_perplexity\n";
  for (const MetricRecord &r : records)
    csv += fmt::format(
        "{},{},{},{},{},{},{},{},{},{}\n", r.step, number(r.loss), number(r.lr),
        number(r.tokensPerSecond), number(r.gradNorm), number(r.elapsedSeconds),
        r.tokensSeen >= 0 ? std::to_string(r.tokensSeen) : std::string(),
        number(r.mfu), number(r.valLoss), number(std::exp(r.valLoss)));
  return csv;
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

void MetricsLog::write(const MetricRecord &record) {
  // One write() per line: a reader never sees half a line unless the run
  // dies inside the call.
  writeAll(fd_, metricsLine(record) + "\n", path_);
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

} // namespace kiln::rt
