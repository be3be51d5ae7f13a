//===- ProbeDeviceTest.cpp - Is there a GPU, in every build ---------------===//
//
// probeDevice answers without throwing whether or not the runtime was built
// with CUDA support and whether or not the machine has a driver and a GPU;
// device architectures map to the NVRTC targets Kiln compiles for.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/Device.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace kiln::rt::cuda;
using ::testing::AnyOf;
using ::testing::HasSubstr;

namespace {

DeviceInfo withCapability(int major, int minor) {
  DeviceInfo info;
  info.major = major;
  info.minor = minor;
  return info;
}

// Hopper and Blackwell get their arch-specific targets, everything else the
// plain one.
TEST(DeviceInfoTest, ArchNamesTheNvrtcTarget) {
  EXPECT_EQ(withCapability(9, 0).arch(), "sm_90a");
  EXPECT_EQ(withCapability(10, 0).arch(), "sm_100a");
  EXPECT_EQ(withCapability(8, 0).arch(), "sm_80");
  EXPECT_EQ(withCapability(8, 6).arch(), "sm_86");
  EXPECT_EQ(withCapability(8, 9).arch(), "sm_89");
  EXPECT_EQ(withCapability(10, 3).arch(), "sm_103");
  EXPECT_EQ(withCapability(12, 0).arch(), "sm_120");
}

// Without a GPU (or without CUDA support) the answer is "no" with a reason
// that says what is missing; it never throws.
TEST(ProbeDeviceTest, NeverThrowsAndExplainsAbsence) {
  std::string why;
  std::optional<DeviceInfo> device;
  EXPECT_NO_THROW(device = probeDevice(&why));
  if (device) {
    EXPECT_FALSE(device->name.empty());
    EXPECT_GE(device->major, 5);
    EXPECT_GT(device->smCount, 0);
    EXPECT_GT(device->totalMemory, 0u);
    return;
  }
#if KILN_ENABLE_CUDA
  EXPECT_THAT(why, AnyOf(HasSubstr("CUDA driver"), HasSubstr("GPU")));
#else
  EXPECT_THAT(why, HasSubstr("built without CUDA support"));
#endif
  EXPECT_NO_THROW(probeDevice(nullptr)); // no reason wanted
}

// Ordinals past the last device are refused, not an error.
TEST(ProbeDeviceTest, RefusesMissingOrdinals) {
  std::string why;
  EXPECT_FALSE(probeDevice(&why, 1 << 20).has_value());
  EXPECT_FALSE(why.empty());
}

} // namespace
