//===- ToolkitTest.cpp - Finding the CUDA libraries and headers -----------===//
//
// A GPU machine set up with PyTorch's pip wheels has NVRTC, cuBLASLt and
// cuda_bf16.h only in site-packages/nvidia/...: the search finds them there,
// after the toolkit's own directories, and only directories that exist.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/Toolkit.h"
#include "runtime/cuda/CudaApi.h"

#include "../io/IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

namespace kiln::rt::cuda {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

/// Sets an environment variable for the test's lifetime.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const std::string &value) : name_(name) {
    if (const char *old = std::getenv(name))
      old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }

private:
  const char *name_;
  std::optional<std::string> old_;
};

void touch(const fs::path &path) {
  fs::create_directories(path.parent_path());
  testing::writeBytes(path.string(), {});
}

// CUDA 13 wheels (nvidia/cu13) come before CUDA 12's per-component ones;
// a toolkit that exists comes first of all; missing directories are left
// out.
TEST(ToolkitTest, FindsThePipWheelsLayout) {
  testing::TempDir dir;
  fs::path toolkit = dir.path() / "cuda", site = dir.path() / "site";
  fs::create_directories(toolkit / "lib64");
  touch(site / "nvidia/cu13/lib/libnvrtc.so.13");
  touch(site / "nvidia/cu13/include/cuda_bf16.h");
  touch(site / "nvidia/cublas/lib/libcublasLt.so.12");
  fs::create_directories(site / "nvidia/cuda_runtime/include");
  ToolkitRoots roots{{toolkit, dir.path() / "missing"}, {site}};
  EXPECT_THAT(libraryDirectories(roots),
              ElementsAre(toolkit / "lib64", site / "nvidia/cu13/lib",
                          site / "nvidia/cublas/lib"));
  EXPECT_THAT(includeDirectories(roots),
              ElementsAre(site / "nvidia/cu13/include",
                          site / "nvidia/cuda_runtime/include"));
  EXPECT_EQ(findIncludeDirectory(roots),
            (site / "nvidia/cu13/include").string());
}

// The toolkit's header wins over a wheel's; no header anywhere is "".
TEST(ToolkitTest, PrefersTheToolkitsHeaders) {
  testing::TempDir dir;
  fs::path toolkit = dir.path() / "cuda", site = dir.path() / "site";
  touch(toolkit / "targets/x86_64-linux/include/cuda_bf16.h");
  touch(site / "nvidia/cu13/include/cuda_bf16.h");
  EXPECT_EQ(findIncludeDirectory({{toolkit}, {site}}),
            (toolkit / "targets/x86_64-linux/include").string());
  EXPECT_EQ(findIncludeDirectory({{dir.path() / "none"}, {}}), "");
}

// Python's package directories come from PYTHONPATH and VIRTUAL_ENV, and
// the library candidates then name the wheels' libraries.
TEST(ToolkitTest, SitePackagesFromTheEnvironment) {
  testing::TempDir dir;
  fs::path venv = dir.path() / "venv";
  fs::path site = venv / "lib/python3.12/site-packages";
  fs::path extra = dir.path() / "extra";
  touch(site / "nvidia/cu13/lib/libcublasLt.so.13");
  fs::create_directories(extra);
  ScopedEnv virtualEnv("VIRTUAL_ENV", venv.string());
  ScopedEnv pythonPath("PYTHONPATH",
                       extra.string() + ":" + (dir.path() / "gone").string());
  std::vector<fs::path> sites = ToolkitRoots::fromEnvironment().sitePackages;
  ASSERT_GE(sites.size(), 2u);
  EXPECT_EQ(sites[0], extra);
  EXPECT_EQ(sites[1], site);
  EXPECT_THAT(toolkitLibraryCandidates("libcublasLt.so.13"),
              ::testing::Contains(
                  (site / "nvidia/cu13/lib/libcublasLt.so.13").string()));
}

// The report names every piece, found or not, and never throws (here: no
// driver; NVRTC from the toolkit).
TEST(ToolkitTest, ReportNamesEveryPiece) {
  std::vector<std::string> what;
  for (const auto &[name, where] : toolkitReport()) {
    what.push_back(name);
    EXPECT_FALSE(where.empty()) << name;
  }
  EXPECT_THAT(what,
              ::testing::IsSupersetOf({"driver", "device", "NVRTC", "cuBLASLt",
                                       "CUDA headers", "library search"}));
}

} // namespace
} // namespace kiln::rt::cuda
