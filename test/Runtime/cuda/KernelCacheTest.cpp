//===- KernelCacheTest.cpp - The on-disk cubin cache ----------------------===//
//
// Entries round-trip, and damaged
// ones are detected, counted, removed and rebuilt; the directory follows
// KILN_CACHE_DIR, XDG_CACHE_HOME and HOME; through compileKernels a hit
// compiles nothing and any change to source, options, headers or arch
// misses.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/KernelCache.h"
#include "runtime/Error.h"
#include "runtime/cuda/Nvrtc.h"

#include "CudaTestSupport.h"
#include "test/Runtime/io/IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

using namespace kiln::rt;
using namespace kiln::rt::cuda;
using namespace kiln::rt::cuda::testing;
using kiln::rt::testing::bytesOf;
using kiln::rt::testing::errorMessage;
using kiln::rt::testing::readBytes;
using kiln::rt::testing::TempDir;
using kiln::rt::testing::writeBytes;
using ::testing::HasSubstr;

namespace {

//===----------------------------------------------------------------------===//
// Entries
//===----------------------------------------------------------------------===//

const std::string kKey =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

TEST(KernelCacheTest, StoresAndLoads) {
  TempDir dir;
  KernelCache cache(dir.path() / "kernels"); // created by the first store
  EXPECT_FALSE(cache.load(kKey).has_value());
  std::vector<std::byte> cubin = bytesOf("\x7f"
                                         "ELF and the rest of a cubin");
  cache.store(kKey, cubin);
  EXPECT_TRUE(std::filesystem::exists(cache.entryPath(kKey)));
  EXPECT_EQ(cache.entryPath(kKey), dir.path() / "kernels" / (kKey + ".cubin"));
  EXPECT_EQ(cache.load(kKey), cubin);
  cache.store(kKey, bytesOf("replaced"));
  EXPECT_EQ(cache.load(kKey), bytesOf("replaced"));

  CacheStats stats = cache.stats();
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.stores, 2u);
  EXPECT_EQ(stats.corrupted, 0u);
}

// Keys become file names: nothing that could leave the directory.
TEST(KernelCacheTest, RejectsKeysThatAreNotNames) {
  TempDir dir;
  KernelCache cache(dir.path());
  for (const std::string &key : std::vector<std::string>{
           "", "../escape", "a/b", "a.b", std::string(129, 'a')})
    EXPECT_THAT(errorMessage([&] { cache.load(key); }),
                HasSubstr("invalid key"))
        << key;
}

/// A damaged entry: a flipped payload byte, a cut, garbage, another format
/// version, an empty file.
struct Damage {
  const char *name;
  void (*apply)(std::vector<std::byte> &entry);
};

const Damage kDamages[] = {
    {"flipped payload byte",
     [](std::vector<std::byte> &e) { e.back() ^= std::byte{1}; }},
    {"flipped checksum byte",
     [](std::vector<std::byte> &e) { e[30] ^= std::byte{0x80}; }},
    {"truncated payload",
     [](std::vector<std::byte> &e) { e.erase(e.end() - 3, e.end()); }},
    {"truncated header", [](std::vector<std::byte> &e) { e.resize(20); }},
    {"appended bytes",
     [](std::vector<std::byte> &e) { e.push_back(std::byte{0}); }},
    {"garbage",
     [](std::vector<std::byte> &e) {
       e = bytesOf("not a cache entry at all, just text");
     }},
    {"other format version",
     [](std::vector<std::byte> &e) { e[8] = std::byte{99}; }},
    {"empty file", [](std::vector<std::byte> &e) { e.clear(); }},
};

// Each kind of damage is a miss that removes the entry and is counted.
TEST(KernelCacheTest, DetectsAndRemovesDamagedEntries) {
  for (const Damage &damage : kDamages) {
    SCOPED_TRACE(damage.name);
    TempDir dir;
    KernelCache cache(dir.path());
    cache.store(kKey, bytesOf("a cubin of some length"));
    std::string path = cache.entryPath(kKey).string();
    std::vector<std::byte> entry = readBytes(path);
    damage.apply(entry);
    writeBytes(path, entry);

    EXPECT_FALSE(cache.load(kKey).has_value());
    EXPECT_FALSE(std::filesystem::exists(path));
    EXPECT_EQ(cache.stats().corrupted, 1u);
    EXPECT_EQ(cache.stats().misses, 1u);
    EXPECT_FALSE(cache.load(kKey).has_value()); // now a plain miss
    EXPECT_EQ(cache.stats().corrupted, 1u);
  }
}

// Where the cache lives: KILN_CACHE_DIR, else XDG_CACHE_HOME/kiln, else
// HOME/.cache/kiln; read when the cache is made.
TEST(KernelCacheTest, DirectoryFollowsTheEnvironment) {
  ScopedEnv kiln("KILN_CACHE_DIR", "/tmp/kiln-cache-test");
  ScopedEnv xdg("XDG_CACHE_HOME", "/tmp/xdg");
  ScopedEnv home("HOME", "/tmp/home");
  EXPECT_EQ(KernelCache().directory(), "/tmp/kiln-cache-test/kernels");
  {
    ScopedEnv unset("KILN_CACHE_DIR", std::nullopt);
    EXPECT_EQ(KernelCache().directory(), "/tmp/xdg/kiln/kernels");
    ScopedEnv unsetXdg("XDG_CACHE_HOME", "");
    EXPECT_EQ(KernelCache().directory(), "/tmp/home/.cache/kiln/kernels");
    ScopedEnv unsetHome("HOME", std::nullopt);
    EXPECT_THAT(errorMessage([] { KernelCache(); }),
                HasSubstr("set KILN_CACHE_DIR"));
  }
}

//===----------------------------------------------------------------------===//
// Through compileKernels
//===----------------------------------------------------------------------===//

/// Each test gets its own cache directory, named by KILN_CACHE_DIR.
class CompileCacheTest : public ::testing::Test {
protected:
  TempDir dir;
  ScopedEnv env{"KILN_CACHE_DIR", dir.path().string()};
  KernelCache cache;

  /// Compiles `request` through the cache; returns how often NVRTC ran.
  std::uint64_t compileCountOf(const CompileRequest &request,
                               CompiledKernel *out = nullptr) {
    std::uint64_t before = nvrtcCompileCount();
    CompiledKernel kernel = compileKernels({request}, &cache, 1).at(0);
    if (out)
      *out = kernel;
    return nvrtcCompileCount() - before;
  }
};

// The first compile stores the cubin under KILN_CACHE_DIR; the second is a
// hit that runs NVRTC zero times and returns the same bytes.
TEST_F(CompileCacheTest, SecondCompileIsAHit) {
  EXPECT_EQ(cache.directory(), dir.path() / "kernels");
  CompiledKernel first, second;
  EXPECT_EQ(compileCountOf(axpyRequest("sm_90a"), &first), 1u);
  EXPECT_FALSE(first.fromCache);
  EXPECT_TRUE(std::filesystem::exists(
      cache.entryPath(cacheKey(axpyRequest("sm_90a")))));
  EXPECT_EQ(cache.stats().stores, 1u);

  EXPECT_EQ(compileCountOf(axpyRequest("sm_90a"), &second), 0u);
  EXPECT_TRUE(second.fromCache);
  EXPECT_EQ(second.name, "axpy_bf16");
  EXPECT_EQ(second.cubin, first.cubin);
  EXPECT_EQ(cache.stats().hits, 1u);

  // Another cache object on the same directory (the next run) hits too.
  KernelCache nextRun;
  std::uint64_t before = nvrtcCompileCount();
  EXPECT_TRUE(compileKernel(axpyRequest("sm_90a"), &nextRun).fromCache);
  EXPECT_EQ(nvrtcCompileCount(), before);
}

// Anything that changes the cubin changes the key; the name does not.
TEST_F(CompileCacheTest, ChangesMiss) {
  CompileRequest base = axpyRequest("sm_80");
  ASSERT_EQ(compileCountOf(base), 1u);

  CompileRequest source = base;
  source.source += "\n// another version\n";
  EXPECT_EQ(compileCountOf(source), 1u);

  CompileRequest option = base;
  option.options = {"-DKILN_UNUSED=1"};
  EXPECT_EQ(compileCountOf(option), 1u);

  // Order matters: the later of two -D wins.
  CompileRequest oneTwo = base, twoOne = base;
  oneTwo.options = {"-DA=1", "-DA=2"};
  twoOne.options = {"-DA=2", "-DA=1"};
  EXPECT_NE(cacheKey(oneTwo), cacheKey(twoOne));

  CompileRequest arch = base;
  arch.arch = "sm_90a";
  EXPECT_EQ(compileCountOf(arch), 1u);

  CompileRequest header = base;
  header.headers = {{"unused.h", "// v1"}};
  EXPECT_EQ(compileCountOf(header), 1u);
  header.headers = {{"unused.h", "// v2"}};
  EXPECT_EQ(compileCountOf(header), 1u);

  CompileRequest renamed = base;
  renamed.name = "same_code_other_name";
  EXPECT_EQ(compileCountOf(renamed), 0u);

  EXPECT_EQ(compileCountOf(base), 0u);
  EXPECT_EQ(cache.stats().stores, 6u);
}

// A damaged entry is detected, counted, removed and rebuilt by the next
// compile, after which it hits again.
TEST_F(CompileCacheTest, DamagedEntryIsRebuilt) {
  for (const Damage &damage : kDamages) {
    SCOPED_TRACE(damage.name);
    CompileRequest request = axpyRequest("sm_80");
    CompiledKernel good;
    compileCountOf(request, &good);
    std::string path = cache.entryPath(cacheKey(request)).string();
    std::vector<std::byte> entry = readBytes(path);
    damage.apply(entry);
    writeBytes(path, entry);

    std::uint64_t corrupted = cache.stats().corrupted;
    CompiledKernel rebuilt;
    EXPECT_EQ(compileCountOf(request, &rebuilt), 1u);
    EXPECT_FALSE(rebuilt.fromCache);
    EXPECT_EQ(rebuilt.cubin, good.cubin);
    EXPECT_EQ(cache.stats().corrupted, corrupted + 1);
    EXPECT_EQ(compileCountOf(request), 0u);
  }
}

// A whole batch that hits compiles nothing.
TEST_F(CompileCacheTest, BatchOfHitsCompilesNothing) {
  std::vector<CompileRequest> requests = {axpyRequest("sm_80"),
                                          axpyRequest("sm_90a")};
  std::uint64_t before = nvrtcCompileCount();
  compileKernels(requests, &cache, 2);
  EXPECT_EQ(nvrtcCompileCount() - before, 2u);
  std::vector<CompiledKernel> again = compileKernels(requests, &cache, 2);
  EXPECT_EQ(nvrtcCompileCount() - before, 2u);
  EXPECT_TRUE(again[0].fromCache && again[1].fromCache);
  EXPECT_NE(again[0].cubin, again[1].cubin);
}

// A cache that cannot be written does not fail the compile; the log says
// why the kernel was not kept.
TEST_F(CompileCacheTest, UnwritableCacheStillCompiles) {
  std::string blocker = dir.file("not-a-directory");
  writeBytes(blocker, bytesOf("x"));
  KernelCache blocked(std::filesystem::path(blocker) / "kernels");
  CompiledKernel kernel = compileKernel(axpyRequest("sm_80"), &blocked);
  EXPECT_TRUE(isCudaElf(kernel.cubin));
  EXPECT_THAT(kernel.log, HasSubstr("kernel not cached"));
  EXPECT_EQ(blocked.stats().stores, 0u);
}

} // namespace
