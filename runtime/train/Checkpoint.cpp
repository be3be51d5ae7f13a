//===- Checkpoint.cpp - Checkpoints of a training run ---------------------===//

#include "runtime/train/Checkpoint.h"
#include "runtime/train/Schedule.h"

#include "runtime/Error.h"
#include "runtime/io/AtomicFile.h"
#include "runtime/io/InputFile.h"
#include "runtime/io/Sha256.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>

namespace fs = std::filesystem;
using nlohmann::json;

namespace kiln::rt {

namespace {

constexpr const char *kCheckpointPrefix = "checkpoint-";

std::string readText(const fs::path &path) {
  std::vector<std::byte> bytes = InputFile(path.string()).readAll();
  return {reinterpret_cast<const char *>(bytes.data()), bytes.size()};
}

std::string describe(const json &value) {
  if (value.is_string())
    return fmt::format("the string \"{}\"", value.get<std::string>());
  return value.dump();
}

/// Typed, checked access to the fields of a trainer state; every error names
/// the file and the field ("data_position.offset").
class StateReader {
public:
  StateReader(const json &object, std::string path, std::string prefix = "")
      : object(object), path(std::move(path)), prefix(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string &key,
                         const std::string &problem) const {
    throw Error(fmt::format("{}: field '{}{}' {}", path, prefix, key, problem));
  }

  const json &get(const std::string &key) const {
    auto it = object.find(key);
    if (it == object.end())
      fail(key, "is missing");
    return *it;
  }

  bool has(const std::string &key) const { return object.contains(key); }

  int64_t integer(const std::string &key, int64_t min, int64_t max) const {
    const json &value = get(key);
    if (!value.is_number_integer())
      fail(key, "must be an integer, got " + describe(value));
    if (value.is_number_unsigned() &&
        value.get<uint64_t>() > static_cast<uint64_t>(max))
      fail(key, fmt::format("must be at most {}, got {}", max, value.dump()));
    int64_t number = value.get<int64_t>();
    if (number < min && max == std::numeric_limits<int64_t>::max())
      fail(key, fmt::format("must be an integer >= {}, got {}", min, number));
    if (number < min || number > max)
      fail(key, fmt::format("must be in [{}, {}], got {}", min, max, number));
    return number;
  }

  uint64_t unsignedInteger(const std::string &key) const {
    const json &value = get(key);
    if (!value.is_number_unsigned() &&
        !(value.is_number_integer() && value.get<int64_t>() >= 0))
      fail(key, "must be a non-negative integer, got " + describe(value));
    return value.get<uint64_t>();
  }

  double number(const std::string &key, double min) const {
    const json &value = get(key);
    if (!value.is_number())
      fail(key, "must be a number, got " + describe(value));
    double number = value.get<double>();
    if (!std::isfinite(number) || number < min)
      fail(key, fmt::format("must be a finite number >= {}, got {}", min,
                            value.dump()));
    return number;
  }

  std::string string(const std::string &key) const {
    const json &value = get(key);
    if (!value.is_string())
      fail(key, "must be a string, got " + describe(value));
    return value.get<std::string>();
  }

  StateReader object_(const std::string &key) const {
    const json &value = get(key);
    if (!value.is_object())
      fail(key, "must be an object, got " + describe(value));
    return StateReader(value, path, prefix + key + ".");
  }

  const json &object;
  std::string path, prefix;
};

bool isHexDigest(const std::string &text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

/// The checkpoint `latest` in `outDir` names, if the file exists.
std::optional<fs::path> latestNamed(const fs::path &outDir) {
  fs::path file = outDir / kLatestFile;
  std::error_code ec;
  if (!fs::is_regular_file(file, ec))
    return std::nullopt;
  std::string name = readText(file);
  name.erase(name.find_last_not_of(" \n\r\t") + 1);
  if (name.empty() || name.find('/') != std::string::npos || name == "." ||
      name == "..")
    throw Error(fmt::format("{}: does not name a checkpoint directory of {} "
                            "(it holds \"{}\")",
                            file.string(), outDir.string(), name));
  return outDir / name;
}

json settingsJson(const RunSettings &s) {
  json settings = {{"steps", s.steps},
                   {"lr", s.lr},
                   {"warmup_steps", s.warmupSteps},
                   {"min_lr_ratio", s.minLrRatio},
                   {"lr_schedule", s.lrSchedule},
                   {"decay_fraction", s.decayFraction},
                   {"seed", s.seed},
                   {"save_every", s.saveEvery},
                   {"keep", s.keep},
                   {"data", s.data},
                   {"val_data", s.valData},
                   {"batch", s.batch},
                   {"seq_len", s.seqLen},
                   {"precision", s.precision},
                   {"weight_decay", s.weightDecay},
                   {"grad_clip", s.gradClip},
                   {"beta1", s.beta1},
                   {"beta2", s.beta2},
                   {"eps", s.eps}};
  // (Unset, -1, in settings read from an older run.)
  if (s.evalEvery >= 0)
    settings["eval_every"] = s.evalEvery;
  if (s.evalTokens >= 0)
    settings["eval_tokens"] = s.evalTokens;
  return settings;
}

RunSettings readSettings(const StateReader &r) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  RunSettings s;
  s.steps = r.integer("steps", 1, kMax);
  s.lr = r.number("lr", 0);
  s.warmupSteps = r.integer("warmup_steps", 0, kMax);
  s.minLrRatio = r.number("min_lr_ratio", 0);
  if (s.minLrRatio > 1)
    r.fail("min_lr_ratio",
           fmt::format("must be at most 1, got {}", s.minLrRatio));
  // (Recorded since the schedules and AdamW's betas became settings.)
  if (r.has("lr_schedule")) {
    s.lrSchedule = r.string("lr_schedule");
    if (!parseLrDecay(s.lrSchedule))
      r.fail("lr_schedule",
             fmt::format("must be cosine, linear, constant or wsd, got \"{}\"",
                         s.lrSchedule));
  }
  if (r.has("decay_fraction")) {
    s.decayFraction = r.number("decay_fraction", 0);
    if (!(s.decayFraction > 0 && s.decayFraction <= 1))
      r.fail("decay_fraction",
             fmt::format("must be in (0, 1], got {}", s.decayFraction));
  }
  s.seed = r.unsignedInteger("seed");
  s.saveEvery = r.integer("save_every", 0, kMax);
  s.keep = r.integer("keep", 0, kMax);
  // (An array of strings: the files a run reads.)
  auto fileList = [](const json &files) {
    return files.is_array() &&
           std::all_of(files.begin(), files.end(),
                       [](const json &item) { return item.is_string(); });
  };
  const json &data = r.get("data");
  if (!fileList(data) || data.empty())
    r.fail("data",
           "must be a non-empty array of file names, got " + describe(data));
  s.data = data.get<std::vector<std::string>>();
  // (Recorded since runs evaluate.)
  if (r.has("val_data")) {
    const json &val = r.get("val_data");
    if (!fileList(val))
      r.fail("val_data",
             "must be an array of file names, got " + describe(val));
    s.valData = val.get<std::vector<std::string>>();
  }
  if (r.has("eval_every"))
    s.evalEvery = r.integer("eval_every", 0, kMax);
  if (r.has("eval_tokens"))
    s.evalTokens = r.integer("eval_tokens", 1, kMax);
  s.batch = r.integer("batch", 1, kMax);
  s.seqLen = r.integer("seq_len", 1, kMax);
  s.precision = r.string("precision");
  if (s.precision != "bf16" && s.precision != "fp32")
    r.fail("precision", fmt::format("must be \"bf16\" or \"fp32\", got \"{}\"",
                                    s.precision));
  s.weightDecay = r.number("weight_decay", 0);
  s.gradClip = r.number("grad_clip", 0);
  for (auto [key, field] : {std::pair{"beta1", &RunSettings::beta1},
                            std::pair{"beta2", &RunSettings::beta2},
                            std::pair{"eps", &RunSettings::eps}})
    if (r.has(key))
      s.*field = r.number(key, 0);
  return s;
}

/// Keys of a Hugging Face config that do not change the maths of training.
bool ignoredConfigKey(const std::string &key) {
  static const std::set<std::string> kIgnored = {
      "_name_or_path", "transformers_version", "torch_dtype",
      "use_cache",     "output_attentions",    "output_hidden_states",
      "return_dict",   "task_specific_params", "_attn_implementation",
      "auto_map"};
  return kIgnored.count(key) || (key.size() > 9 && key.ends_with("_token_id"));
}

} // namespace

//===----------------------------------------------------------------------===//
// The trainer state
//===----------------------------------------------------------------------===//

TrainerState readTrainerState(const fs::path &path) {
  std::string text = readText(path);
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    throw Error(fmt::format("{}: not valid JSON", path.string()));
  if (!root.is_object())
    throw Error(fmt::format("{}: expected a JSON object, got {}", path.string(),
                            describe(root)));
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  StateReader r(root, path.string());
  TrainerState state;
  state.format =
      r.has("format") ? static_cast<int>(r.integer("format", 1, kMax)) : 1;
  if (state.format > kTrainerStateFormat)
    r.fail("format", fmt::format("is {}, newer than this Kiln reads ({})",
                                 state.format, kTrainerStateFormat));
  state.step = r.integer("step", 1, kMax);
  state.batch = r.integer("batch", 1, kMax);
  state.seqLen = r.integer("seq_len", 1, kMax);
  state.seed = r.unsignedInteger("seed");
  StateReader position = r.object_("data_position");
  state.position = {position.unsignedInteger("shard"),
                    position.unsignedInteger("offset"),
                    position.unsignedInteger("epoch"),
                    {}};
  if (position.has("pending")) {
    const json &pending = position.get("pending");
    if (!pending.is_array())
      position.fail("pending", "must be an array, got " + describe(pending));
    for (std::size_t i = 0; i < pending.size(); ++i) {
      const json &piece = pending[i];
      bool ok = piece.is_array() && piece.size() == 4;
      for (std::size_t j = 0; ok && j < 4; ++j)
        ok = piece[j].is_number_unsigned() ||
             (piece[j].is_number_integer() && piece[j].get<int64_t>() >= 0);
      if (!ok || piece[3].get<uint64_t>() > 1 || piece[2].get<uint64_t>() == 0)
        position.fail("pending",
                      fmt::format("[{}] must be [shard, offset, length >= 1, "
                                  "last 0 or 1], got {}",
                                  i, piece.dump()));
      state.position.pending.push_back(
          {piece[0].get<uint64_t>(), piece[1].get<uint64_t>(),
           piece[2].get<uint64_t>(), piece[3].get<uint64_t>() == 1});
    }
  }
  if (state.format >= 2) {
    state.runId = r.string("run_id");
    if (state.runId.empty())
      r.fail("run_id", "must not be empty");
    state.settings = readSettings(r.object_("settings"));
    if (state.settings->batch != state.batch ||
        state.settings->seqLen != state.seqLen)
      r.fail("settings",
             fmt::format("say batch {} x {} tokens, the state "
                         "{} x {}",
                         state.settings->batch, state.settings->seqLen,
                         state.batch, state.seqLen));
    if (state.step > state.settings->steps)
      r.fail("step", fmt::format("({}) is past the run's steps ({})",
                                 state.step, state.settings->steps));
    state.model = r.object_("model").object;
    StateReader files = r.object_("files");
    if (files.object.empty())
      r.fail("files", "must list the checkpoint's files");
    for (const auto &[name, digest] : files.object.items()) {
      if (name.empty() || name.find('/') != std::string::npos || name == "." ||
          name == "..")
        r.fail("files", fmt::format("names '{}', which is not a file of the "
                                    "checkpoint",
                                    name));
      if (!digest.is_string() || !isHexDigest(digest.get<std::string>()))
        files.fail(name, "must be a SHA-256 (64 lowercase hex digits), got " +
                             describe(digest));
      state.checksums[name] = digest.get<std::string>();
    }
    if (!state.checksums.count(kModelFile))
      r.fail("files", fmt::format("does not list {}", kModelFile));
    // The optimizer state: one file, or (ZeRO-1) a manifest of shards.
    if (!state.checksums.count(kOptimizerFile) &&
        !state.checksums.count(kOptimizerManifestFile))
      r.fail("files", fmt::format("lists neither {} nor {}", kOptimizerFile,
                                  kOptimizerManifestFile));
  }
  return state;
}

std::string trainerStateJson(const TrainerState &state) {
  json files = json::object();
  for (const auto &[name, digest] : state.checksums)
    files[name] = digest;
  json root = {{"format", kTrainerStateFormat},
               {"run_id", state.runId},
               {"step", state.step},
               {"batch", state.batch},
               {"seq_len", state.seqLen},
               {"seed", state.seed},
               {"data_position",
                {{"shard", state.position.shard},
                 {"offset", state.position.offset},
                 {"epoch", state.position.epoch}}},
               {"model", state.model},
               {"files", files}};
  if (!state.position.pending.empty()) {
    json pending = json::array();
    for (const DataPosition::Piece &piece : state.position.pending)
      pending.push_back(
          {piece.shard, piece.offset, piece.length, piece.last ? 1 : 0});
    root["data_position"]["pending"] = std::move(pending);
  }
  if (state.settings)
    root["settings"] = settingsJson(*state.settings);
  return root.dump(2) + "\n";
}

std::string newRunId() {
  std::random_device device;
  std::uniform_int_distribution<uint64_t> pick;
  return fmt::format("{:016x}", pick(device));
}

//===----------------------------------------------------------------------===//
// Finding and checking checkpoints
//===----------------------------------------------------------------------===//

std::vector<CheckpointInfo> listCheckpoints(const fs::path &outDir) {
  std::vector<CheckpointInfo> found;
  std::error_code ec;
  if (!fs::is_directory(outDir, ec))
    return found;
  for (const auto &entry : fs::directory_iterator(outDir, ec)) {
    std::string name = entry.path().filename().string();
    if (!name.starts_with(kCheckpointPrefix) || isTemporaryName(name) ||
        !entry.is_directory(ec))
      continue;
    try {
      TrainerState state = readTrainerState(entry.path() / kTrainerStateFile);
      found.push_back({entry.path(), state.step, state.runId});
    } catch (const Error &) {
      // Incomplete or unreadable: not a checkpoint to resume from or prune.
    }
  }
  std::sort(found.begin(), found.end(),
            [](const CheckpointInfo &a, const CheckpointInfo &b) {
              return a.step != b.step ? a.step < b.step : a.dir < b.dir;
            });
  return found;
}

fs::path findCheckpoint(const fs::path &where,
                        std::vector<std::string> &notes) {
  std::error_code ec;
  if (!fs::is_directory(where, ec))
    throw Error(fmt::format("{}: no such directory (--resume takes a run's "
                            "output directory or one of its checkpoints)",
                            where.string()));
  if (fs::exists(where / kTrainerStateFile, ec))
    return where;
  std::optional<fs::path> named = latestNamed(where);
  if (named && fs::is_regular_file(*named / kTrainerStateFile, ec))
    return *named;
  std::vector<CheckpointInfo> all = listCheckpoints(where);
  if (all.empty()) {
    if (named)
      throw Error(fmt::format("{}: names {}, which does not exist or is "
                              "incomplete, and there is no other checkpoint "
                              "in {}",
                              (where / kLatestFile).string(),
                              named->filename().string(), where.string()));
    throw Error(fmt::format("{}: not a checkpoint (no {}) and no '{}' file "
                            "naming one",
                            where.string(), kTrainerStateFile, kLatestFile));
  }
  if (named)
    notes.push_back(fmt::format(
        "{} names {}, which does not exist or is incomplete; using the "
        "newest complete checkpoint, {}",
        (where / kLatestFile).string(), named->filename().string(),
        all.back().dir.filename().string()));
  return all.back().dir;
}

void verifyCheckpoint(const fs::path &dir, const TrainerState &state) {
  for (const auto &[name, expected] : state.checksums) {
    fs::path file = dir / name;
    std::error_code ec;
    if (!fs::is_regular_file(file, ec))
      throw Error(fmt::format("{}: missing; the checkpoint's {} lists it",
                              file.string(), kTrainerStateFile));
    std::string actual = toHex(sha256OfFile(file.string()));
    if (actual != expected)
      throw Error(fmt::format("{}: the file changed after it was saved "
                              "(SHA-256 {}, the checkpoint recorded {}); "
                              "the checkpoint is corrupt: resume from "
                              "another one",
                              file.string(), actual, expected));
  }
}

//===----------------------------------------------------------------------===//
// ZeRO-1 optimizer shards
//===----------------------------------------------------------------------===//

std::string optimizerShardFile(int64_t rank, int64_t worldSize) {
  return fmt::format("optimizer-{:05}-of-{:05}.safetensors", rank, worldSize);
}

std::string optimizerManifestJson(const OptimizerManifest &manifest) {
  json parameters = json::array();
  for (const auto &[name, elements] : manifest.parameters)
    parameters.push_back({{"name", name}, {"elements", elements}});
  json root = {{"format", "kiln-optimizer-shards"},
               {"zero", manifest.zero},
               {"world_size", manifest.worldSize},
               {"shards",
                "each tensor flattened; rank r holds the elements from r * "
                "ceil(n / world_size), at most ceil(n / world_size) of them"},
               {"files", manifest.files},
               {"parameters", std::move(parameters)}};
  return root.dump(2) + "\n";
}

OptimizerManifest readOptimizerManifest(const fs::path &path) {
  json root = json::parse(readText(path), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object())
    throw Error(fmt::format("{}: not a JSON object", path.string()));
  StateReader r(root, path.string());
  if (r.string("format") != "kiln-optimizer-shards")
    r.fail("format", "must be \"kiln-optimizer-shards\"");
  OptimizerManifest manifest;
  manifest.zero = r.integer("zero", 1, 1);
  manifest.worldSize = r.integer("world_size", 1, 1 << 20);
  const json &files = r.get("files");
  if (!files.is_array() ||
      files.size() != static_cast<std::size_t>(manifest.worldSize))
    r.fail("files", fmt::format("must list {} files (world_size), got {}",
                                manifest.worldSize, describe(files)));
  for (std::size_t rank = 0; rank < files.size(); ++rank) {
    std::string expected =
        optimizerShardFile(static_cast<int64_t>(rank), manifest.worldSize);
    if (!files[rank].is_string() || files[rank].get<std::string>() != expected)
      r.fail(
          fmt::format("files[{}]", rank),
          fmt::format("must be \"{}\", got {}", expected, files[rank].dump()));
    manifest.files.push_back(expected);
  }
  const json &parameters = r.get("parameters");
  if (!parameters.is_array())
    r.fail("parameters", "must be an array, got " + describe(parameters));
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    if (!parameters[i].is_object())
      r.fail(fmt::format("parameters[{}]", i),
             "must be an object, got " + describe(parameters[i]));
    StateReader entry(parameters[i], path.string(),
                      fmt::format("parameters[{}].", i));
    manifest.parameters.emplace_back(
        entry.string("name"),
        entry.integer("elements", 1, std::numeric_limits<int64_t>::max()));
  }
  return manifest;
}

//===----------------------------------------------------------------------===//
// Writing
//===----------------------------------------------------------------------===//

std::string CheckpointWriter::directoryName(int64_t step) {
  return fmt::format("{}{:06}", kCheckpointPrefix, step);
}

CheckpointWriter::CheckpointWriter(const fs::path &outDir, int64_t step)
    : finalDir(outDir / directoryName(step)) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    tempDir = finalDir;
    tempDir += ".tmp." + temporarySuffix();
    std::error_code ec;
    if (fs::create_directory(tempDir, ec))
      return;
    if (ec)
      throw Error(fmt::format("{}: cannot create the checkpoint directory: {}",
                              tempDir.string(), ec.message()));
  }
  throw Error(
      fmt::format("{}: cannot find a free temporary name", finalDir.string()));
}

CheckpointWriter::~CheckpointWriter() {
  if (!committed) {
    std::error_code ec;
    fs::remove_all(tempDir, ec);
  }
}

std::string CheckpointWriter::pathOf(const std::string &name) const {
  return (tempDir / name).string();
}

fs::path CheckpointWriter::commit(TrainerState state) {
  state.checksums.clear();
  for (const auto &entry : fs::directory_iterator(tempDir)) {
    std::string name = entry.path().filename().string();
    if (name == kTrainerStateFile || isTemporaryName(name))
      continue;
    state.checksums[name] = toHex(sha256OfFile(entry.path().string()));
  }
  std::string text = trainerStateJson(state);
  writeFileAtomic(pathOf(kTrainerStateFile),
                  std::as_bytes(std::span(text.data(), text.size())));
  // Replace an older checkpoint of the same step (a resumed run passing it
  // again): move it aside, move the new one in, then delete the old.
  std::error_code ec;
  fs::path old;
  if (fs::exists(finalDir, ec)) {
    old = finalDir;
    old += ".old.tmp." + temporarySuffix();
    fs::rename(finalDir, old);
  }
  fs::rename(tempDir, finalDir);
  committed = true;
  flushDirectory(finalDir.parent_path().string());
  if (!old.empty())
    fs::remove_all(old, ec);
  return finalDir;
}

std::vector<std::string> removeStaleTemporaries(const fs::path &outDir) {
  std::vector<std::string> removed;
  for (const fs::path &dir : {outDir, outDir / "tokens"}) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      continue;
    std::vector<fs::path> stale;
    for (const auto &entry : fs::directory_iterator(dir, ec))
      if (isTemporaryName(entry.path().filename().string()))
        stale.push_back(entry.path());
    for (const fs::path &path : stale) {
      fs::remove_all(path, ec);
      if (!ec)
        removed.push_back(fs::relative(path, outDir, ec).string());
    }
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

std::vector<fs::path> pruneCheckpoints(const fs::path &outDir,
                                       const std::string &runId, int64_t keep,
                                       const fs::path &protect) {
  std::vector<fs::path> removed;
  if (keep <= 0 || runId.empty())
    return removed;
  std::optional<fs::path> latest;
  try {
    latest = latestNamed(outDir);
  } catch (const Error &) {
  }
  std::vector<CheckpointInfo> ours;
  for (CheckpointInfo &info : listCheckpoints(outDir))
    if (info.runId == runId)
      ours.push_back(std::move(info));
  std::error_code ec;
  auto same = [&](const fs::path &a, const fs::path &b) {
    return fs::equivalent(a, b, ec);
  };
  // Oldest first; stop once `keep` remain.
  std::size_t remaining = ours.size();
  for (const CheckpointInfo &info : ours) {
    if (remaining <= static_cast<std::size_t>(keep))
      break;
    if (same(info.dir, protect) || (latest && same(info.dir, *latest)))
      continue;
    fs::remove_all(info.dir, ec);
    if (!ec) {
      removed.push_back(info.dir);
      --remaining;
    }
  }
  return removed;
}

std::vector<std::string> configDifferences(const json &a,
                                           const std::string &aName,
                                           const json &b,
                                           const std::string &bName) {
  std::set<std::string> keys;
  for (const auto &[key, value] : a.items())
    keys.insert(key);
  for (const auto &[key, value] : b.items())
    keys.insert(key);
  std::vector<std::string> differences;
  for (const std::string &key : keys) {
    if (ignoredConfigKey(key))
      continue;
    auto ia = a.find(key), ib = b.find(key);
    bool inA = ia != a.end() && !ia->is_null();
    bool inB = ib != b.end() && !ib->is_null();
    if (!inA && !inB)
      continue;
    if (inA && inB && *ia == *ib)
      continue;
    // 1e-05 and 1e-5, or 10000 and 10000.0, are the same number.
    if (inA && inB && ia->is_number() && ib->is_number() &&
        ia->get<double>() == ib->get<double>())
      continue;
    differences.push_back(fmt::format("'{}' is {} in {} and {} in {}", key,
                                      inA ? ia->dump() : "absent", aName,
                                      inB ? ib->dump() : "absent", bName));
  }
  return differences;
}

} // namespace kiln::rt
