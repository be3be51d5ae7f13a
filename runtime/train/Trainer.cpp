//===- Trainer.cpp - The training loop ------------------------------------===//

#include "runtime/train/Trainer.h"

#include "runtime/BackendFactory.h"
#include "runtime/Error.h"
#include "runtime/Numerics.h"
#include "runtime/dist/Communicator.h"
#include "runtime/io/AtomicFile.h"
#include "runtime/io/ByteTokenizer.h"
#include "runtime/io/DocumentPacker.h"
#include "runtime/io/InputFile.h"
#include "runtime/io/SafeTensors.h"
#include "runtime/io/Sha256.h"
#include "runtime/io/TokenShard.h"
#include "runtime/plan/Plan.h"
#include "runtime/train/Checkpoint.h"
#include "runtime/train/Interrupt.h"
#include "runtime/train/LossCurve.h"
#include "runtime/train/MetricsLog.h"
#include "runtime/train/Progress.h"
#include "runtime/train/Random.h"
#include "runtime/train/Schedule.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <glob.h>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <span>

namespace fs = std::filesystem;
using nlohmann::json;

namespace kiln::rt {

namespace {

std::vector<std::byte> toBytes(std::string_view text) {
  auto *begin = reinterpret_cast<const std::byte *>(text.data());
  return {begin, begin + text.size()};
}

Tensor floatTensor(const std::string &name, const std::vector<int64_t> &shape,
                   const std::vector<float> &data) {
  Tensor tensor{name, DType::F32, shape, {}};
  tensor.data.resize(data.size() * sizeof(float));
  std::memcpy(tensor.data.data(), data.data(), tensor.data.size());
  return tensor;
}

Tensor int32Tensor(const std::string &name, const std::vector<int64_t> &shape,
                   const std::vector<int32_t> &data) {
  Tensor tensor{name, DType::I32, shape, {}};
  tensor.data.resize(data.size() * sizeof(int32_t));
  std::memcpy(tensor.data.data(), data.data(), tensor.data.size());
  return tensor;
}

std::string shapeString(const std::vector<int64_t> &shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

/// A tensor of a safetensors file as FP32, checking its shape (`shape`, the
/// model's) and that every value is finite.
std::vector<float> readTensor(const SafeTensors &file, const std::string &name,
                              const std::string &path,
                              const std::vector<int64_t> &shape) {
  const Tensor *tensor = file.find(name);
  if (!tensor)
    throw Error(fmt::format("{}: has no tensor '{}'", path, name));
  if (tensor->shape != shape)
    throw Error(fmt::format("{}: tensor '{}' has shape {}, the model expects "
                            "{}",
                            path, name, shapeString(tensor->shape),
                            shapeString(shape)));
  std::vector<float> data(tensor->numElements());
  if (tensor->dtype == DType::F32) {
    std::memcpy(data.data(), tensor->data.data(), tensor->data.size());
  } else if (tensor->dtype == DType::BF16 || tensor->dtype == DType::F16) {
    const auto *bits = reinterpret_cast<const uint16_t *>(tensor->data.data());
    bool bf16 = tensor->dtype == DType::BF16;
    for (std::size_t i = 0; i < data.size(); ++i)
      data[i] = bf16 ? bf16ToFloat(bits[i]) : halfToFloat(bits[i]);
  } else {
    throw Error(fmt::format("{}: tensor '{}' is {}; expected F32, BF16 or F16",
                            path, name, dtypeName(tensor->dtype)));
  }
  auto bad = std::find_if(data.begin(), data.end(),
                          [](float x) { return !std::isfinite(x); });
  if (bad != data.end())
    throw Error(fmt::format("{}: tensor '{}' holds {} at element {}; the "
                            "file is damaged or the run that wrote it "
                            "diverged",
                            path, name, *bad, bad - data.begin()));
  return data;
}

/// The weights --init names: a safetensors file, a sharded checkpoint's
/// index (`model.safetensors.index.json`, whose weight_map names each
/// tensor's file), or a Hugging Face model directory holding either; the
/// tensors of every shard together.
SafeTensors readInitWeights(const std::string &path) {
  fs::path file = path;
  std::error_code ec;
  if (fs::is_directory(file, ec)) {
    if (fs::exists(file / "model.safetensors.index.json", ec))
      file /= "model.safetensors.index.json";
    else if (fs::exists(file / "model.safetensors", ec))
      file /= "model.safetensors";
    else
      throw Error(fmt::format("--init {}: the directory holds neither "
                              "model.safetensors nor "
                              "model.safetensors.index.json",
                              path));
  }
  if (!file.string().ends_with(".index.json"))
    return readSafeTensors(file.string());
  std::vector<std::byte> bytes = InputFile(file.string()).readAll();
  json index = json::parse(bytes.begin(), bytes.end(), nullptr, false);
  auto map = index.is_object() ? index.find("weight_map") : index.end();
  if (index.is_discarded() || !index.is_object() || map == index.end() ||
      !map->is_object())
    throw Error(fmt::format("{}: not a safetensors index (expected a JSON "
                            "object with a weight_map object)",
                            file.string()));
  std::map<std::string, std::vector<std::string>> byShard;
  for (const auto &[name, shard] : map->items()) {
    if (!shard.is_string() || shard.get<std::string>().empty() ||
        shard.get<std::string>().find('/') != std::string::npos)
      throw Error(fmt::format("{}: weight_map['{}'] must name a file beside "
                              "the index, got {}",
                              file.string(), name, shard.dump()));
    byShard[shard.get<std::string>()].push_back(name);
  }
  SafeTensors merged;
  for (const auto &[shard, names] : byShard) {
    fs::path shardPath = file.parent_path() / shard;
    SafeTensors part = readSafeTensors(shardPath.string());
    for (const std::string &name : names) {
      auto it = std::find_if(part.tensors.begin(), part.tensors.end(),
                             [&](const Tensor &t) { return t.name == name; });
      if (it == part.tensors.end())
        throw Error(fmt::format("{}: the index puts '{}' in {}, which has no "
                                "such tensor",
                                file.string(), name, shardPath.string()));
      merged.tensors.push_back(std::move(*it));
    }
  }
  return merged;
}

/// The files in `dir` whose extension is `extension`, sorted.
std::vector<std::string> filesIn(const fs::path &dir,
                                 std::string_view extension) {
  std::vector<std::string> files;
  for (const auto &entry : fs::directory_iterator(dir))
    if (entry.path().extension() == extension && !entry.is_directory())
      files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

/// The `.bin` token shards in `dir`, sorted.
std::vector<std::string> shardsIn(const fs::path &dir) {
  return filesIn(dir, ".bin");
}

/// Whether `path` names one of llm.c's validation shards
/// (`fineweb_val_000000.bin`, `tiny_shakespeare_val.bin`).
bool isValidationShard(const fs::path &path) {
  return path.filename().string().find("_val") != std::string::npos;
}

/// The inputs with each glob pattern (`shards/*.bin`) that names no file
/// itself replaced by the files it matches, sorted; a pattern that matches
/// nothing is an error naming `flag`.
std::vector<std::string> expandGlobs(const std::vector<std::string> &inputs,
                                     const char *flag) {
  std::vector<std::string> expanded;
  for (const std::string &input : inputs) {
    std::error_code ec;
    if (input.find_first_of("*?[") == std::string::npos ||
        fs::exists(input, ec)) {
      expanded.push_back(input);
      continue;
    }
    glob_t matches{};
    int status = ::glob(input.c_str(), 0, nullptr, &matches);
    std::vector<std::string> found(matches.gl_pathv,
                                   matches.gl_pathv + matches.gl_pathc);
    ::globfree(&matches);
    if (status == GLOB_NOMATCH)
      throw Error(
          fmt::format("{} {}: no file matches this pattern", flag, input));
    if (status != 0)
      throw Error(fmt::format("{} {}: cannot expand the pattern (a directory "
                              "on its way cannot be read)",
                              flag, input));
    expanded.insert(expanded.end(), found.begin(), found.end());
  }
  return expanded;
}

/// Token data as the run reads it: the shards, and the validation shards a
/// directory of llm.c shards held beside its training shards.
struct ResolvedData {
  std::vector<std::string> shards, valShards;
  bool text = false; ///< all of it text Kiln tokenized
};

/// Token data: llm.c shards as given; a directory's shards (its *_train*
/// shards when it also holds *_val* ones, which go to valShards), or its
/// .txt files when it has no shards; text files are tokenized byte by byte
/// into `<outDir>/tokens/<name>_000.bin` first. `flag` names the inputs in
/// errors.
ResolvedData resolveData(const std::vector<std::string> &inputs,
                         const fs::path &outDir, int64_t vocab, bool writer,
                         const char *flag, const std::string &name) {
  if (inputs.empty())
    throw Error("no training data: pass --data <token shards, a directory "
                "of them, or text files>");
  ResolvedData resolved;
  std::vector<std::string> texts;
  for (const std::string &input : inputs) {
    if (fs::is_directory(input)) {
      std::vector<std::string> found = shardsIn(input);
      if (found.empty()) {
        std::vector<std::string> text = filesIn(input, ".txt");
        if (text.empty())
          throw Error(fmt::format("{} {}: this directory holds no .bin token "
                                  "shards and no .txt files",
                                  flag, input));
        texts.insert(texts.end(), text.begin(), text.end());
        continue;
      }
      auto val = std::stable_partition(
          found.begin(), found.end(),
          [](const std::string &path) { return !isValidationShard(path); });
      // (A directory of validation shards alone trains on them.)
      if (val != found.begin() && val != found.end()) {
        resolved.valShards.insert(resolved.valShards.end(), val, found.end());
        found.erase(val, found.end());
      }
      resolved.shards.insert(resolved.shards.end(), found.begin(), found.end());
      continue;
    }
    // `.bin` files are token shards, and so is any file that starts with
    // the shard magic; everything else is text.
    InputFile file(input);
    int32_t magic = 0;
    if (file.size() >= sizeof(magic))
      file.readAt(0, std::as_writable_bytes(std::span(&magic, 1)));
    bool shard =
        fs::path(input).extension() == ".bin" || magic == kTokenShardMagic;
    (shard ? resolved.shards : texts).push_back(input);
  }
  if (!texts.empty()) {
    if (vocab < static_cast<int64_t>(kByteVocabSize))
      throw Error(fmt::format(
          "{} is text, which Kiln tokenizes byte by byte (vocabulary {}), "
          "but the model's vocab_size is {}; give token shards made with the "
          "model's tokenizer instead",
          texts.front(), kByteVocabSize, vocab));
    // (Under data parallelism rank 0 writes the shard; the others read it.)
    std::string shard = (outDir / "tokens" / (name + "_000.bin")).string();
    if (writer) {
      std::vector<uint32_t> tokens = tokenizeFiles(texts);
      fs::create_directories(outDir / "tokens");
      writeTokenShard(shard, tokens, /*version=*/1);
    }
    resolved.text = resolved.shards.empty();
    resolved.shards.push_back(shard);
  }
  return resolved;
}

/// The targets a loss ignores (the plan's cross-entropy ignore_index).
int64_t ignoreIndexOf(const Plan &plan) {
  for (const Step &step : plan.steps) {
    if (const auto *ce = std::get_if<CrossEntropyStep>(&step.op))
      return ce->ignoreIndex;
    if (const auto *lce = std::get_if<LinearCrossEntropyStep>(&step.op))
      return lce->ignoreIndex;
  }
  return -100;
}

/// The targets of `targets` that the loss counts (not `ignoreIndex`).
int64_t countedTargets(std::span<const int32_t> targets, int64_t ignoreIndex) {
  return std::count_if(targets.begin(), targets.end(),
                       [&](int32_t t) { return t != ignoreIndex; });
}

/// Throws Error naming `flag` unless `value` >= `min` (0 or 1).
void checkAtLeast(const char *flag, int64_t value, int64_t min) {
  if (value < min)
    throw Error(fmt::format("{} must be {}, got {}", flag,
                            min == 0 ? "at least 0" : "positive", value));
}

/// What every rank of a job must agree on, digested: the plan, the config,
/// the data (each input's path, size and first MiB; a directory's shards)
/// and the run's settings.
struct RunIdentity {
  Sha256::Digest plan, config, data, settings;
};

Sha256::Digest dataDigest(const std::vector<std::string> &inputs) {
  Sha256 digest;
  auto file = [&](const std::string &path) {
    InputFile input(path);
    std::vector<std::byte> head(std::min<uint64_t>(input.size(), 1 << 20));
    input.readAt(0, head);
    digest.update(fmt::format("{}\n{}\n", path, input.size())).update(head);
  };
  for (const std::string &path : inputs) {
    if (!fs::is_directory(path)) {
      file(path);
      continue;
    }
    for (const std::string &shard : shardsIn(path))
      file(shard);
  }
  return digest.finish();
}

/// The compiled settings of a plan: the batch (sequences per optimizer
/// step: the compiled micro-batch times micro_batches times the
/// data-parallel ranks) and sequence length,
/// precision, and the optimizer's weight decay (of matrices) and clipping
/// norm.
RunSettings compiledSettings(const Plan &plan) {
  RunSettings s;
  s.batch = plan.modelInt(plan::model::kBatch) * plan.microBatches *
            plan.dataParallel;
  s.seqLen = plan.modelInt(plan::model::kSeqLen);
  s.precision = plan.model.value("precision", "");
  for (const Step &step : plan.steps) {
    const auto *adamw = std::get_if<AdamWStep>(&step.op);
    if (!adamw)
      continue;
    s.weightDecay = std::max(s.weightDecay, adamw->weightDecay);
    s.gradClip = adamw->maxGradNorm;
    s.beta1 = adamw->beta1;
    s.beta2 = adamw->beta2;
    s.eps = adamw->epsilon;
  }
  return s;
}

std::string absolutePath(const std::string &path) {
  std::error_code ec;
  fs::path absolute = fs::absolute(path, ec);
  return ec ? path : absolute.lexically_normal().string();
}

/// How long the other ranks wait for rank 0 to write a checkpoint.
constexpr std::chrono::minutes kCheckpointPatience{30};

class Trainer {
public:
  Trainer(const TrainOptions &options, Communicator &comm);
  /// Trains; returns 0, or 128 + the signal that stopped the run.
  int run();

private:
  void settle(const std::optional<TrainerState> &state);
  void checkModel(const TrainerState &state);
  std::vector<std::string> configDifferencesFromCheckpoint();
  void prepareFreshOutput();
  void checkResumeOutput();
  void initialise();
  void resume();
  /// The moments from the checkpoint, re-sharded for this run's ranks.
  void loadMoments();
  /// Saves a checkpoint: rank 0, and under ZeRO-1 every rank its shard.
  void saveCheckpoint(int64_t step);
  void saveGradients(int64_t step, double loss,
                     const std::vector<std::vector<float>> &grads);
  /// This rank's ZeRO-1 shard of a parameter (all of it without ZeRO-1).
  plan::Shard shardOf(const Parameter &param) const {
    return plan::shardOf(plan.values[param.grad].numElements(),
                         plan.optimizerShards(), comm.rank());
  }
  /// A parameter's shape: its gradient's (the value may be a shard).
  const std::vector<int64_t> &shapeOf(const Parameter &param) const {
    return plan.values[param.grad].shape;
  }
  /// Sets a parameter from its whole FP32 master: the value (this rank's
  /// shard of it, for a sharded master) and its BF16 compute copy.
  void writeMaster(const Parameter &param, const std::vector<float> &whole);
  /// The whole FP32 masters (gathered from the ranks' shards where the
  /// masters are sharded: every rank must call it).
  std::vector<std::vector<float>> readMasters();
  /// Refuses to start unless every rank runs the same plan, config, data
  /// and settings as rank 0.
  void checkRanksAgree();
  void prepareOutput();
  /// Whether this process writes the run's files (rank 0).
  bool writer() const { return comm.rank() == 0; }
  /// Runs the optimizer step on the global batch in `inputs`/`targets`:
  /// each micro-batch's forward and backward, then the optimizer; returns
  /// the mean loss over the batch's counted tokens.
  double runStep(int64_t step, bool saveGrads);
  /// Writes micro-batch `begin / microTokens` of the global batch in
  /// `batchInputs`/`batchTargets` (and, packed, `rows`' positions and
  /// documents) into the step's inputs.
  void feedMicroBatch(std::size_t begin, std::span<const int32_t> batchInputs,
                      std::span<const int32_t> batchTargets,
                      const PackedRows *rows);
  /// The mean loss over the counted targets of the first `evalBatches`
  /// global batches of the validation data (each rank its slice of each),
  /// computed by the forward steps alone.
  double evaluate();
  void writeLossCurve();
  /// The config.json a checkpoint holds: the run's, its torch_dtype saying
  /// what the weights are (float32).
  std::string checkpointConfig() const;
  void log(const std::string &line);
  void note(const std::string &line) { log("note: " + line); }

  const TrainOptions &options;
  Communicator &comm;
  fs::path outDir;
  Plan plan;
  std::unique_ptr<Backend> backend;
  std::optional<TokenStream> stream;
  std::optional<ProgressBar> progress;
  LrSchedule schedule{};
  RunSettings settings; ///< what this run uses (recorded in checkpoints)
  std::string runId;
  int64_t vocab = 0;
  int64_t firstStep = 1; ///< the step this process starts with
  fs::path checkpoint;   ///< when resuming: the checkpoint
  std::optional<TrainerState> resumeState;
  std::vector<int32_t> inputs, targets, positions;
  /// Sequence packing (the plan's model.packing): the packer and its last
  /// batch (whose positions and documents the step reads), and the share of
  /// the rows' tokens that were data so far.
  Packing packing = Packing::Stream;
  std::optional<DocumentPacker> packer;
  PackedRows packed;
  uint32_t endOfText = 0; ///< the packer's
  /// Evaluation: the validation data, and the global batches it reads.
  std::optional<TokenStream> valStream;
  int64_t evalBatches = 0;
  int64_t packedData = 0, packedCapacity = 0;
  /// The metrics' running totals: seconds and data tokens, continued from
  /// the run's last record when resuming.
  double elapsedBefore = 0;
  int64_t tokensSeen = 0;
  /// The cost model's FLOPs of a step on this rank and the peak of the
  /// target it was compiled for (the plan's; NaN without), and the
  /// seconds this process spent in steps.
  double flopsPerStep = std::numeric_limits<double>::quiet_NaN();
  double peakFlops = std::numeric_limits<double>::quiet_NaN();
  std::string peakTarget;
  double stepSeconds = 0;
  /// Model FLOPs utilisation of a step of `seconds` (a prediction's
  /// ratio: NaN where the plan records no FLOPs or peak).
  double mfuOf(double seconds) const {
    return flopsPerStep / std::max(seconds, 1e-9) / peakFlops;
  }
  /// Sets up `packer` for the plan's packing, its end-of-text token
  /// resolved; `textData` says the data is text Kiln tokenized.
  void preparePacking(bool textData);
  /// This run's evaluation settings (settle's part for them).
  void settleEvaluation(const RunSettings *recorded, int64_t done);
  /// Sets up the evaluation on `valShards` (none: no evaluation).
  void prepareEvaluation(const std::vector<std::string> &valShards);
  /// The percentage of the rows' tokens that were data so far.
  double packedPercent() const {
    return 100.0 * static_cast<double>(packedData) /
           static_cast<double>(packedCapacity);
  }
  /// ", 93.1% of the rows data" for the log when packing, else empty.
  std::string packingText() const {
    if (!packer || packedCapacity == 0)
      return {};
    return fmt::format(", {:.1f}% of the rows data", packedPercent());
  }
  /// Some rank was interrupted during the last step: all stop after it.
  bool stopAll = false;
  std::string metricsPath, svgPath;
  int64_t lastSaved = 0; ///< the step of the newest checkpoint written
};

Trainer::Trainer(const TrainOptions &options, Communicator &comm)
    : options(options), comm(comm) {
  if (options.overwrite && !options.resumeDir.empty())
    throw Error("--overwrite starts a new run and --resume continues one; "
                "give only one of them");
  if (options.steps)
    checkAtLeast("--steps", *options.steps, 1);
  if (options.warmupSteps)
    checkAtLeast("--warmup", *options.warmupSteps, 0);
  if (options.saveEvery)
    checkAtLeast("--save-every", *options.saveEvery, 0);
  if (options.noCheckpoint && options.saveEvery.value_or(0) > 0)
    throw Error("--no-checkpoint writes no checkpoints and --save-every asks "
                "for them; give only one of them");
  if (options.keep)
    checkAtLeast("--keep", *options.keep, 0);
  if (options.lr && !(*options.lr > 0 && std::isfinite(*options.lr)))
    throw Error(
        fmt::format("--lr must be positive and finite, got {}", *options.lr));
  // Everything is read and checked before anything on disk is touched.
  plan = Plan::load(options.planText, options.planSource);
  if (plan.dataParallel != comm.size())
    throw Error(fmt::format(
        "{} is compiled for {} data-parallel ranks, and this run has {} "
        "({}); launch it with mpirun -np {}, or compile it for {}",
        options.planSource, plan.dataParallel, comm.size(), comm.describe(),
        plan.dataParallel, comm.size()));
  vocab = plan.modelInt("vocab_size");
  for (auto [key, field] :
       {std::pair{plan::model::kFlopsPerStep, &flopsPerStep},
        std::pair{plan::model::kPeakFlops, &peakFlops}})
    if (auto it = plan.model.find(key);
        it != plan.model.end() && it->is_number() && it->get<double>() > 0)
      *field = it->get<double>();
  peakTarget = plan.model.value(plan::model::kPeakTarget, "");
  outDir = options.outDir.empty() ? fs::path("out") : fs::path(options.outDir);
  if (!options.resumeDir.empty()) {
    std::vector<std::string> notes;
    checkpoint = findCheckpoint(options.resumeDir, notes);
    for (const std::string &line : notes)
      note(line);
    if (options.outDir.empty())
      outDir = checkpoint.parent_path().empty() ? fs::path(".")
                                                : checkpoint.parent_path();
    resumeState = readTrainerState(checkpoint / kTrainerStateFile);
    if (resumeState->checksums.empty())
      note(fmt::format("{} was written by an older Kiln and records no "
                       "checksums; its files cannot be verified",
                       checkpoint.string()));
    verifyCheckpoint(checkpoint, *resumeState);
    checkModel(*resumeState);
  }
  settle(resumeState);
  checkRanksAgree();
  metricsPath = (outDir / "metrics.jsonl").string();
  svgPath = (outDir / "loss.svg").string();
  // Rank 0 prepares the output directory and writes the run's files; the
  // others wait for it (the tokenized text is rank 0's).
  if (writer())
    prepareOutput();
  ResolvedData data =
      resolveData(settings.data, outDir, vocab, writer(), "--data", "train");
  std::vector<std::string> valShards = data.valShards;
  if (!settings.valData.empty())
    valShards = resolveData(settings.valData, outDir, vocab, writer(),
                            "--val-data", "val")
                    .shards;
  else if (!valShards.empty())
    note(fmt::format("--data: training on the *_train* shards, evaluating on "
                     "the *_val* ones ({})",
                     fmt::join(valShards, ", ")));
  comm.barrier();
  backend = createBackend(plan, options.backend, &comm);
  stream.emplace(data.shards, static_cast<uint32_t>(vocab));
  preparePacking(data.text);
  prepareEvaluation(valShards);
  int64_t microBatch = plan.modelInt(plan::model::kBatch);
  positions.resize(microBatch * settings.seqLen);
  for (int64_t b = 0; b < microBatch; ++b)
    for (int64_t s = 0; s < settings.seqLen; ++s)
      positions[b * settings.seqLen + s] = static_cast<int32_t>(s);
}

void Trainer::preparePacking(bool textData) {
  std::string name = plan.model.value(plan::model::kPacking, "stream");
  std::optional<Packing> mode = parsePacking(name);
  if (!mode)
    throw Error(fmt::format("{}: model.packing is '{}'; expected stream, "
                            "documents or pad",
                            options.planSource, name));
  packing = *mode;
  bool hasCuSeqlens = plan.inputs.count(plan::input::kCuSeqlens) > 0;
  if (hasCuSeqlens != (packing == Packing::Documents))
    throw Error(fmt::format("{}: model.packing is '{}' but the step {} "
                            "cu_seqlens input",
                            options.planSource, name,
                            hasCuSeqlens ? "has a" : "has no"));
  if (packing == Packing::Stream)
    return;
  // The end-of-text token: --eot, else the byte tokenizer's for text Kiln
  // tokenized, else the config's eos_token_id.
  auto integer = [&](const char *key) -> std::optional<int64_t> {
    auto it = plan.model.find(key);
    if (it == plan.model.end())
      return std::nullopt;
    if (!it->is_number_integer())
      throw Error(fmt::format("{}: model.{} must be a token id, got {}",
                              options.planSource, key, it->dump()));
    return it->get<int64_t>();
  };
  int64_t eot = -1;
  if (std::optional<int64_t> given = integer(plan::model::kEot))
    eot = *given;
  else if (textData)
    eot = kEndOfText;
  else if (std::optional<int64_t> eos = integer(plan::model::kEosTokenId))
    eot = *eos;
  else
    throw Error(fmt::format("--packing {} needs the token that ends each "
                            "document: the config has no eos_token_id; give "
                            "--eot",
                            name));
  if (eot < 0 || eot >= vocab)
    throw Error(fmt::format("the end-of-text token {} is outside the model's "
                            "vocabulary (vocab_size {})",
                            eot, vocab));
  endOfText = static_cast<uint32_t>(eot);
  packer.emplace(*stream, endOfText, static_cast<int32_t>(ignoreIndexOf(plan)),
                 packing);
}

/// Rank 0's output directory: a fresh run's checked or taken over, a
/// resumed run's checked, interrupted saves' leftovers removed, the plan
/// written.
void Trainer::prepareOutput() {
  if (!resumeState)
    prepareFreshOutput();
  else
    checkResumeOutput();

  std::error_code ec;
  fs::create_directories(outDir, ec);
  if (ec || !fs::is_directory(outDir))
    throw Error(fmt::format("cannot create the output directory {}: {}",
                            outDir.string(),
                            ec ? ec.message() : "not a directory"));
  if (!options.saveGradsPath.empty()) {
    std::vector<std::string> read = settings.data;
    read.push_back(options.initPath);
    for (const std::string &input : read)
      if (fs::equivalent(input, options.saveGradsPath, ec))
        throw Error(fmt::format("--save-grads {} is also an input of the "
                                "run; writing there would destroy it",
                                options.saveGradsPath));
  }
  std::vector<std::string> stale = removeStaleTemporaries(outDir);
  if (!stale.empty())
    note(fmt::format("removed what interrupted saves left in {}: {}",
                     outDir.string(), fmt::join(stale, ", ")));
  writeFileAtomic((outDir / "plan.json").string(), toBytes(options.planText));
}

void Trainer::checkRanksAgree() {
  if (comm.size() == 1)
    return;
  const RunSettings &r = settings;
  std::string runSettings = fmt::format(
      "steps {} lr {} warmup {} min_lr_ratio {} seed {} save_every {} keep "
      "{} resume {} init {} backend {} no_checkpoint {} eval_every {} "
      "eval_tokens {} lr_schedule {} decay_fraction {}",
      r.steps, r.lr, r.warmupSteps, r.minLrRatio, r.seed, r.saveEvery, r.keep,
      resumeState ? resumeState->step : 0, options.initPath, options.backend,
      options.noCheckpoint, r.evalEvery, r.evalTokens, r.lrSchedule,
      r.decayFraction);
  // (The validation data too: every rank evaluates its slice of it.)
  std::vector<std::string> inputs = settings.data;
  inputs.insert(inputs.end(), settings.valData.begin(), settings.valData.end());
  RunIdentity mine{Sha256::of(options.planText), Sha256::of(options.configText),
                   dataDigest(inputs), Sha256::of(runSettings)};
  std::vector<std::vector<std::byte>> all =
      comm.allGather(std::as_bytes(std::span<const RunIdentity>(&mine, 1)));
  std::vector<std::string> differences;
  RunIdentity root;
  std::memcpy(&root, all[0].data(), sizeof(root));
  for (int rank = 1; rank < comm.size(); ++rank) {
    RunIdentity theirs;
    std::memcpy(&theirs, all[rank].data(), sizeof(theirs));
    std::vector<std::string> what;
    for (auto [field, name] : {std::pair{&RunIdentity::plan, "plan"},
                               {&RunIdentity::config, "config"},
                               {&RunIdentity::data, "data"},
                               {&RunIdentity::settings, "settings"}})
      if (theirs.*field != root.*field)
        what.push_back(name);
    if (!what.empty())
      differences.push_back(
          fmt::format("rank {} ({})", rank, fmt::join(what, ", ")));
  }
  if (!differences.empty())
    throw Error(fmt::format(
        "the ranks of this job disagree with rank 0: {} differ; every rank "
        "must run the same command on the same config, plan and data",
        fmt::join(differences, "; ")));
}

/// Refuses to resume a checkpoint of a different model: the config and
/// the plan's model section must match the checkpoint's on everything but
/// the batch shape and precision (which settle() handles).
void Trainer::checkModel(const TrainerState &state) {
  std::vector<std::string> differences = configDifferencesFromCheckpoint();
  if (differences.empty() && state.format >= 2) {
    json ours = plan.model, theirs = state.model;
    // (Nor how the batch is split among micro-batches and ranks, and
    // where the optimizer state lives: the moments are re-sharded.)
    for (const char *key :
         {plan::model::kBatch, plan::model::kSeqLen, "precision",
          plan::model::kMicroBatches, plan::model::kDataParallel,
          plan::model::kZero, plan::model::kPacking, plan::model::kEot,
          plan::model::kEosTokenId, plan::model::kFlopsPerStep,
          plan::model::kPeakFlops, plan::model::kPeakTarget}) {
      ours.erase(key);
      theirs.erase(key);
    }
    differences =
        configDifferences(ours, "this plan", theirs, "the checkpoint");
  }
  if (!differences.empty())
    throw Error(fmt::format(
        "cannot resume {}: the model differs from the one it was trained "
        "with: {}; resume with the run's own config, or start a new run",
        checkpoint.string(), fmt::join(differences, "; ")));
}

/// The given config against the checkpoint's copy, when there are both.
std::vector<std::string> Trainer::configDifferencesFromCheckpoint() {
  fs::path configPath = checkpoint / kConfigFile;
  if (options.configText.empty() || !fs::exists(configPath))
    return {};
  std::vector<std::byte> bytes = InputFile(configPath.string()).readAll();
  json theirs = json::parse(bytes.begin(), bytes.end(), nullptr, false);
  json ours = json::parse(options.configText, nullptr, false);
  if (theirs.is_discarded() || !theirs.is_object())
    throw Error(fmt::format("{}: not a JSON object", configPath.string()));
  if (ours.is_discarded() || !ours.is_object())
    throw Error(fmt::format("{}: not a JSON object", options.configSource));
  return configDifferences(ours, options.configSource, theirs,
                           configPath.string());
}

/// This run's settings: each flag given, else (resuming) what the run was
/// started with, else the default; a given flag that changes a recorded
/// setting is applied with a note.
void Trainer::settle(const std::optional<TrainerState> &state) {
  const RunSettings *recorded =
      state && state->settings ? &*state->settings : nullptr;
  auto pick = [&](const char *flag, const auto &given, auto fallback,
                  auto RunSettings::*field) {
    using T = std::remove_cvref_t<decltype(settings.*field)>;
    if (!given)
      return recorded ? recorded->*field : static_cast<T>(fallback);
    if (recorded && recorded->*field != static_cast<T>(*given))
      note(fmt::format("{} {} given: the run was started with {} {}; this "
                       "changes the run from step {} on",
                       flag, *given, flag, recorded->*field, state->step + 1));
    return static_cast<T>(*given);
  };
  settings.steps =
      pick("--steps", options.steps, kDefaultSteps, &RunSettings::steps);
  settings.lr = pick("--lr", options.lr, kDefaultLr, &RunSettings::lr);
  settings.warmupSteps = pick("--warmup", options.warmupSteps,
                              std::min<int64_t>(100, settings.steps / 10),
                              &RunSettings::warmupSteps);
  settings.seed = state && !recorded
                      ? state->seed
                      : pick("--seed", options.seed, 0, &RunSettings::seed);
  settings.saveEvery =
      pick("--save-every", options.saveEvery, 0, &RunSettings::saveEvery);
  settings.keep =
      pick("--keep", options.keep, kDefaultKeep, &RunSettings::keep);
  settings.lrSchedule = pick("--lr-schedule", options.lrSchedule,
                             std::string("cosine"), &RunSettings::lrSchedule);
  std::optional<LrDecay> decay = parseLrDecay(settings.lrSchedule);
  if (!decay)
    throw Error(fmt::format("--lr-schedule must be cosine, linear, constant "
                            "or wsd, got '{}'",
                            settings.lrSchedule));
  settings.decayFraction = pick("--decay-fraction", options.decayFraction, 0.2,
                                &RunSettings::decayFraction);
  settings.minLrRatio = recorded ? recorded->minLrRatio : options.minLrRatio;
  if (options.minLr) {
    if (!(*options.minLr >= 0 && *options.minLr <= settings.lr))
      throw Error(fmt::format("--min-lr {} must be in [0, --lr {}]",
                              *options.minLr, settings.lr));
    settings.minLrRatio = *options.minLr / settings.lr;
  }
  if (!options.data.empty()) {
    for (const std::string &path : expandGlobs(options.data, "--data"))
      settings.data.push_back(absolutePath(path));
    if (recorded && recorded->data != settings.data)
      note(fmt::format("--data differs from the data the run was started "
                       "with ({}); the data position (file {}, token {}) "
                       "carries over",
                       fmt::join(recorded->data, ", "), state->position.shard,
                       state->position.offset));
  } else if (recorded) {
    settings.data = recorded->data;
  }

  // The compiled settings are the plan's; a resumed run must keep the batch
  // shape (the data position counts in it).
  RunSettings compiled = compiledSettings(plan);
  settings.batch = compiled.batch;
  settings.seqLen = compiled.seqLen;
  settings.precision = compiled.precision;
  settings.weightDecay = compiled.weightDecay;
  settings.gradClip = compiled.gradClip;
  settings.beta1 = compiled.beta1;
  settings.beta2 = compiled.beta2;
  settings.eps = compiled.eps;
  settleEvaluation(recorded, state ? state->step : 0);
  if (state &&
      (state->batch != settings.batch || state->seqLen != settings.seqLen))
    throw Error(fmt::format(
        "{}: the checkpoint was trained with batch {} and sequence length "
        "{}, this run uses {} and {}",
        (checkpoint / kTrainerStateFile).string(), state->batch, state->seqLen,
        settings.batch, settings.seqLen));
  if (recorded) {
    auto compare = [&](const char *flag, auto RunSettings::*field) {
      if (recorded->*field != settings.*field)
        note(fmt::format("the step is compiled with {} {}; the run was "
                         "started with {} {}",
                         flag, settings.*field, flag, recorded->*field));
    };
    compare("--precision", &RunSettings::precision);
    compare("--weight-decay", &RunSettings::weightDecay);
    compare("--grad-clip", &RunSettings::gradClip);
    compare("--beta1", &RunSettings::beta1);
    compare("--beta2", &RunSettings::beta2);
    compare("--eps", &RunSettings::eps);
  }

  if (state) {
    firstStep = state->step + 1;
    if (firstStep > settings.steps)
      throw Error(fmt::format(
          "{} is at step {} and the run has {} steps: it is complete; pass "
          "--steps N (N > {}) to train it further",
          checkpoint.string(), state->step, settings.steps, state->step));
    runId = state->runId.empty() ? newRunId() : state->runId;
  } else {
    runId = newRunId();
  }
  if (settings.warmupSteps > settings.steps)
    throw Error(fmt::format(
        "--warmup ({}) must not exceed --steps ({}){}", settings.warmupSteps,
        settings.steps,
        options.warmupSteps ? ""
        : recorded          ? "; the warmup is the run's own: give --warmup N"
                            : ""));
  schedule = LrSchedule{settings.lr,    settings.warmupSteps,
                        settings.steps, settings.minLrRatio,
                        *decay,         settings.decayFraction};
  schedule.validate();
}

/// The evaluation settings: each flag given, else the run's own (when it
/// recorded them), else the defaults: a tenth of the steps and 20 batches.
void Trainer::settleEvaluation(const RunSettings *recorded, int64_t done) {
  if (options.evalEvery)
    checkAtLeast("--eval-every", *options.evalEvery, 0);
  if (options.evalTokens)
    checkAtLeast("--eval-tokens", *options.evalTokens, 1);
  if (!options.valData.empty()) {
    for (const std::string &path : expandGlobs(options.valData, "--val-data"))
      settings.valData.push_back(absolutePath(path));
  } else if (recorded) {
    settings.valData = recorded->valData;
  }
  auto pick = [&](const char *flag, const std::optional<int64_t> &given,
                  int64_t fallback, int64_t RunSettings::*field) {
    int64_t own = recorded ? recorded->*field : -1;
    if (!given)
      return own >= 0 ? own : fallback;
    if (own >= 0 && own != *given)
      note(fmt::format("{} {} given: the run was started with {} {}; this "
                       "changes the run from step {} on",
                       flag, *given, flag, own, done + 1));
    return *given;
  };
  settings.evalEvery =
      pick("--eval-every", options.evalEvery,
           std::max<int64_t>(1, settings.steps / 10), &RunSettings::evalEvery);
  settings.evalTokens =
      pick("--eval-tokens", options.evalTokens,
           20 * settings.batch * settings.seqLen, &RunSettings::evalTokens);
}

void Trainer::prepareEvaluation(const std::vector<std::string> &valShards) {
  if (valShards.empty()) {
    if (options.evalEvery || options.evalTokens)
      throw Error("--eval-every and --eval-tokens need validation data: give "
                  "--val-data FILES, or --data a directory of llm.c shards "
                  "with *_val* ones");
    return;
  }
  if (settings.evalEvery == 0)
    return;
  valStream.emplace(valShards, static_cast<uint32_t>(vocab));
  // Whole global batches from the start of the data, at most as many as
  // it holds (a window reads one token past its row).
  const int64_t batchTokens = settings.batch * settings.seqLen;
  const auto held = static_cast<int64_t>(valStream->numTokens());
  const int64_t available = held > 0 ? (held - 1) / batchTokens : 0;
  if (available < 1)
    throw Error(fmt::format("the validation data ({}) holds {} tokens, fewer "
                            "than one batch of {} x {} reads ({})",
                            fmt::join(valShards, ", "), held, settings.batch,
                            settings.seqLen, batchTokens + 1));
  evalBatches = std::max<int64_t>(1, settings.evalTokens / batchTokens);
  if (evalBatches > available) {
    note(fmt::format("--eval-tokens {}: the validation data holds {} tokens; "
                     "each evaluation reads all of it ({} batches)",
                     settings.evalTokens, held, available));
    evalBatches = available;
  }
}

/// A fresh run never takes over another run's output silently: a directory
/// holding checkpoints or metrics is refused unless --overwrite, which then
/// removes that run's files.
void Trainer::prepareFreshOutput() {
  std::vector<fs::path> old;
  std::error_code ec;
  if (fs::is_directory(outDir, ec))
    for (const auto &entry : fs::directory_iterator(outDir, ec)) {
      std::string name = entry.path().filename().string();
      if (name.starts_with("checkpoint-") || name == kLatestFile ||
          name == "metrics.jsonl" || name == "metrics.csv" ||
          name == "loss.svg")
        old.push_back(entry.path());
    }
  if (old.empty())
    return;
  std::sort(old.begin(), old.end());
  std::vector<std::string> names;
  for (const fs::path &path : old)
    names.push_back(path.filename().string());
  if (!options.overwrite)
    throw Error(fmt::format(
        "{} holds an earlier run ({}); pass --resume {} to continue it, "
        "--overwrite to replace it with a new run, or another --out",
        outDir.string(), fmt::join(names, ", "), outDir.string()));
  for (const fs::path &path : old)
    fs::remove_all(path);
  note(fmt::format("--overwrite: removed the earlier run's {}",
                   fmt::join(names, ", ")));
}

/// A run resumed into another directory must not mix with a run there:
/// its checkpoints, `latest` and metrics would interleave with this one's.
void Trainer::checkResumeOutput() {
  std::error_code ec;
  if (!fs::is_directory(outDir, ec) ||
      fs::equivalent(outDir, checkpoint.parent_path(), ec))
    return;
  std::vector<std::string> others;
  for (const CheckpointInfo &info : listCheckpoints(outDir))
    if (info.runId != runId || runId.empty())
      others.push_back(info.dir.filename().string());
  if (others.empty())
    return;
  throw Error(fmt::format(
      "--out {} holds checkpoints of another run ({}); resume into the "
      "run's own directory ({}), an empty one, or leave out --out",
      outDir.string(), fmt::join(others, ", "),
      checkpoint.parent_path().string()));
}

void Trainer::log(const std::string &line) {
  if (!writer())
    return;
  if (progress)
    progress->printAbove(line);
  else
    std::fprintf(stderr, "%s\n", line.c_str());
}

void Trainer::initialise() {
  Rng rng(settings.seed);
  std::optional<SafeTensors> init;
  if (!options.initPath.empty())
    init = readInitWeights(options.initPath);
  // Each parameter's tensor in the file: its name, or (OpenAI's GPT-2
  // files) the name without `transformer.`.
  std::map<std::string, std::string> source;
  if (init) {
    for (const Parameter &param : plan.parameters) {
      std::string name = param.name;
      if (!init->find(name) && name.starts_with("transformer.") &&
          init->find(name.substr(12)))
        name = name.substr(12);
      source[param.name] = name;
    }
    std::set<std::string> wanted;
    for (const auto &[param, name] : source)
      wanted.insert(name);
    std::vector<std::string> unused;
    for (const Tensor &tensor : init->tensors)
      if (!wanted.count(tensor.name))
        unused.push_back(tensor.name);
    if (!unused.empty())
      log(fmt::format("warning: {}: the model has no parameter for {} of its "
                      "tensors, which are not used: {}",
                      options.initPath, unused.size(),
                      fmt::join(unused, ", ")));
  }
  // (Every rank draws every parameter whole, in the same order, and keeps
  // its shard where the masters are sharded.)
  for (const Parameter &param : plan.parameters) {
    if (init) {
      writeMaster(param, readTensor(*init, source.at(param.name),
                                    options.initPath, shapeOf(param)));
    } else {
      std::vector<float> data(plan.values[param.grad].numElements(), 0.0f);
      if (param.init == "ones") {
        std::fill(data.begin(), data.end(), 1.0f);
      } else if (param.init.rfind("normal:", 0) == 0) {
        double std = std::stod(param.init.substr(7));
        fillNormal(rng, data.data(), data.size(), 0.0, std);
      } else if (param.init != "zeros") {
        throw Error(fmt::format("parameter '{}': unknown init '{}'", param.name,
                                param.init));
      }
      writeMaster(param, data);
    }
    // Optimizer moments start at zero (the arena is zeroed).
  }
}

void Trainer::writeMaster(const Parameter &param,
                          const std::vector<float> &whole) {
  if (plan.shardedMaster(param)) {
    plan::Shard mine = shardOf(param);
    std::vector<float> shard(mine.stride, 0.0f);
    std::copy_n(whole.begin() + mine.offset, mine.count, shard.begin());
    backend->write(param.value, shard);
  } else {
    backend->write(param.value, whole);
  }
  // The BF16 compute copy: rounded from the master once here, then by
  // every update (or its gather); checkpoints hold only the masters.
  if (param.computeCopy >= 0)
    backend->write(param.computeCopy, whole);
}

std::vector<std::vector<float>> Trainer::readMasters() {
  std::vector<std::vector<float>> masters;
  std::vector<std::span<float>> sharded;
  for (const Parameter &param : plan.parameters) {
    std::vector<float> value = backend->read(param.value);
    if (!plan.shardedMaster(param)) {
      masters.push_back(std::move(value));
      continue;
    }
    plan::Shard mine = shardOf(param);
    std::vector<float> &whole =
        masters.emplace_back(plan.values[param.grad].numElements(), 0.0f);
    std::copy_n(value.begin(), mine.count, whole.begin() + mine.offset);
    sharded.emplace_back(whole);
  }
  if (!sharded.empty())
    comm.allGatherShards(sharded);
  return masters;
}

void Trainer::resume() {
  std::string modelPath = (checkpoint / kModelFile).string();
  SafeTensors model = readSafeTensors(modelPath);
  for (const Parameter &param : plan.parameters)
    writeMaster(param,
                readTensor(model, param.name, modelPath, shapeOf(param)));
  loadMoments();
  const DataPosition &position = resumeState->position;
  stream->seek(
      TokenStream::Position{position.shard, position.offset, position.epoch});
  if (!position.pending.empty()) {
    if (!packer)
      throw Error(fmt::format("{}: the checkpoint has documents waiting to be "
                              "packed, but this run does not pack (model."
                              "packing '{}'); resume with --packing documents",
                              checkpoint.string(),
                              plan.model.value(plan::model::kPacking, "")));
    std::vector<TokenStream::Piece> pieces;
    for (const DataPosition::Piece &piece : position.pending)
      pieces.push_back({static_cast<std::size_t>(piece.shard), piece.offset,
                        piece.length, piece.last});
    packer->restore(std::move(pieces));
  }
  lastSaved = resumeState->step;
  log(fmt::format("resuming from {} at step {}", checkpoint.string(),
                  firstStep));
}

void Trainer::loadMoments() {
  // The checkpoint's layout: a full optimizer file (one shard of a world of
  // one), or ZeRO-1's manifest and a shard per rank of its world.
  fs::path manifestPath = checkpoint / kOptimizerManifestFile;
  bool manifested = fs::exists(manifestPath);
  std::vector<std::string> files{kOptimizerFile};
  if (manifested) {
    OptimizerManifest manifest = readOptimizerManifest(manifestPath);
    files = manifest.files;
    for (const std::string &file : files)
      if (!resumeState->checksums.count(file))
        throw Error(fmt::format("{}: names {}, which the checkpoint's {} "
                                "does not list (a shard saved by another "
                                "run?)",
                                manifestPath.string(), file,
                                kTrainerStateFile));
    std::map<std::string, int64_t> recorded(manifest.parameters.begin(),
                                            manifest.parameters.end());
    for (const Parameter &param : plan.parameters) {
      auto it = recorded.find(param.name);
      int64_t elements = plan.values[param.grad].numElements();
      if (it == recorded.end() || it->second != elements)
        throw Error(fmt::format(
            "{}: parameter '{}' {}, but the model's has {} elements",
            manifestPath.string(), param.name,
            it == recorded.end() ? std::string("is missing")
                                 : fmt::format("has {} elements", it->second),
            elements));
    }
  }
  const int64_t oldWorld = static_cast<int64_t>(files.size());
  std::map<int64_t, SafeTensors> opened; // read when first needed
  auto fileOf = [&](int64_t k) -> const SafeTensors & {
    auto it = opened.find(k);
    if (it == opened.end())
      it = opened.emplace(k, readSafeTensors((checkpoint / files[k]).string()))
               .first;
    return it->second;
  };
  for (const Parameter &param : plan.parameters) {
    int64_t elements = plan.values[param.grad].numElements();
    plan::Shard mine = shardOf(param);
    for (auto [prefix, value] : {std::pair{"exp_avg.", param.expAvg},
                                 {"exp_avg_sq.", param.expAvgSq}}) {
      std::string name = prefix + param.name;
      std::vector<float> data(plan.values[value].numElements(), 0.0f);
      // Each old shard's overlap with this rank's.
      for (int64_t k = 0; k < oldWorld; ++k) {
        plan::Shard old = plan::shardOf(elements, oldWorld, k);
        int64_t begin = std::max(old.offset, mine.offset);
        int64_t end =
            std::min(old.offset + old.count, mine.offset + mine.count);
        if (begin >= end)
          continue;
        std::string path = (checkpoint / files[k]).string();
        const Tensor *tensor = fileOf(k).find(name);
        if (!tensor)
          throw Error(fmt::format("{}: has no tensor '{}'", path, name));
        if (tensor->dtype != DType::F32 || tensor->numElements() != old.count)
          throw Error(fmt::format("{}: tensor '{}' must be F32 with {} "
                                  "elements ({}), got {} {}",
                                  path, name, old.count,
                                  manifested ? "its shard" : "the parameter's",
                                  dtypeName(tensor->dtype),
                                  shapeString(tensor->shape)));
        std::memcpy(data.data() + (begin - mine.offset),
                    tensor->data.data() + (begin - old.offset) * sizeof(float),
                    (end - begin) * sizeof(float));
      }
      if (std::any_of(data.begin(), data.end(),
                      [](float x) { return !std::isfinite(x); }))
        throw Error(fmt::format("{}: tensor '{}' holds a value that is not "
                                "finite",
                                checkpoint.string(), name));
      backend->write(value, data);
    }
  }
}

void Trainer::saveCheckpoint(int64_t step) {
  // Under ZeRO-1 every rank writes its optimizer shard into rank 0's
  // temporary directory, which rank 0 then commits with the rest.
  const bool sharded = plan.optimizerShards() > 1;
  std::optional<CheckpointWriter> files;
  if (writer())
    files.emplace(outDir, step);
  // (Gathered on every rank where the masters are sharded.)
  std::vector<std::vector<float>> masters = readMasters();
  if (sharded) {
    std::string dir = files ? files->pathOf("") : std::string();
    uint64_t length = dir.size();
    comm.broadcast(std::as_writable_bytes(std::span(&length, 1)), 0);
    dir.resize(length);
    comm.broadcast(std::as_writable_bytes(std::span(dir.data(), dir.size())),
                   0);
    std::vector<Tensor> shard;
    for (const Parameter &param : plan.parameters) {
      plan::Shard mine = shardOf(param);
      for (auto [prefix, value] : {std::pair{"exp_avg.", param.expAvg},
                                   {"exp_avg_sq.", param.expAvgSq}}) {
        std::vector<float> data = backend->read(value);
        data.resize(mine.count);
        shard.push_back(floatTensor(prefix + param.name, {mine.count}, data));
      }
    }
    writeSafeTensors(dir + optimizerShardFile(comm.rank(), comm.size()), shard,
                     {{"rank", std::to_string(comm.rank())},
                      {"world_size", std::to_string(comm.size())}});
    comm.barrier(kCheckpointPatience);
    lastSaved = step;
    if (!writer())
      return;
  }
  CheckpointWriter &writer = *files;
  std::vector<Tensor> model, optimizer;
  OptimizerManifest manifest;
  manifest.worldSize = comm.size();
  for (int64_t rank = 0; rank < comm.size(); ++rank)
    manifest.files.push_back(optimizerShardFile(rank, comm.size()));
  for (std::size_t index = 0; index < plan.parameters.size(); ++index) {
    const Parameter &param = plan.parameters[index];
    const std::vector<int64_t> &shape = shapeOf(param);
    model.push_back(floatTensor(param.name, shape, masters[index]));
    manifest.parameters.emplace_back(param.name,
                                     plan.values[param.grad].numElements());
    if (sharded)
      continue;
    optimizer.push_back(floatTensor("exp_avg." + param.name, shape,
                                    backend->read(param.expAvg)));
    optimizer.push_back(floatTensor("exp_avg_sq." + param.name, shape,
                                    backend->read(param.expAvgSq)));
  }
  writeSafeTensors(writer.pathOf(kModelFile), model, {{"format", "pt"}});
  if (sharded) {
    std::string text = optimizerManifestJson(manifest);
    writeFileAtomic(writer.pathOf(kOptimizerManifestFile), toBytes(text));
  } else {
    writeSafeTensors(writer.pathOf(kOptimizerFile), optimizer);
  }
  if (!options.configText.empty())
    writeFileAtomic(writer.pathOf(kConfigFile), toBytes(checkpointConfig()));
  TokenStream::Position position = stream->position();
  TrainerState state;
  state.step = step;
  state.runId = runId;
  state.batch = settings.batch;
  state.seqLen = settings.seqLen;
  state.seed = settings.seed;
  state.position = {position.shard, position.offset, position.epoch, {}};
  if (packer)
    for (const TokenStream::Piece &piece : packer->pending())
      state.position.pending.push_back(
          {piece.shard, piece.offset, piece.length, piece.last});
  state.settings = settings;
  state.model = plan.model;
  fs::path dir = writer.commit(std::move(state));
  std::string name = dir.filename().string();
  writeFileAtomic((outDir / kLatestFile).string(), toBytes(name + "\n"));
  lastSaved = step;
  pruneCheckpoints(outDir, runId, settings.keep, dir);
}

void Trainer::saveGradients(int64_t step, double loss,
                            const std::vector<std::vector<float>> &grads) {
  std::vector<Tensor> tensors;
  tensors.push_back(
      int32Tensor("input_ids", {settings.batch, settings.seqLen}, inputs));
  tensors.push_back(
      int32Tensor("targets", {settings.batch, settings.seqLen}, targets));
  if (packer) {
    // The packed batch as an independent reference needs it: positions per
    // document and the documents over the flattened batch.
    tensors.push_back(int32Tensor(
        "position_ids", {settings.batch, settings.seqLen}, packed.positions));
    std::size_t documents = 0;
    for (const auto &row : packed.documents)
      documents += row.size();
    tensors.push_back(int32Tensor(
        "cu_seqlens", {static_cast<int64_t>(documents) + 1},
        cuSeqlensOf(packed, 0, packed.documents.size(), documents + 1)));
  }
  tensors.push_back(floatTensor("loss", {}, {static_cast<float>(loss)}));
  for (std::size_t i = 0; i < plan.parameters.size(); ++i)
    tensors.push_back(floatTensor(plan.parameters[i].name,
                                  plan.values[plan.parameters[i].grad].shape,
                                  grads[i]));
  writeSafeTensors(options.saveGradsPath, tensors,
                   {{"step", std::to_string(step)},
                    {"content", "input ids, targets, loss and the gradient "
                                "of the loss for every parameter"}});
}

void Trainer::feedMicroBatch(std::size_t begin,
                             std::span<const int32_t> batchInputs,
                             std::span<const int32_t> batchTargets,
                             const PackedRows *rows) {
  const std::size_t microTokens = positions.size();
  backend->writeInt32(plan.input(plan::input::kTokens),
                      batchInputs.subspan(begin, microTokens));
  backend->writeInt32(plan.input(plan::input::kTargets),
                      batchTargets.subspan(begin, microTokens));
  if (!rows) {
    backend->writeInt32(plan.input(plan::input::kPositions), positions);
    return;
  }
  backend->writeInt32(plan.input(plan::input::kPositions),
                      std::span(rows->positions).subspan(begin, microTokens));
  if (packing == Packing::Documents) {
    // The micro-batch's rows, its offsets counted from its first token.
    auto rowLength = static_cast<std::size_t>(settings.seqLen);
    int64_t cu = plan.input(plan::input::kCuSeqlens);
    backend->writeInt32(cu, cuSeqlensOf(*rows, begin / rowLength,
                                        microTokens / rowLength,
                                        plan.values[cu].numElements()));
  }
}

double Trainer::evaluate() {
  // The same tokens every time, from the start of the data: the curve
  // compares like with like.
  valStream->seek({});
  const int64_t ignore = ignoreIndexOf(plan);
  std::optional<DocumentPacker> valPacker;
  if (packer)
    valPacker.emplace(*valStream, endOfText, static_cast<int32_t>(ignore),
                      packing);
  const std::size_t microTokens = positions.size();
  const std::size_t first = microTokens * plan.microBatches * comm.rank();
  const int64_t lossValue = plan.output(plan::output::kLoss);
  std::vector<int32_t> batchInputs, batchTargets;
  PackedRows rows;
  // The loss summed over the counted targets, and their number.
  std::array<double, 2> sums{0, 0};
  for (int64_t b = 0; b < evalBatches; ++b) {
    if (valPacker) {
      valPacker->next(settings.batch, settings.seqLen, rows);
      batchInputs = std::move(rows.inputs);
      batchTargets = std::move(rows.targets);
    } else {
      valStream->nextBatch(static_cast<int>(settings.batch),
                           static_cast<int>(settings.seqLen), batchInputs,
                           batchTargets);
    }
    for (int64_t m = 0; m < plan.microBatches; ++m) {
      std::size_t begin = first + m * microTokens;
      int64_t count = countedTargets(
          std::span(batchTargets).subspan(begin, microTokens), ignore);
      if (count == 0)
        continue;
      feedMicroBatch(begin, batchInputs, batchTargets,
                     valPacker ? &rows : nullptr);
      backend->run(nullptr, Backend::Steps::Evaluate);
      sums[0] += static_cast<double>(count) * backend->read(lossValue)[0];
      sums[1] += static_cast<double>(count);
    }
  }
  comm.allReduceSum(sums);
  return sums[1] > 0 ? sums[0] / sums[1]
                     : std::numeric_limits<double>::quiet_NaN();
}

double Trainer::runStep(int64_t step, bool saveGrads) {
  const int64_t microBatches = plan.microBatches;
  const std::size_t microTokens = positions.size();
  const int64_t ignore = ignoreIndexOf(plan);
  auto counted = [&](std::size_t begin, std::size_t end) {
    return countedTargets(std::span(targets).subspan(begin, end - begin),
                          ignore);
  };
  // Each micro-batch's loss is the mean over its own counted tokens; its
  // gradient is scaled by its share of the global batch's, so that the sum
  // over the micro-batches and the ranks (the all-reduce) is the gradient
  // of the global batch's mean loss. Rank r takes the r-th slice of the
  // global batch, which every rank reads.
  const int64_t total = counted(0, targets.size());
  const std::size_t rankTokens = microTokens * microBatches;
  const std::size_t first = rankTokens * comm.rank();
  int64_t lossValue = plan.output("loss");
  double loss = 0;
  for (int64_t m = 0; m < microBatches; ++m) {
    std::size_t begin = first + m * microTokens, end = begin + microTokens;
    int64_t count = counted(begin, end);
    double share = total > 0
                       ? static_cast<double>(count) / static_cast<double>(total)
                       : 1.0 / static_cast<double>(microBatches * comm.size());
    feedMicroBatch(begin, inputs, targets, packer ? &packed : nullptr);
    backend->write(plan.input(plan::input::kLossScale),
                   std::vector<float>{static_cast<float>(share)});
    bool last = m + 1 == microBatches;
    if (microBatches > 1)
      backend->write(plan.input(plan::input::kMicroStep),
                     std::vector<float>{static_cast<float>(m)});
    backend->run(nullptr, last ? Backend::Steps::LastMicroStep
                               : Backend::Steps::MicroStep);
    // One micro-batch of one rank: its own mean loss, unscaled.
    double partial = backend->read(lossValue)[0];
    loss += share * partial;
  }
  // The step's loss and whether any rank was asked to stop (so that all
  // stop after the same step), in one all-reduce.
  std::array<double, 2> reduced{loss, InterruptGuard::pending() ? 1.0 : 0.0};
  comm.allReduceSum(reduced);
  loss = reduced[0];
  stopAll = reduced[1] > 0;
  if (saveGrads) {
    // Under ZeRO-1 each rank holds only its shard of each reduced gradient.
    std::vector<std::vector<float>> grads;
    for (const Parameter &param : plan.parameters)
      grads.push_back(backend->read(param.grad));
    if (plan.optimizerShards() > 1) {
      std::vector<std::span<float>> buffers(grads.begin(), grads.end());
      comm.allGatherShards(buffers);
    }
    if (writer())
      saveGradients(step, loss, grads);
  }
  backend->run(nullptr, Backend::Steps::Optimizer);
  return loss;
}

std::string Trainer::checkpointConfig() const {
  json config = json::parse(options.configText, nullptr, false);
  if (config.is_discarded() || !config.is_object())
    return options.configText;
  config["torch_dtype"] = "float32";
  return config.dump(2) + "\n";
}

void Trainer::writeLossCurve() {
  std::vector<std::pair<int64_t, double>> curve;
  LossCurveOptions plot;
  plot.logScale = options.logScale;
  std::vector<MetricRecord> records = MetricsLog::read(metricsPath);
  // (metrics.csv: the same records for spreadsheets, rewritten whole.)
  std::string csv = metricsCsv(records);
  writeFileAtomic((outDir / "metrics.csv").string(),
                  std::as_bytes(std::span(csv.data(), csv.size())));
  for (const MetricRecord &record : records) {
    curve.emplace_back(record.step, record.loss);
    plot.learningRate.emplace_back(record.step, record.lr);
    if (!std::isnan(record.valLoss))
      plot.validation.emplace_back(record.step, record.valLoss);
  }
  // (Named by the run's directory.)
  fs::path run = fs::absolute(outDir).lexically_normal();
  if (!run.has_filename())
    run = run.parent_path();
  writeLossCurveSvg(svgPath, curve,
                    fmt::format("{} loss: {}",
                                plan.model.value("architecture", "model"),
                                run.filename().string()),
                    plot);
}

int Trainer::run() {
  if (resumeState) {
    resume();
    if (writer() && fs::exists(metricsPath)) {
      MetricsLog::truncateAfter(metricsPath, firstStep - 1);
      // The run's time and tokens so far continue from its last record.
      std::vector<MetricRecord> before = MetricsLog::read(metricsPath);
      if (!before.empty() && before.back().step == firstStep - 1) {
        if (std::isfinite(before.back().elapsedSeconds))
          elapsedBefore = before.back().elapsedSeconds;
        if (before.back().tokensSeen >= 0)
          tokensSeen = before.back().tokensSeen;
      }
    }
  } else {
    initialise();
  }
  // Rank 0 keeps the metrics and the progress bar.
  std::optional<MetricsLog> metrics;
  if (writer()) {
    metrics.emplace(metricsPath, /*append=*/resumeState.has_value());
    progress.emplace(settings.steps, firstStep, options.progressBar);
  }
  std::string split;
  if (comm.size() > 1)
    split += fmt::format(" over {} ranks ({} each)", comm.size(),
                         settings.batch / comm.size());
  if (plan.microBatches > 1)
    split += fmt::format(" in {} micro-batches of {}", plan.microBatches,
                         plan.modelInt(plan::model::kBatch));
  log(fmt::format(
      "training {} on {}{}: batch {} x {} tokens{}, steps {}-{}",
      plan.model.value("architecture", "the model"), backend->describe(),
      comm.size() > 1 ? ", " + comm.describe() : std::string(), settings.batch,
      settings.seqLen, split, firstStep, settings.steps));

  int64_t logEvery = std::max<int64_t>(1, settings.steps / 20);
  int64_t batch = settings.batch, seqLen = settings.seqLen;
  auto start = std::chrono::steady_clock::now();
  InterruptGuard interrupt;
  int64_t lastStep = firstStep - 1;
  for (int64_t step = firstStep; step <= settings.steps; ++step) {
    // (Several ranks stop together, after the step in which one was asked.)
    if (comm.size() == 1 ? InterruptGuard::pending() != 0 : stopAll)
      break;
    auto stepStart = std::chrono::steady_clock::now();
    int64_t dataTokens = batch * seqLen;
    if (packer) {
      packer->next(batch, seqLen, packed);
      // (The packer fills every row afresh: its copies are not needed.)
      inputs = std::move(packed.inputs);
      targets = std::move(packed.targets);
      dataTokens = packed.dataTokens;
      packedData += dataTokens;
      packedCapacity += batch * seqLen;
    } else {
      stream->nextBatch(static_cast<int>(batch), static_cast<int>(seqLen),
                        inputs, targets);
    }
    double lr = schedule.at(step);
    backend->write(plan.input(plan::input::kLr), std::vector<float>{float(lr)});
    backend->write(plan.input(plan::input::kStep),
                   std::vector<float>{float(step)});
    bool saveGrads = step == firstStep && !options.saveGradsPath.empty();
    double loss = runStep(step, saveGrads);
    double seconds = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - stepStart)
                         .count();
    // (Packed: the data tokens, not the padding.)
    double tokensPerSecond = dataTokens / std::max(seconds, 1e-9);
    stepSeconds += seconds;
    if (!std::isfinite(loss))
      throw Error(fmt::format("the loss is {} at step {}; lower --lr or "
                              "check the data",
                              loss, step));
    lastStep = step;
    bool save = settings.saveEvery > 0 && step % settings.saveEvery == 0 &&
                step != settings.steps && !options.noCheckpoint;
    // (Rank 0 logs it; read before the evaluation, whose forward reuses the
    // step's memory.)
    double gradNorm = std::numeric_limits<double>::quiet_NaN();
    if (writer() && plan.outputs.count(plan::output::kGradNorm))
      gradNorm = backend->read(plan.output(plan::output::kGradNorm))[0];
    double valLoss = std::numeric_limits<double>::quiet_NaN();
    bool evaluated =
        valStream && (step % settings.evalEvery == 0 || step == settings.steps);
    if (evaluated)
      valLoss = evaluate();
    if (writer()) {
      tokensSeen += dataTokens;
      MetricRecord record{step,
                          loss,
                          lr,
                          tokensPerSecond,
                          gradNorm,
                          elapsedBefore +
                              std::chrono::duration<double>(
                                  std::chrono::steady_clock::now() - start)
                                  .count(),
                          tokensSeen,
                          mfuOf(seconds),
                          valLoss};
      metrics->write(record);
      std::string validation =
          evaluated ? fmt::format(" | val loss {:.4f} ppl {:.4g}", valLoss,
                                  std::exp(valLoss))
                    : std::string();
      uint64_t epoch = stream->position().epoch;
      std::string epochText =
          epoch > 0 ? fmt::format(" (epoch {})", epoch + 1) : std::string();
      if (options.progressBar) {
        progress->update(
            step, loss, tokensPerSecond,
            fmt::format("lr {:.3g} | norm {:.3g}{}{}", lr, gradNorm, epochText,
                        packer && packedCapacity > 0
                            ? fmt::format(" | {:.0f}% packed", packedPercent())
                            : std::string()));
        if (evaluated)
          log(fmt::format("step {}/{}{}", step, settings.steps,
                          validation.substr(2)));
      } else if (evaluated || step == firstStep || step % logEvery == 0 ||
                 step == settings.steps) {
        log(fmt::format("step {}/{}{} loss {:.4f} lr {:.3g} norm {:.3g} {} "
                        "tok/s{}{}",
                        step, settings.steps, epochText, loss, lr, gradNorm,
                        formatRate(tokensPerSecond), packingText(),
                        validation));
      }
    }
    if (save && (writer() || plan.optimizerShards() > 1))
      saveCheckpoint(step);
    // The other ranks wait for rank 0's checkpoint here, not in the next
    // step's first collective, whose timeout is for a rank that died.
    if (save && comm.size() > 1)
      comm.barrier(kCheckpointPatience);
  }
  bool finalSave = lastStep > lastSaved && !options.noCheckpoint;
  if (!writer()) {
    if (finalSave && plan.optimizerShards() > 1)
      saveCheckpoint(lastStep);
    return InterruptGuard::pending() ? 128 + InterruptGuard::pending() : 0;
  }
  progress->finish();
  if (finalSave)
    saveCheckpoint(lastStep);
  writeLossCurve();
  std::string saved =
      lastSaved > 0
          ? (outDir / CheckpointWriter::directoryName(lastSaved)).string()
          : std::string("none (--no-checkpoint)");

  if (int signal = InterruptGuard::pending();
      signal && lastStep < settings.steps) {
    std::fprintf(stderr,
                 "stopped by %s after step %lld of %lld\n  checkpoint: %s\n  "
                 "loss curve: %s\n  metrics:    %s\n",
                 InterruptGuard::name(signal), static_cast<long long>(lastStep),
                 static_cast<long long>(settings.steps), saved.c_str(),
                 svgPath.c_str(), metricsPath.c_str());
    if (lastSaved > 0)
      std::fprintf(stderr, "resume with: %s --resume %s\n",
                   options.command.c_str(), outDir.string().c_str());
    return 128 + signal;
  }
  if (std::getenv("KILN_PROFILE")) {
    std::vector<std::pair<double, std::string>> rows;
    double total = 0;
    for (const auto &[key, secs] : backend->kernelSeconds()) {
      rows.emplace_back(secs, key);
      total += secs;
    }
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "host kernel time over %lld steps:\n",
                 static_cast<long long>(settings.steps - firstStep + 1));
    for (const auto &[secs, key] : rows)
      std::fprintf(stderr, "  %6.1f%%  %8.3fs  %s\n", 100 * secs / total, secs,
                   key.c_str());
  }
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::fprintf(stderr,
               "trained steps %lld-%lld in %s\n  checkpoint: %s\n  loss "
               "curve: %s\n  metrics:    %s\n",
               static_cast<long long>(firstStep),
               static_cast<long long>(settings.steps),
               formatDuration(elapsed).c_str(), saved.c_str(), svgPath.c_str(),
               metricsPath.c_str());
  if (std::isfinite(flopsPerStep) && std::isfinite(peakFlops) &&
      stepSeconds > 0) {
    int64_t ran = lastStep - firstStep + 1;
    std::fprintf(stderr,
                 "  mfu:        %.2f%% (cost-model FLOPs, %.3g a step, over "
                 "%s's peak of %.3g FLOP/s; %.3g model FLOP/s)\n",
                 100 * mfuOf(stepSeconds / static_cast<double>(ran)),
                 flopsPerStep, peakTarget.c_str(), peakFlops,
                 flopsPerStep * static_cast<double>(ran) / stepSeconds);
  }
  if (packer && packedCapacity > 0)
    std::fprintf(stderr,
                 "  packing:    %s, %.1f%% of the rows' tokens were data "
                 "(%lld of %lld)\n",
                 plan.model.value(plan::model::kPacking, "").c_str(),
                 packedPercent(), static_cast<long long>(packedData),
                 static_cast<long long>(packedCapacity));
  // A signal during the last step or the final save: the run is complete.
  if (int signal = InterruptGuard::pending())
    return 128 + signal;
  return 0;
}

/// Reads the compiled settings for `kiln train --resume`.
CompiledSettings compiledSettingsOf(const std::string &resumeDir) {
  std::vector<std::string> notes;
  fs::path dir = findCheckpoint(resumeDir, notes);
  TrainerState state = readTrainerState(dir / kTrainerStateFile);
  CompiledSettings compiled;
  compiled.batch = state.batch;
  if (auto micro = state.model.find(plan::model::kMicroBatches);
      micro != state.model.end() && micro->is_number_integer())
    compiled.microBatches = micro->get<int64_t>();
  compiled.seqLen = state.seqLen;
  if (auto zero = state.model.find(plan::model::kZero);
      zero != state.model.end() && zero->is_number_integer())
    compiled.zero = zero->get<int64_t>();
  if (auto packing = state.model.find(plan::model::kPacking);
      packing != state.model.end() && packing->is_string())
    compiled.packing = packing->get<std::string>();
  if (auto eot = state.model.find(plan::model::kEot);
      eot != state.model.end() && eot->is_number_integer())
    compiled.eot = eot->get<int64_t>();
  if (state.settings) {
    compiled.precision = state.settings->precision;
    compiled.weightDecay = state.settings->weightDecay;
    compiled.gradClip = state.settings->gradClip;
    compiled.beta1 = state.settings->beta1;
    compiled.beta2 = state.settings->beta2;
    compiled.eps = state.settings->eps;
  }
  return compiled;
}

} // namespace

int runTraining(const TrainOptions &options) noexcept {
  std::unique_ptr<Communicator> comm;
  try {
    comm = createCommunicator();
    Trainer trainer(options, *comm);
    return trainer.run();
  } catch (const std::exception &error) {
    if (!comm || comm->size() == 1) {
      std::fprintf(stderr, "\nkiln: error: %s\n", error.what());
      return 1;
    }
    // The other ranks may wait in a collective for this one: end the job
    // (never MPI_Finalize, which would wait for them).
    std::fprintf(stderr, "\nkiln: error: rank %d: %s\n", comm->rank(),
                 error.what());
    std::fflush(stderr);
    comm->abort(1);
  }
}

bool readCompiledSettings(const std::string &resumeDir,
                          CompiledSettings &settings,
                          std::string &error) noexcept {
  try {
    settings = compiledSettingsOf(resumeDir);
    return true;
  } catch (const std::exception &failure) {
    error = failure.what();
    return false;
  }
}

} // namespace kiln::rt
