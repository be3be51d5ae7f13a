//===- ScheduleTest.cpp - Warmup and the decays ---------------------------===//

#include "runtime/train/Schedule.h"

#include "../io/IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

using namespace kiln::rt;
using namespace kiln::rt::testing;
using ::testing::HasSubstr;

namespace {

TEST(ScheduleTest, WarmsUpLinearly) {
  LrSchedule schedule{6e-4, 100, 1000, 0.1};
  EXPECT_DOUBLE_EQ(schedule.at(1), 6e-6); // peak / warmupSteps
  EXPECT_DOUBLE_EQ(schedule.at(50), 3e-4);
  EXPECT_DOUBLE_EQ(schedule.at(100), 6e-4); // the peak ends the warmup
}

TEST(ScheduleTest, DecaysAlongACosine) {
  LrSchedule schedule{6e-4, 100, 1000, 0.1};
  // Halfway through the decay the rate is halfway between peak and floor.
  EXPECT_DOUBLE_EQ(schedule.at(550), 6e-4 * (1 + 0.1) / 2);
  // A quarter of the way: floor + (peak - floor) * (1 + cos(pi/4)) / 2.
  EXPECT_DOUBLE_EQ(schedule.at(325), 6e-5 + 5.4e-4 * (1 + std::sqrt(0.5)) / 2);
  EXPECT_DOUBLE_EQ(schedule.at(1000), 6e-5);
  for (std::int64_t step = 101; step <= 1000; ++step)
    ASSERT_LT(schedule.at(step), schedule.at(step - 1)) << step;
}

TEST(ScheduleTest, ClampsOutsideTheRun) {
  LrSchedule schedule{1.0, 10, 20, 0.0};
  EXPECT_DOUBLE_EQ(schedule.at(0), schedule.at(1));
  EXPECT_DOUBLE_EQ(schedule.at(-5), 0.1);
  EXPECT_DOUBLE_EQ(schedule.at(20), 0.0);
  EXPECT_DOUBLE_EQ(schedule.at(21), 0.0);
  EXPECT_DOUBLE_EQ(schedule.at(1000000), 0.0);
}

TEST(ScheduleTest, EdgeShapes) {
  // No warmup: the decay starts at once (the peak belongs to step 0).
  LrSchedule noWarmup{1.0, 0, 4, 0.0};
  EXPECT_DOUBLE_EQ(noWarmup.at(1), (1 + std::cos(M_PI / 4)) / 2);
  EXPECT_DOUBLE_EQ(noWarmup.at(2), 0.5);
  EXPECT_DOUBLE_EQ(noWarmup.at(4), 0.0);
  // Warmup to the last step: no decay at all.
  LrSchedule allWarmup{2.0, 4, 4};
  EXPECT_DOUBLE_EQ(allWarmup.at(1), 0.5);
  EXPECT_DOUBLE_EQ(allWarmup.at(4), 2.0);
  // A one-step run: the peak with warmup, the floor without.
  EXPECT_DOUBLE_EQ((LrSchedule{3.0, 1, 1}).at(1), 3.0);
  EXPECT_DOUBLE_EQ((LrSchedule{3.0, 0, 1, 0.5}).at(1), 1.5);
  // A ratio of 1 is a constant rate after warmup.
  LrSchedule constant{1.0, 2, 10, 1.0};
  EXPECT_DOUBLE_EQ(constant.at(5), 1.0);
  EXPECT_DOUBLE_EQ(constant.at(10), 1.0);
}

TEST(ScheduleTest, DecaysLinearly) {
  LrSchedule schedule{1.0, 10, 110, 0.1, LrDecay::Linear};
  EXPECT_DOUBLE_EQ(schedule.at(10), 1.0);
  EXPECT_DOUBLE_EQ(schedule.at(60), 0.1 + 0.9 * 0.5);
  EXPECT_DOUBLE_EQ(schedule.at(85), 0.1 + 0.9 * 0.25);
  EXPECT_DOUBLE_EQ(schedule.at(110), 0.1);
}

TEST(ScheduleTest, ConstantKeepsThePeak) {
  LrSchedule schedule{2.0, 4, 100, 0.1, LrDecay::Constant};
  EXPECT_DOUBLE_EQ(schedule.at(2), 1.0); // still warms up
  EXPECT_DOUBLE_EQ(schedule.at(5), 2.0);
  EXPECT_DOUBLE_EQ(schedule.at(100), 2.0);
}

TEST(ScheduleTest, WarmupStableDecay) {
  // 100 steps, warmup 10, the last 20% decaying: the peak through step 80,
  // then linearly to the floor at 100.
  LrSchedule schedule{1.0, 10, 100, 0.0, LrDecay::Wsd, 0.2};
  EXPECT_DOUBLE_EQ(schedule.at(5), 0.5);
  EXPECT_DOUBLE_EQ(schedule.at(11), 1.0);
  EXPECT_DOUBLE_EQ(schedule.at(80), 1.0);
  EXPECT_DOUBLE_EQ(schedule.at(90), 0.5);
  EXPECT_DOUBLE_EQ(schedule.at(100), 0.0);
  // A decay longer than the steps after the warmup starts at the warmup's
  // end.
  LrSchedule early{1.0, 50, 100, 0.0, LrDecay::Wsd, 0.9};
  EXPECT_DOUBLE_EQ(early.at(50), 1.0);
  EXPECT_DOUBLE_EQ(early.at(75), 0.5);
  for (std::string_view name : {"cosine", "linear", "constant", "wsd"})
    EXPECT_EQ(lrDecayName(*parseLrDecay(name)), name);
  EXPECT_FALSE(parseLrDecay("step"));
}

TEST(ScheduleTest, ValidationNamesTheProblem) {
  struct Case {
    LrSchedule schedule;
    std::string message;
  } cases[] = {
      {{0.0, 10, 100}, "peak rate must be positive and finite, got 0"},
      {{-1e-3, 10, 100}, "peak rate must be positive and finite, got -0.001"},
      {{NAN, 10, 100}, "peak rate must be positive and finite, got nan"},
      {{INFINITY, 10, 100}, "peak rate must be positive and finite, got inf"},
      {{1e-3, -1, 100}, "warmup steps must not be negative, got -1"},
      {{1e-3, 0, 0}, "total steps must be at least 1, got 0"},
      {{1e-3, 101, 100},
       "warmup steps (101) must not exceed total steps (100)"},
      {{1e-3, 10, 100, -0.1}, "minimum ratio must be in [0, 1], got -0.1"},
      {{1e-3, 10, 100, 1.5}, "minimum ratio must be in [0, 1], got 1.5"},
      {{1e-3, 10, 100, NAN}, "minimum ratio must be in [0, 1], got nan"},
      {{1e-3, 10, 100, 0.1, LrDecay::Wsd, 0.0},
       "decay fraction must be in (0, 1], got 0"},
      {{1e-3, 10, 100, 0.1, LrDecay::Wsd, 1.5},
       "decay fraction must be in (0, 1], got 1.5"},
  };
  for (const Case &c : cases) {
    EXPECT_THAT(errorMessage([&] { c.schedule.validate(); }),
                HasSubstr("learning-rate schedule: " + c.message));
    EXPECT_THAT(errorMessage([&] { c.schedule.at(1); }), HasSubstr(c.message));
  }
  EXPECT_NO_THROW((LrSchedule{1e-3, 0, 1, 0.0}).validate());
  EXPECT_NO_THROW((LrSchedule{1e-3, 1, 1, 1.0}).validate());
}

} // namespace
