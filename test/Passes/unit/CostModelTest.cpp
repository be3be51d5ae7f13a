//===- CostModelTest.cpp - The cost model's targets -----------------------===//
//
// H100 and H200 share sm_90a: a GPU the runtime finds is told apart by its
// name, else by its memory; an architecture alone means the H100.
//
//===----------------------------------------------------------------------===//

#include "passes/CostModel.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(CostModelTest, KnownTargetsHaveNamedFields) {
  llvm::Expected<Target> h200 = lookupTarget("h200");
  ASSERT_TRUE(static_cast<bool>(h200));
  EXPECT_EQ(h200->arch, "sm_90a");
  EXPECT_TRUE(h200->gpu);
  EXPECT_EQ(h200->memoryBytes, 141'000'000'000);
  llvm::Expected<Target> h100 = lookupTarget("h100");
  ASSERT_TRUE(static_cast<bool>(h100));
  EXPECT_EQ(h100->arch, h200->arch);
  EXPECT_GT(h200->memoryBandwidth, h100->memoryBandwidth);
  llvm::Expected<Target> tpu = lookupTarget("tpu");
  ASSERT_FALSE(static_cast<bool>(tpu));
  EXPECT_EQ(llvm::toString(tpu.takeError()),
            "unknown target 'tpu' (known: host, a100, h100, h200)");
}

TEST(CostModelTest, DevicesByNameThenMemoryThenArch) {
  EXPECT_EQ(targetForDevice("NVIDIA H200", "sm_90a", 150'000'000'000), "h200");
  EXPECT_EQ(targetForDevice("NVIDIA H100 80GB HBM3", "sm_90a", 85'000'000'000),
            "h100");
  // An unknown sm_90 name: memory decides.
  EXPECT_EQ(targetForDevice("GH200 480GB", "sm_90a", 102ull << 30), "h200");
  EXPECT_EQ(targetForDevice("H800", "sm_90a", 80ull << 30), "h100");
  EXPECT_EQ(targetForDevice("NVIDIA A100-SXM4-40GB", "sm_80", 40ull << 30),
            "a100");
  EXPECT_EQ(targetForDevice("NVIDIA L4", "sm_89", 24ull << 30), "a100");
  EXPECT_EQ(targetForArch("sm_90a"), "h100");
  EXPECT_EQ(targetForArch("sm_75"), "host");
}

} // namespace
} // namespace kiln
