//===- Trainer.cpp - The training loop ------------------------------------===//

#include "runtime/train/Trainer.h"

#include "runtime/Backend.h"
#include "runtime/Error.h"
#include "runtime/Plan.h"
#include "runtime/io/AtomicFile.h"
#include "runtime/io/ByteTokenizer.h"
#include "runtime/io/InputFile.h"
#include "runtime/io/SafeTensors.h"
#include "runtime/io/TokenShard.h"
#include "runtime/train/Metrics.h"
#include "runtime/train/Random.h"
#include "runtime/train/Schedule.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <span>

namespace fs = std::filesystem;
using nlohmann::json;

namespace kiln::rt {

namespace {

constexpr const char *kStateFile = "trainer_state.json";
constexpr const char *kModelFile = "model.safetensors";
constexpr const char *kOptimizerFile = "optimizer.safetensors";
constexpr const char *kLatestFile = "latest";

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

/// Loads a tensor of a safetensors file into an f32 value of the step,
/// checking its shape.
void loadTensor(Backend &backend, int64_t value, const SafeTensors &file,
                const std::string &name, const std::string &path) {
  const Tensor *tensor = file.find(name);
  if (!tensor)
    throw Error(fmt::format("{}: has no tensor '{}'", path, name));
  const ValueInfo &info = backend.plan().values[value];
  if (tensor->shape != info.shape)
    throw Error(fmt::format("{}: tensor '{}' has shape {}, the model expects "
                            "{}",
                            path, name, shapeString(tensor->shape),
                            shapeString(info.shape)));
  std::vector<float> data(info.numElements());
  if (tensor->dtype == DType::F32) {
    std::memcpy(data.data(), tensor->data.data(), tensor->data.size());
  } else if (tensor->dtype == DType::BF16) {
    const auto *bits = reinterpret_cast<const uint16_t *>(tensor->data.data());
    for (std::size_t i = 0; i < data.size(); ++i) {
      uint32_t word = static_cast<uint32_t>(bits[i]) << 16;
      std::memcpy(&data[i], &word, sizeof(float));
    }
  } else {
    throw Error(fmt::format("{}: tensor '{}' is {}; expected F32 or BF16", path,
                            name, dtypeName(tensor->dtype)));
  }
  backend.write(value, data);
}

/// Token data: llm.c shards as given; text files are tokenized byte by byte
/// into a shard in the output directory first.
std::vector<std::string> resolveData(const std::vector<std::string> &inputs,
                                     const fs::path &outDir, int64_t vocab) {
  if (inputs.empty())
    throw Error("no training data: pass --data <token shards, a directory "
                "of them, or text files>");
  std::vector<std::string> shards, texts;
  for (const std::string &input : inputs) {
    if (fs::is_directory(input)) {
      std::vector<std::string> found;
      for (const auto &entry : fs::directory_iterator(input))
        if (entry.path().extension() == ".bin")
          found.push_back(entry.path().string());
      if (found.empty())
        throw Error(
            fmt::format("{}: no .bin token shards in this directory", input));
      std::sort(found.begin(), found.end());
      shards.insert(shards.end(), found.begin(), found.end());
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
    (shard ? shards : texts).push_back(input);
  }
  if (!texts.empty()) {
    if (vocab < static_cast<int64_t>(kByteVocabSize))
      throw Error(fmt::format(
          "{} is text, which Kiln tokenizes byte by byte (vocabulary {}), "
          "but the model's vocab_size is {}; give token shards made with the "
          "model's tokenizer instead",
          texts.front(), kByteVocabSize, vocab));
    std::vector<uint32_t> tokens = tokenizeFiles(texts);
    fs::create_directories(outDir / "tokens");
    std::string shard = (outDir / "tokens" / "train_000.bin").string();
    writeTokenShard(shard, tokens, /*version=*/1);
    shards.push_back(shard);
  }
  return shards;
}

class Trainer {
public:
  explicit Trainer(const TrainOptions &options);
  void run();

private:
  void initialise();
  void resume(const fs::path &checkpoint);
  void saveCheckpoint(int64_t step);
  void saveGradients(int64_t step, double loss);
  void log(const std::string &line);

  const TrainOptions &options;
  fs::path outDir;
  Plan plan;
  std::unique_ptr<Backend> backend;
  std::optional<TokenStream> stream;
  std::optional<ProgressBar> progress;
  LrSchedule schedule{};
  int64_t batch = 0, seqLen = 0, vocab = 0;
  int64_t firstStep = 1; ///< the step this process starts with
  std::vector<int32_t> inputs, targets, positions;
};

Trainer::Trainer(const TrainOptions &options) : options(options) {
  if (options.steps <= 0)
    throw Error(fmt::format("--steps must be positive, got {}", options.steps));
  outDir = options.outDir;
  std::error_code ec;
  fs::create_directories(outDir, ec);
  if (ec || !fs::is_directory(outDir))
    throw Error(fmt::format("cannot create the output directory {}: {}",
                            outDir.string(),
                            ec ? ec.message() : "not a directory"));
  plan = Plan::parse(options.planText, options.planSource);
  writeFileAtomic((outDir / "plan.json").string(), toBytes(options.planText));
  backend = createBackend(plan, options.backend);
  batch = plan.modelInt("batch");
  seqLen = plan.modelInt("seq_len");
  vocab = plan.modelInt("vocab_size");

  int64_t warmup = options.warmupSteps >= 0
                       ? options.warmupSteps
                       : std::min<int64_t>(100, options.steps / 10);
  schedule = LrSchedule{options.lr, warmup, options.steps, options.minLrRatio};
  schedule.validate();

  stream.emplace(resolveData(options.data, outDir, vocab),
                 static_cast<uint32_t>(vocab));
  positions.resize(batch * seqLen);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < seqLen; ++s)
      positions[b * seqLen + s] = static_cast<int32_t>(s);
}

void Trainer::log(const std::string &line) {
  if (progress)
    progress->printAbove(line);
  else
    std::fprintf(stderr, "%s\n", line.c_str());
}

void Trainer::initialise() {
  Rng rng(options.seed);
  std::optional<SafeTensors> init;
  if (!options.initPath.empty())
    init = readSafeTensors(options.initPath);
  for (const Parameter &param : plan.parameters) {
    const ValueInfo &info = plan.values[param.value];
    if (init) {
      loadTensor(*backend, param.value, *init, param.name, options.initPath);
    } else {
      std::vector<float> data(info.numElements(), 0.0f);
      if (param.init == "ones") {
        std::fill(data.begin(), data.end(), 1.0f);
      } else if (param.init.rfind("normal:", 0) == 0) {
        double std = std::stod(param.init.substr(7));
        fillNormal(rng, data.data(), info.numElements(), 0.0, std);
      } else if (param.init != "zeros") {
        throw Error(fmt::format("parameter '{}': unknown init '{}'", param.name,
                                param.init));
      }
      backend->write(param.value, data);
    }
    // Optimizer moments start at zero (the arena is zeroed).
  }
}

void Trainer::resume(const fs::path &where) {
  fs::path checkpoint = where;
  if (fs::exists(where / kLatestFile)) {
    std::vector<std::byte> name =
        InputFile((where / kLatestFile).string()).readAll();
    std::string text(reinterpret_cast<const char *>(name.data()), name.size());
    text.erase(text.find_last_not_of(" \n\r\t") + 1);
    checkpoint = where / text;
  }
  fs::path statePath = checkpoint / kStateFile;
  if (!fs::exists(statePath))
    throw Error(fmt::format("{}: not a checkpoint (no {}) and no '{}' file "
                            "naming one",
                            where.string(), kStateFile, kLatestFile));
  std::vector<std::byte> stateBytes = InputFile(statePath.string()).readAll();
  json state = json::parse(stateBytes.begin(), stateBytes.end(), nullptr,
                           /*allow_exceptions=*/false);
  if (state.is_discarded() || !state.is_object() || !state.contains("step") ||
      !state.contains("data_position"))
    throw Error(fmt::format("{}: corrupt trainer state", statePath.string()));
  if (state.value("batch", int64_t(0)) != batch ||
      state.value("seq_len", int64_t(0)) != seqLen)
    throw Error(fmt::format(
        "{}: the checkpoint was trained with batch {} and sequence length "
        "{}, this run uses {} and {}",
        statePath.string(), state.value("batch", int64_t(0)),
        state.value("seq_len", int64_t(0)), batch, seqLen));

  std::string modelPath = (checkpoint / kModelFile).string();
  std::string optimizerPath = (checkpoint / kOptimizerFile).string();
  SafeTensors model = readSafeTensors(modelPath);
  SafeTensors optimizer = readSafeTensors(optimizerPath);
  for (const Parameter &param : plan.parameters) {
    loadTensor(*backend, param.value, model, param.name, modelPath);
    loadTensor(*backend, param.expAvg, optimizer, "exp_avg." + param.name,
               optimizerPath);
    loadTensor(*backend, param.expAvgSq, optimizer, "exp_avg_sq." + param.name,
               optimizerPath);
  }
  const json &position = state["data_position"];
  stream->seek(TokenStream::Position{position.at("shard").get<std::size_t>(),
                                     position.at("offset").get<std::size_t>(),
                                     position.at("epoch").get<uint64_t>()});
  firstStep = state["step"].get<int64_t>() + 1;
  log(fmt::format("resuming from {} at step {}", checkpoint.string(),
                  firstStep));
}

void Trainer::saveCheckpoint(int64_t step) {
  std::string name = fmt::format("checkpoint-{:06}", step);
  fs::path dir = outDir / name;
  fs::create_directories(dir);
  std::vector<Tensor> model, optimizer;
  for (const Parameter &param : plan.parameters) {
    const std::vector<int64_t> &shape = plan.values[param.value].shape;
    model.push_back(floatTensor(param.name, shape, backend->read(param.value)));
    optimizer.push_back(floatTensor("exp_avg." + param.name, shape,
                                    backend->read(param.expAvg)));
    optimizer.push_back(floatTensor("exp_avg_sq." + param.name, shape,
                                    backend->read(param.expAvgSq)));
  }
  writeSafeTensors((dir / kModelFile).string(), model, {{"format", "pt"}});
  writeSafeTensors((dir / kOptimizerFile).string(), optimizer);
  if (!options.configText.empty())
    writeFileAtomic((dir / "config.json").string(),
                    toBytes(options.configText));
  TokenStream::Position position = stream->position();
  json state = {{"step", step},
                {"batch", batch},
                {"seq_len", seqLen},
                {"seed", options.seed},
                {"data_position",
                 {{"shard", position.shard},
                  {"offset", position.offset},
                  {"epoch", position.epoch}}}};
  // The state is written last: a checkpoint without it is incomplete and is
  // never named by `latest`.
  writeFileAtomic((dir / kStateFile).string(), toBytes(state.dump(2)));
  writeFileAtomic((outDir / kLatestFile).string(), toBytes(name + "\n"));

  // Keep the newest few checkpoints.
  std::vector<fs::path> all;
  for (const auto &entry : fs::directory_iterator(outDir))
    if (entry.is_directory() &&
        entry.path().filename().string().rfind("checkpoint-", 0) == 0)
      all.push_back(entry.path());
  std::sort(all.begin(), all.end());
  for (std::size_t i = 0; i + std::max(options.keepCheckpoints, 1) < all.size();
       ++i)
    fs::remove_all(all[i]);
}

void Trainer::saveGradients(int64_t step, double loss) {
  std::vector<Tensor> tensors;
  tensors.push_back(int32Tensor("input_ids", {batch, seqLen}, inputs));
  tensors.push_back(int32Tensor("targets", {batch, seqLen}, targets));
  tensors.push_back(floatTensor("loss", {}, {static_cast<float>(loss)}));
  for (const Parameter &param : plan.parameters)
    tensors.push_back(floatTensor(param.name, plan.values[param.grad].shape,
                                  backend->read(param.grad)));
  writeSafeTensors(options.saveGradsPath, tensors,
                   {{"step", std::to_string(step)},
                    {"content", "input ids, targets, loss and the gradient "
                                "of the loss for every parameter"}});
}

void Trainer::run() {
  std::string metricsPath = (outDir / "metrics.jsonl").string();
  if (!options.resumeDir.empty()) {
    resume(options.resumeDir);
    if (fs::exists(metricsPath))
      MetricsLog::truncateAfter(metricsPath, firstStep - 1);
  } else {
    initialise();
  }
  MetricsLog metrics(metricsPath, /*append=*/!options.resumeDir.empty());
  if (firstStep > options.steps)
    throw Error(fmt::format("the checkpoint is at step {}, which is not "
                            "before --steps {}",
                            firstStep - 1, options.steps));
  progress.emplace(options.steps, firstStep, options.progressBar);
  log(fmt::format("training {} on {}: batch {} x {} tokens, steps {}-{}",
                  plan.model.value("architecture", "the model"),
                  backend->describe(), batch, seqLen, firstStep,
                  options.steps));

  int64_t lossValue = plan.output("loss");
  int64_t logEvery = std::max<int64_t>(1, options.steps / 20);
  auto start = std::chrono::steady_clock::now();
  for (int64_t step = firstStep; step <= options.steps; ++step) {
    auto stepStart = std::chrono::steady_clock::now();
    stream->nextBatch(static_cast<int>(batch), static_cast<int>(seqLen), inputs,
                      targets);
    backend->writeInt32(plan.input("tokens"), inputs);
    backend->writeInt32(plan.input("targets"), targets);
    backend->writeInt32(plan.input("positions"), positions);
    double lr = schedule.at(step);
    backend->write(plan.input("lr"), std::vector<float>{float(lr)});
    backend->write(plan.input("step"), std::vector<float>{float(step)});
    bool saveGrads = step == firstStep && !options.saveGradsPath.empty();
    backend->run([&](char chunk) {
      if (chunk == 'O' && saveGrads)
        saveGradients(step, backend->read(lossValue)[0]);
    });
    double loss = backend->read(lossValue)[0];
    double seconds = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - stepStart)
                         .count();
    double tokensPerSecond = batch * seqLen / std::max(seconds, 1e-9);
    if (!std::isfinite(loss))
      throw Error(fmt::format("the loss is {} at step {}; lower --lr or "
                              "check the data",
                              loss, step));
    metrics.write(step, loss, lr, tokensPerSecond);
    if (options.progressBar)
      progress->update(step, loss, tokensPerSecond);
    else if (step == firstStep || step % logEvery == 0 || step == options.steps)
      log(fmt::format("step {}/{} loss {:.4f} lr {:.3g} {} tok/s", step,
                      options.steps, loss, lr, formatRate(tokensPerSecond)));
    if (options.saveEvery > 0 && step % options.saveEvery == 0 &&
        step != options.steps)
      saveCheckpoint(step);
  }
  progress->finish();
  saveCheckpoint(options.steps);

  std::vector<std::pair<int64_t, double>> curve;
  for (const MetricRecord &record : MetricsLog::read(metricsPath))
    curve.emplace_back(record.step, record.loss);
  std::string svg = (outDir / "loss.svg").string();
  writeLossCurveSvg(svg, curve,
                    fmt::format("{} training loss",
                                plan.model.value("architecture", "model")));
  if (std::getenv("KILN_PROFILE")) {
    std::vector<std::pair<double, std::string>> rows;
    double total = 0;
    for (const auto &[key, secs] : backend->kernelSeconds()) {
      rows.emplace_back(secs, key);
      total += secs;
    }
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "host kernel time over %lld steps:\n",
                 static_cast<long long>(options.steps - firstStep + 1));
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
               static_cast<long long>(options.steps),
               formatDuration(elapsed).c_str(),
               (outDir / fmt::format("checkpoint-{:06}", options.steps))
                   .string()
                   .c_str(),
               svg.c_str(), metricsPath.c_str());
}

} // namespace

int runTraining(const TrainOptions &options) noexcept {
  try {
    Trainer trainer(options);
    trainer.run();
    return 0;
  } catch (const std::exception &error) {
    std::fprintf(stderr, "\nkiln: error: %s\n", error.what());
    return 1;
  }
}

int runTokenize(const std::vector<std::string> &inputs,
                const std::string &output) noexcept {
  try {
    if (inputs.empty())
      throw Error("no input files to tokenize");
    std::vector<uint32_t> tokens = tokenizeFiles(inputs);
    if (fs::path parent = fs::path(output).parent_path(); !parent.empty())
      fs::create_directories(parent);
    writeTokenShard(output, tokens, /*version=*/1);
    std::fprintf(stderr, "wrote %zu tokens (byte-level, vocabulary %u) to %s\n",
                 tokens.size(), kByteVocabSize, output.c_str());
    return 0;
  } catch (const std::exception &error) {
    std::fprintf(stderr, "kiln: error: %s\n", error.what());
    return 1;
  }
}

} // namespace kiln::rt
