//===- PlanTest.cpp - Reading the training-step plan ----------------------===//
//
// Plan::parse on plans whose sizes and offsets overflow 64 bits or leave
// the arena: each is refused with an error naming the plan and the value,
// never accepted with a wrapped-around size.
//
//===----------------------------------------------------------------------===//

#include "runtime/plan/Plan.h"

#include "runtime/Error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

using namespace kiln::rt;
using nlohmann::json;
using ::testing::HasSubstr;

namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

/// A plan of one f32 value of `shape` at `offset` in an arena of
/// `arenaBytes`, and nothing else.
json planWith(json shape, int64_t offset, int64_t arenaBytes) {
  return json{{"format", "kiln-plan"},
              {"version", kPlanVersion},
              {"arena_bytes", arenaBytes},
              {"persistent_bytes", 0},
              {"values", json::array({json{{"id", 0},
                                           {"dtype", "f32"},
                                           {"shape", std::move(shape)},
                                           {"offset", offset}}})},
              {"inputs", json::array()},
              {"outputs", json::array()},
              {"parameters", json::array()},
              {"steps", json::array()}};
}

/// The message of the Error that parsing `plan` throws; a test failure if
/// it parses.
std::string parseError(const json &plan) {
  try {
    Plan::parse(plan.dump(), "test.plan.json");
  } catch (const Error &e) {
    return e.what();
  }
  ADD_FAILURE() << "expected Plan::parse to refuse " << plan.dump();
  return "";
}

TEST(PlanTest, AValueInsideTheArenaParses) {
  Plan plan = Plan::parse(planWith({4, 4}, 64, 128).dump(), "test");
  ASSERT_EQ(plan.values.size(), 1u);
  EXPECT_EQ(plan.values[0].numElements(), 16);
  EXPECT_EQ(plan.values[0].bytes(), 64);
  EXPECT_EQ(plan.values[0].offset, 64);
}

// 2^32 x 2^32 elements wrap to 0 in 64 bits: a zero-byte value that fits
// any arena.
TEST(PlanTest, RefusesAnElementCountThatOverflows) {
  EXPECT_EQ(parseError(planWith({int64_t(1) << 32, int64_t(1) << 32}, 0, 0)),
            "test.plan.json: value 0: a f32 tensor of shape [4294967296, "
            "4294967296] takes more than 2^63 bytes");
}

// 2^62 f32 elements are 2^64 bytes, which wrap to 0.
TEST(PlanTest, RefusesAByteSizeThatOverflows) {
  EXPECT_EQ(parseError(planWith({int64_t(1) << 62}, 0, 256)),
            "test.plan.json: value 0: a f32 tensor of shape "
            "[4611686018427387904] takes more than 2^63 bytes");
}

// The kernels divide by dimensions (rows = elements / last dimension).
TEST(PlanTest, RefusesAnEmptyTensor) {
  EXPECT_EQ(parseError(planWith({4, 0}, 0, 256)),
            "test.plan.json: value 0: a f32 tensor of shape [4, 0] is empty");
}

// offset + bytes past 2^63 wraps negative, below any arena size.
TEST(PlanTest, RefusesAnOffsetWhoseEndOverflows) {
  EXPECT_EQ(parseError(planWith({16}, kInt64Max - 8, 256)),
            "test.plan.json: value 0: buffer of 64 bytes at offset "
            "9223372036854775799 lies outside the arena (256 bytes)");
}

TEST(PlanTest, RefusesABufferPastTheArena) {
  EXPECT_EQ(parseError(planWith({16}, 200, 256)),
            "test.plan.json: value 0: buffer of 64 bytes at offset 200 lies "
            "outside the arena (256 bytes)");
}

TEST(PlanTest, RefusesNegativeAndInconsistentArenaSizes) {
  json plan = planWith({1}, 0, 256);
  plan["values"] = json::array();
  plan["arena_bytes"] = -5;
  EXPECT_EQ(parseError(plan), "test.plan.json: plan: 'arena_bytes' is -5, "
                              "outside [0, 9223372036854775807]");
  plan["arena_bytes"] = 256;
  plan["persistent_bytes"] = 512;
  EXPECT_EQ(parseError(plan), "test.plan.json: plan: 'persistent_bytes' is "
                              "512, outside [0, 256]");
  plan["persistent_bytes"] = 0;
  plan["largest_buffer_bytes"] = 1024;
  EXPECT_EQ(parseError(plan), "test.plan.json: plan: 'largest_buffer_bytes' "
                              "is 1024, outside [0, 256]");
}

/// A plan whose model has `batch` and `seqLen` and whose one input, tokens,
/// holds 16 values.
json planWithBatch(int64_t batch, int64_t seqLen) {
  json plan = planWith({4, 4}, 0, 256);
  plan["values"][0]["dtype"] = "i32";
  plan["inputs"] = json::array({json{{"name", "tokens"}, {"value", 0}}});
  plan["model"] =
      json{{"batch", batch}, {"seq_len", seqLen}, {"micro_batches", 1}};
  return plan;
}

// The trainer allocates batch x seq_len positions: a product that wrapped
// around made it write past them.
TEST(PlanTest, RefusesABatchWhoseTokenCountOverflows) {
  EXPECT_NO_THROW(Plan::parse(planWithBatch(4, 4).dump(), "test"));
  EXPECT_EQ(parseError(planWithBatch(int64_t(1) << 32, int64_t(1) << 32)),
            "test.plan.json: model: batch (4294967296) x seq_len "
            "(4294967296) is not a positive 64-bit size");
  EXPECT_EQ(parseError(planWithBatch(0, 4)),
            "test.plan.json: model: batch (0) x seq_len (4) is not a "
            "positive 64-bit size");
  EXPECT_EQ(parseError(planWithBatch(8, 4)),
            "test.plan.json: model: batch (8) x seq_len (4) is 32 tokens, but "
            "input 'tokens' holds 16");
}

/// A plan whose one step is a fused region of one input (local 0) with a
/// temporary numbered `index`.
json fusedPlanWithTemporary(int64_t index) {
  json plan = planWith({4}, 0, 256);
  plan["values"].push_back(
      json{{"id", 1}, {"dtype", "f32"}, {"shape", {4}}, {"offset", 16}});
  plan["steps"] = json::array({json{
      {"kernel", "fused"},
      {"chunk", "F"},
      {"inputs", {0}},
      {"outputs", {1}},
      {"temporaries",
       json::array({json{{"index", index}, {"dtype", "f32"}, {"shape", {4}}}})},
      {"body", json::array({json{{"op", "add"},
                                 {"operands", {0, 0}},
                                 {"results", {index}},
                                 {"attrs", json::object()}}})},
      {"yield", {index}}}});
  return plan;
}

TEST(PlanTest, FusedTemporariesFollowTheInputs) {
  Plan plan = Plan::parse(fusedPlanWithTemporary(1).dump(), "test");
  EXPECT_EQ(std::get<FusedStep>(plan.steps.at(0).op).temporaries.count(1), 1u);
}

// The largest index made `index + 1` overflow; a negative one named no
// local value, and an index of an input let a result overwrite it.
TEST(PlanTest, RefusesTemporariesOutsideTheLocalValues) {
  EXPECT_EQ(parseError(fusedPlanWithTemporary(kInt64Max)),
            "test.plan.json: step 0 (fused): temporary 9223372036854775807 "
            "is not one of the local values [1, 2) after the inputs");
  EXPECT_EQ(parseError(fusedPlanWithTemporary(-3)),
            "test.plan.json: step 0 (fused): temporary -3 is not one of the "
            "local values [1, 2) after the inputs");
  EXPECT_EQ(parseError(fusedPlanWithTemporary(0)),
            "test.plan.json: step 0 (fused): temporary 0 is not one of the "
            "local values [1, 2) after the inputs");
}

/// A plan whose one step launches a kernel with a pointer `offset` bytes
/// into a scratch buffer of `scratchBytes`.
json planWithScratch(int64_t offset, int64_t scratchBytes) {
  json plan = planWith({4}, 0, 256);
  plan["steps"] = json::array({json{
      {"kernel", "fill"},
      {"chunk", "F"},
      {"inputs", json::array()},
      {"outputs", {0}},
      {"attrs", json{{"value", 0.0}}},
      {"cuda", json{{"launches",
                     json::array({json{
                         {"kernel", "k"},
                         {"grid", {1, 1, 1}},
                         {"block", {32, 1, 1}},
                         {"min_compute_capability", 0},
                         {"args", json::array({json{{"scratch", offset}},
                                               json{{"value", 0}}})}}})}}}}});
  plan["cuda"] =
      json{{"scratch_bytes", scratchBytes},
           {"kernels", json::array({json{{"name", "k"}, {"source", "// k"}}})}};
  return plan;
}

TEST(PlanTest, RefusesScratchOffsetsOutsideTheScratchBuffer) {
  EXPECT_NO_THROW(Plan::parse(planWithScratch(64, 128).dump(), "test"));
  EXPECT_EQ(parseError(planWithScratch(kInt64Max, 128)),
            "test.plan.json: cuda: 'k' takes scratch offset "
            "9223372036854775807, outside the 128-byte scratch buffer");
  EXPECT_EQ(parseError(planWithScratch(-8, 128)),
            "test.plan.json: cuda: 'k' takes scratch offset -8, outside the "
            "128-byte scratch buffer");
  EXPECT_EQ(parseError(planWithScratch(0, -1)),
            "test.plan.json: cuda: 'scratch_bytes' is -1, outside [0, "
            "9223372036854775807]");
}

// TensorInfo made in code, not parsed, still never returns a wrapped size.
TEST(PlanTest, TensorSizesThatOverflowThrow) {
  TensorInfo huge{ElemType::BF16, {int64_t(1) << 32, int64_t(1) << 32}};
  EXPECT_THROW(huge.numElements(), Error);
  TensorInfo wide{ElemType::I64, {int64_t(1) << 61}};
  EXPECT_EQ(wide.numElements(), int64_t(1) << 61);
  try {
    wide.bytes();
    ADD_FAILURE() << "expected an Error";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("a i64 tensor of shape "
                                    "[2305843009213693952] takes more than "
                                    "2^63 bytes"));
  }
}

} // namespace
