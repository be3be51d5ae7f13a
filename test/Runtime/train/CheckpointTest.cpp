//===- CheckpointTest.cpp - Checkpoints of a training run -----------------===//
//
// The trainer state round-trips and every bad field is refused by name;
// checkpoints are written whole (never a half-written directory), their
// checksums catch a changed byte, pruning removes only the current run's
// older checkpoints, `latest` falls back to the newest complete checkpoint,
// stale temporaries are removed, and config differences name the key.
//
//===----------------------------------------------------------------------===//

#include "runtime/train/Checkpoint.h"
#include "runtime/Error.h"

#include "test/Runtime/io/IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

using namespace kiln::rt;
using kiln::rt::testing::bytesOf;
using kiln::rt::testing::errorMessage;
using kiln::rt::testing::readBytes;
using kiln::rt::testing::TempDir;
using kiln::rt::testing::writeBytes;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

TrainerState sampleState(int64_t step, const std::string &runId) {
  TrainerState state;
  state.step = step;
  state.runId = runId;
  state.batch = 4;
  state.seqLen = 64;
  state.seed = 7;
  state.position = {1, 1234, 2};
  RunSettings s;
  s.steps = 40;
  s.lr = 3e-3;
  s.warmupSteps = 4;
  s.minLrRatio = 0.1;
  s.seed = 7;
  s.saveEvery = 10;
  s.keep = 2;
  s.data = {"/data/a.bin", "/data/b.bin"};
  s.batch = 4;
  s.seqLen = 64;
  s.precision = "bf16";
  s.weightDecay = 0.1;
  s.gradClip = 1.0;
  state.settings = s;
  state.model = {{"architecture", "LlamaForCausalLM"}, {"vocab_size", 320}};
  return state;
}

/// Writes a complete checkpoint of `step` into `outDir`.
fs::path writeCheckpoint(const fs::path &outDir, int64_t step,
                         const std::string &runId,
                         const std::string &model = "model bytes") {
  CheckpointWriter writer(outDir, step);
  writeBytes(writer.pathOf(kModelFile), bytesOf(model));
  writeBytes(writer.pathOf(kOptimizerFile), bytesOf("optimizer bytes"));
  return writer.commit(sampleState(step, runId));
}

std::vector<std::string> names(const fs::path &dir) {
  std::vector<std::string> result;
  for (const auto &entry : fs::directory_iterator(dir))
    result.push_back(entry.path().filename().string());
  std::sort(result.begin(), result.end());
  return result;
}

TEST(TrainerStateTest, RoundTrips) {
  TempDir dir;
  fs::path ckpt = writeCheckpoint(dir.path(), 20, "abc");
  TrainerState state = readTrainerState(ckpt / kTrainerStateFile);
  TrainerState expected = sampleState(20, "abc");
  EXPECT_EQ(state.step, 20);
  EXPECT_EQ(state.runId, "abc");
  EXPECT_EQ(state.position.offset, 1234u);
  ASSERT_TRUE(state.settings.has_value());
  EXPECT_EQ(*state.settings, *expected.settings);
  EXPECT_EQ(state.model, expected.model);
  EXPECT_EQ(state.checksums.size(), 2u);
  EXPECT_NO_THROW(verifyCheckpoint(ckpt, state));
}

// The evaluation settings round-trip; a state written before runs
// evaluated (without them) reads as unset (-1), which is written back
// unset.
TEST(TrainerStateTest, EvaluationSettingsRoundTrip) {
  TempDir dir;
  TrainerState given = sampleState(4, "abc");
  given.settings->valData = {"/data/val.bin"};
  given.settings->evalEvery = 25;
  given.settings->evalTokens = 4096;
  CheckpointWriter writer(dir.path(), 4);
  writeBytes(writer.pathOf(kModelFile), bytesOf("model"));
  writeBytes(writer.pathOf(kOptimizerFile), bytesOf("optimizer"));
  fs::path ckpt = writer.commit(given);
  TrainerState state = readTrainerState(ckpt / kTrainerStateFile);
  ASSERT_TRUE(state.settings.has_value());
  EXPECT_EQ(state.settings->valData, given.settings->valData);
  EXPECT_EQ(state.settings->evalEvery, 25);
  EXPECT_EQ(state.settings->evalTokens, 4096);

  TrainerState old = readTrainerState(writeCheckpoint(dir.path(), 8, "abc") /
                                      kTrainerStateFile);
  EXPECT_TRUE(old.settings->valData.empty());
  EXPECT_EQ(old.settings->evalEvery, -1);
  EXPECT_EQ(old.settings->evalTokens, -1);
}

// Every field of the state is checked, and the error names the file and
// the field with the value found.
TEST(TrainerStateTest, RefusesBadFields) {
  TempDir dir;
  fs::path ckpt = writeCheckpoint(dir.path(), 20, "abc");
  fs::path path = ckpt / kTrainerStateFile;
  std::vector<std::byte> bytes = readBytes(path.string());
  json good = json::parse(
      std::string(reinterpret_cast<const char *>(bytes.data()), bytes.size()));
  struct Case {
    std::string pointer;
    json value;
    std::string message;
  };
  std::vector<Case> cases = {
      {"/step", -3, "field 'step' must be an integer >= 1, got -3"},
      {"/step", "ten",
       "field 'step' must be an integer, got the string "
       "\"ten\""},
      {"/step", 41, "field 'step' (41) is past the run's steps (40)"},
      {"/step", 2.5, "field 'step' must be an integer, got 2.5"},
      {"/batch", 0, "field 'batch' must be an integer >= 1, got 0"},
      {"/seed", -1, "field 'seed' must be a non-negative integer, got -1"},
      {"/data_position", "x", "field 'data_position' must be an object"},
      {"/data_position/offset", -5,
       "field 'data_position.offset' must be a non-negative integer"},
      {"/run_id", "", "field 'run_id' must not be empty"},
      {"/format", 99, "field 'format' is 99, newer than this Kiln reads"},
      {"/settings/lr", "fast", "field 'settings.lr' must be a number"},
      {"/settings/lr", -1, "field 'settings.lr' must be a finite number >= 0"},
      {"/settings/steps", 0, "field 'settings.steps' must be an integer >= 1"},
      {"/settings/keep", -2, "field 'settings.keep' must be an integer >= 0"},
      {"/settings/data", json::array(),
       "field 'settings.data' must be a non-empty array of file names"},
      {"/settings/precision", "fp16",
       "field 'settings.precision' must be \"bf16\" or \"fp32\""},
      {"/settings/batch", 8, "field 'settings' say batch 8 x 64 tokens"},
      {"/settings/val_data", "val.bin",
       "field 'settings.val_data' must be an array of file names"},
      {"/settings/eval_every", -1,
       "field 'settings.eval_every' must be an integer >= 0"},
      {"/settings/eval_tokens", 0,
       "field 'settings.eval_tokens' must be an integer >= 1"},
      {"/files/model.safetensors", "abc",
       "field 'files.model.safetensors' must be a SHA-256"},
      {"/files", json::object(), "field 'files' must list"},
  };
  for (const Case &c : cases) {
    json state = good;
    state[json::json_pointer(c.pointer)] = c.value;
    std::string text = state.dump();
    writeBytes(path.string(), bytesOf(text));
    std::string message = errorMessage([&] { readTrainerState(path); });
    EXPECT_THAT(message, HasSubstr(path.string())) << c.pointer;
    EXPECT_THAT(message, HasSubstr(c.message)) << c.pointer;
  }
  json missing = good;
  missing.erase("data_position");
  writeBytes(path.string(), bytesOf(missing.dump()));
  EXPECT_THAT(errorMessage([&] { readTrainerState(path); }),
              HasSubstr("field 'data_position' is missing"));
  writeBytes(path.string(), bytesOf("{\"step\": "));
  EXPECT_THAT(errorMessage([&] { readTrainerState(path); }),
              HasSubstr("not valid JSON"));
  writeBytes(path.string(), bytesOf("[1, 2]"));
  EXPECT_THAT(errorMessage([&] { readTrainerState(path); }),
              HasSubstr("expected a JSON object"));
}

// States written before format 2 (step, batch, shape, seed, position) load.
TEST(TrainerStateTest, ReadsFormatOne) {
  TempDir dir;
  fs::path path = dir.path() / kTrainerStateFile;
  writeBytes(path.string(),
             bytesOf(R"({"step": 20, "batch": 4, "seq_len": 64, "seed": 0,
                         "data_position": {"shard": 0, "offset": 5,
                                           "epoch": 0}})"));
  TrainerState state = readTrainerState(path);
  EXPECT_EQ(state.format, 1);
  EXPECT_EQ(state.step, 20);
  EXPECT_FALSE(state.settings.has_value());
  EXPECT_TRUE(state.checksums.empty());
}

// One changed byte of a file is caught, naming the file; so is a missing one.
TEST(CheckpointTest, ChecksumsCatchChangedFiles) {
  TempDir dir;
  fs::path ckpt = writeCheckpoint(dir.path(), 5, "abc");
  TrainerState state = readTrainerState(ckpt / kTrainerStateFile);
  writeBytes((ckpt / kModelFile).string(), bytesOf("model bytez"));
  EXPECT_THAT(errorMessage([&] { verifyCheckpoint(ckpt, state); }),
              HasSubstr((ckpt / kModelFile).string() +
                        ": the file changed after it was saved"));
  fs::remove(ckpt / kModelFile);
  EXPECT_THAT(errorMessage([&] { verifyCheckpoint(ckpt, state); }),
              HasSubstr("model.safetensors: missing"));
}

// A checkpoint directory appears whole: an uncommitted writer leaves
// nothing, and rewriting a step replaces the old directory.
TEST(CheckpointTest, WrittenWholeOrNotAtAll) {
  TempDir dir;
  {
    CheckpointWriter writer(dir.path(), 3);
    writeBytes(writer.pathOf(kModelFile), bytesOf("half"));
  }
  EXPECT_TRUE(names(dir.path()).empty());
  writeCheckpoint(dir.path(), 3, "abc", "first");
  writeCheckpoint(dir.path(), 3, "abc", "second");
  EXPECT_THAT(names(dir.path()), ElementsAre("checkpoint-000003"));
  std::vector<std::byte> model =
      readBytes((dir.path() / "checkpoint-000003" / kModelFile).string());
  EXPECT_EQ(model, bytesOf("second"));
}

// Pruning keeps the newest `keep` of this run and never touches another
// run's checkpoints, the one just written or the one `latest` names.
TEST(CheckpointTest, PrunesOnlyTheCurrentRun) {
  TempDir dir;
  for (int64_t step : {15, 20})
    writeCheckpoint(dir.path(), step, "old-run");
  fs::path newest;
  for (int64_t step : {5, 10})
    newest = writeCheckpoint(dir.path(), step, "new-run");
  std::vector<fs::path> removed =
      pruneCheckpoints(dir.path(), "new-run", 1, newest);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].filename(), "checkpoint-000005");
  EXPECT_THAT(names(dir.path()),
              ElementsAre("checkpoint-000010", "checkpoint-000015",
                          "checkpoint-000020"));
  // `latest` protects its checkpoint even when it is not the newest.
  writeCheckpoint(dir.path(), 12, "new-run");
  writeBytes((dir.path() / kLatestFile).string(),
             bytesOf("checkpoint-000010\n"));
  fs::path last = writeCheckpoint(dir.path(), 14, "new-run");
  pruneCheckpoints(dir.path(), "new-run", 1, last);
  EXPECT_THAT(names(dir.path()),
              ElementsAre("checkpoint-000010", "checkpoint-000014",
                          "checkpoint-000015", "checkpoint-000020", "latest"));
  // keep 0 keeps everything.
  EXPECT_TRUE(pruneCheckpoints(dir.path(), "new-run", 0, last).empty());
}

TEST(CheckpointTest, LatestFallsBackToTheNewestComplete) {
  TempDir dir;
  writeCheckpoint(dir.path(), 5, "abc");
  writeCheckpoint(dir.path(), 10, "abc");
  writeBytes((dir.path() / kLatestFile).string(),
             bytesOf("checkpoint-000015\n"));
  std::vector<std::string> notes;
  EXPECT_EQ(findCheckpoint(dir.path(), notes).filename(), "checkpoint-000010");
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_THAT(notes[0], HasSubstr("names checkpoint-000015, which does not "
                                  "exist or is incomplete; using the newest "
                                  "complete checkpoint, checkpoint-000010"));
  notes.clear();
  writeBytes((dir.path() / kLatestFile).string(),
             bytesOf("checkpoint-000005\n"));
  EXPECT_EQ(findCheckpoint(dir.path(), notes).filename(), "checkpoint-000005");
  EXPECT_TRUE(notes.empty());
  writeBytes((dir.path() / kLatestFile).string(), bytesOf("../elsewhere\n"));
  EXPECT_THAT(errorMessage([&] { findCheckpoint(dir.path(), notes); }),
              HasSubstr("does not name a checkpoint directory"));
  TempDir empty;
  EXPECT_THAT(errorMessage([&] { findCheckpoint(empty.path(), notes); }),
              HasSubstr("not a checkpoint (no trainer_state.json)"));
}

TEST(CheckpointTest, RemovesStaleTemporaries) {
  TempDir dir;
  writeCheckpoint(dir.path(), 5, "abc");
  writeBytes((dir.path() / "latest.tmp.ab12cd34").string(), bytesOf("x"));
  fs::create_directory(dir.path() / "checkpoint-000010.tmp.zz99yy88");
  fs::create_directory(dir.path() / "tokens");
  writeBytes((dir.path() / "tokens" / "train_000.bin.tmp.q1w2e3r4").string(),
             bytesOf("x"));
  writeBytes((dir.path() / "notes.tmp.txt").string(), bytesOf("mine"));
  EXPECT_THAT(removeStaleTemporaries(dir.path()),
              ElementsAre("checkpoint-000010.tmp.zz99yy88",
                          "latest.tmp.ab12cd34",
                          "tokens/train_000.bin.tmp.q1w2e3r4"));
  EXPECT_THAT(names(dir.path()),
              ElementsAre("checkpoint-000005", "notes.tmp.txt", "tokens"));
}

// Keys that change the maths are compared; names, versions and token ids
// are not; 1e-05 equals 0.00001.
TEST(CheckpointTest, ConfigDifferencesNameTheKey) {
  json a = {{"hidden_size", 64},
            {"rms_norm_eps", 1e-5},
            {"tie_word_embeddings", true},
            {"torch_dtype", "bfloat16"},
            {"eos_token_id", 2}};
  json b = {{"hidden_size", 64},
            {"rms_norm_eps", 0.00001},
            {"torch_dtype", "float32"},
            {"eos_token_id", 3},
            {"rope_theta", 500000.0}};
  EXPECT_THAT(configDifferences(a, "new.json", b, "old.json"),
              ElementsAre("'rope_theta' is absent in new.json and 500000.0 in "
                          "old.json",
                          "'tie_word_embeddings' is true in new.json and "
                          "absent in old.json"));
}

} // namespace
