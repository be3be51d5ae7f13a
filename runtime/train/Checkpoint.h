//===- Checkpoint.h - Checkpoints of a training run -------------*- C++ -*-===//
//
// A run's output directory holds its checkpoints, each a directory written
// whole or not at all: the files go into `checkpoint-000040.tmp.<random>`,
// `trainer_state.json` last, and the directory is then renamed into place.
//
//   out/plan.json  metrics.jsonl  loss.svg  latest ("checkpoint-000040")
//   out/checkpoint-000040/model.safetensors      parameters, HF names
//                         optimizer.safetensors  exp_avg.* / exp_avg_sq.*
//                         (ZeRO-1 instead: optimizer.manifest.json and
//                          optimizer-00000-of-00002.safetensors, ... one
//                          shard per rank, each rank writing its own)
//                         config.json            the model's config
//                         trainer_state.json     step, data position, the
//                                                run's settings, the model
//                                                and a SHA-256 of each file
//
// The state identifies the run (a random `run_id` kept across resumes) so
// that pruning only ever removes the current run's own checkpoints, and
// records what the run was started with, so that a resume continues it.
// Everything read back is validated, with the file and field named, before
// anything on disk is touched.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_CHECKPOINT_H
#define KILN_RUNTIME_TRAIN_CHECKPOINT_H

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kiln::rt {

/// The format of `trainer_state.json` this runtime writes. States without a
/// `format` (written before settings and checksums were recorded) are read
/// as format 1.
constexpr int kTrainerStateFormat = 2;

constexpr const char *kTrainerStateFile = "trainer_state.json";
constexpr const char *kModelFile = "model.safetensors";
constexpr const char *kOptimizerFile = "optimizer.safetensors";
constexpr const char *kConfigFile = "config.json";
constexpr const char *kLatestFile = "latest";
constexpr const char *kOptimizerManifestFile = "optimizer.manifest.json";

/// ZeRO-1's optimizer state in a checkpoint: rank r of `worldSize` wrote
/// `files[r]`, holding `exp_avg.<name>` and `exp_avg_sq.<name>` of its
/// shard of each parameter: 1-D, the elements plan::shardOf gives it
/// (offset r * ceil(n / worldSize) of the flattened tensor), possibly none.
struct OptimizerManifest {
  int64_t zero = 1;
  int64_t worldSize = 1;
  std::vector<std::string> files;
  /// Each parameter's name and element count.
  std::vector<std::pair<std::string, int64_t>> parameters;
};
/// The file rank `rank` of `worldSize` writes its shard to.
std::string optimizerShardFile(int64_t rank, int64_t worldSize);
std::string optimizerManifestJson(const OptimizerManifest &manifest);
/// Reads and validates `path`, naming the file and field in any Error.
OptimizerManifest readOptimizerManifest(const std::filesystem::path &path);

/// What a run was started with. A resume uses these unless a flag says
/// otherwise.
struct RunSettings {
  int64_t steps = 0;
  double lr = 0;
  int64_t warmupSteps = 0; ///< resolved: never the -1 "default" marker
  double minLrRatio = 0;
  std::string lrSchedule = "cosine"; ///< LrDecay's name (older runs: cosine)
  double decayFraction = 0.2;        ///< WSD's decay share of the steps
  uint64_t seed = 0;
  int64_t saveEvery = 0;
  int64_t keep = 0;
  std::vector<std::string> data; ///< absolute paths, as given
  /// Evaluation: the validation data given (absolute paths; empty: none
  /// or a directory's llm.c *_val* shards), the steps between evaluations
  /// (0: none) and the tokens each reads; -1 in older runs' settings.
  std::vector<std::string> valData;
  int64_t evalEvery = -1;
  int64_t evalTokens = -1;
  // Compiled into the step (kiln train recompiles with them on resume).
  int64_t batch = 0;
  int64_t seqLen = 0;
  std::string precision;
  double weightDecay = 0;
  double gradClip = 0;
  /// AdamW's (older runs: the defaults then, 0.9, 0.95, 1e-8).
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;

  bool operator==(const RunSettings &) const = default;
};

/// Where the token stream stood after the checkpoint's step.
struct DataPosition {
  uint64_t shard = 0;
  uint64_t offset = 0;
  uint64_t epoch = 0;
  /// Sequence packing: the document pieces read but not yet placed in a
  /// row (TokenStream::Piece), in order; `pending` in the JSON, each
  /// [shard, offset, length, last].
  struct Piece {
    uint64_t shard = 0, offset = 0, length = 0;
    bool last = true;
  };
  std::vector<Piece> pending;
};

struct TrainerState {
  int format = kTrainerStateFormat;
  int64_t step = 0;
  std::string runId; ///< empty in format 1
  DataPosition position;
  /// Format 1 recorded only batch, sequence length and seed.
  std::optional<RunSettings> settings;
  int64_t batch = 0;
  int64_t seqLen = 0;
  uint64_t seed = 0;
  /// The plan's `model` section (architecture, sizes, precision, ...).
  nlohmann::json model = nlohmann::json::object();
  /// File name in the checkpoint -> SHA-256 (64 lowercase hex digits).
  std::map<std::string, std::string> checksums;
};

/// Reads and validates `path` (a trainer_state.json): every field's type and
/// range, with the file and field named in the Error thrown.
TrainerState readTrainerState(const std::filesystem::path &path);

/// The JSON text of `state` (format kTrainerStateFormat).
std::string trainerStateJson(const TrainerState &state);

/// A complete checkpoint found in an output directory.
struct CheckpointInfo {
  std::filesystem::path dir;
  int64_t step = 0;
  std::string runId;
};

/// The complete checkpoints in `outDir` (directories `checkpoint-*` with a
/// readable state; temporaries excluded), oldest step first.
std::vector<CheckpointInfo>
listCheckpoints(const std::filesystem::path &outDir);

/// The checkpoint `where` names: a checkpoint directory, or an output
/// directory whose `latest` file names one. A `latest` that names a missing
/// or incomplete directory falls back to the newest complete checkpoint;
/// `notes` says so. Throws Error if there is none.
std::filesystem::path findCheckpoint(const std::filesystem::path &where,
                                     std::vector<std::string> &notes);

/// Checks every file the state lists against its recorded SHA-256; throws
/// Error naming the first file that is missing or differs.
void verifyCheckpoint(const std::filesystem::path &dir,
                      const TrainerState &state);

/// A checkpoint being written: files go into a temporary directory next to
/// the final one; commit() records their checksums in the state, writes it,
/// and renames the directory into place (replacing an older checkpoint of
/// the same step). Destroying an uncommitted one removes the temporary.
class CheckpointWriter {
public:
  CheckpointWriter(const std::filesystem::path &outDir, int64_t step);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter &) = delete;
  CheckpointWriter &operator=(const CheckpointWriter &) = delete;

  /// Where to write the file `name` of the checkpoint.
  std::string pathOf(const std::string &name) const;
  /// Commits; `state.checksums` is filled in from the files written.
  std::filesystem::path commit(TrainerState state);

  static std::string directoryName(int64_t step);

private:
  std::filesystem::path finalDir, tempDir;
  bool committed = false;
};

/// Removes what interrupted saves left in `outDir` (`<name>.tmp.<random>`
/// files and directories, also under `tokens/`); returns their names.
std::vector<std::string>
removeStaleTemporaries(const std::filesystem::path &outDir);

/// Removes the oldest checkpoints of run `runId` in `outDir` until `keep`
/// remain (0: keep all), never `protect` (the one just written) or the one
/// `latest` names. Checkpoints of other runs are never touched.
std::vector<std::filesystem::path>
pruneCheckpoints(const std::filesystem::path &outDir, const std::string &runId,
                 int64_t keep, const std::filesystem::path &protect);

/// The differences between two model configs (JSON objects) on every key
/// that can change the maths (all but names, versions, token ids and cache
/// flags): one line per key, "'key' is A in <aName> and B in <bName>".
std::vector<std::string> configDifferences(const nlohmann::json &a,
                                           const std::string &aName,
                                           const nlohmann::json &b,
                                           const std::string &bName);

/// A fresh random run id (16 hex digits).
std::string newRunId();

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_CHECKPOINT_H
