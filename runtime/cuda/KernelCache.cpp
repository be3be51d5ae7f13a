//===- KernelCache.cpp - Compiled kernels kept on disk --------------------===//

#include "runtime/cuda/KernelCache.h"

#include "runtime/Error.h"
#include "runtime/io/AtomicFile.h"
#include "runtime/io/InputFile.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <system_error>

namespace kiln::rt::cuda {

//===----------------------------------------------------------------------===//
// Entry format
//===----------------------------------------------------------------------===//

namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'C', 'U', 'B', 'N'};
constexpr std::size_t kHeaderSize = 56;
constexpr std::size_t kMaxKeyLength = 128;

void putLittleEndian(std::byte *out, std::uint64_t value, int width) {
  for (int i = 0; i < width; ++i)
    out[i] = static_cast<std::byte>((value >> (8 * i)) & 0xff);
}

std::uint64_t getLittleEndian(const std::byte *in, int width) {
  std::uint64_t value = 0;
  for (int i = 0; i < width; ++i)
    value |= std::to_integer<std::uint64_t>(in[i]) << (8 * i);
  return value;
}

/// Why `entry` is not a valid entry, or "" if it is.
std::string entryProblem(std::span<const std::byte> entry) {
  if (entry.size() < kHeaderSize)
    return fmt::format("{} bytes, shorter than the {}-byte header",
                       entry.size(), kHeaderSize);
  if (std::memcmp(entry.data(), kMagic, sizeof(kMagic)) != 0)
    return "bad magic";
  if (std::uint64_t version = getLittleEndian(entry.data() + 8, 4);
      version != kCacheFormatVersion)
    return fmt::format("format version {}, expected {}", version,
                       kCacheFormatVersion);
  std::uint64_t size = getLittleEndian(entry.data() + 16, 8);
  if (size != entry.size() - kHeaderSize)
    return fmt::format("payload of {} bytes, header says {}",
                       entry.size() - kHeaderSize, size);
  Sha256::Digest digest = Sha256::of(entry.subspan(kHeaderSize));
  if (std::memcmp(entry.data() + 24, digest.data(), digest.size()) != 0)
    return "payload checksum mismatch";
  return "";
}

} // namespace

//===----------------------------------------------------------------------===//
// KernelCache
//===----------------------------------------------------------------------===//

std::filesystem::path defaultCacheRoot() {
  auto env = [](const char *name) -> const char * {
    const char *value = std::getenv(name);
    return value && *value ? value : nullptr;
  };
  if (const char *dir = env("KILN_CACHE_DIR"))
    return dir;
  if (const char *dir = env("XDG_CACHE_HOME"))
    return std::filesystem::path(dir) / "kiln";
  if (const char *dir = env("HOME"))
    return std::filesystem::path(dir) / ".cache" / "kiln";
  throw Error("kernel cache: none of KILN_CACHE_DIR, XDG_CACHE_HOME and HOME "
              "is set; set KILN_CACHE_DIR to a writable directory");
}

KernelCache::KernelCache() : KernelCache(defaultCacheRoot() / "kernels") {}

KernelCache::KernelCache(std::filesystem::path directory)
    : directory_(std::move(directory)) {}

std::filesystem::path KernelCache::entryPath(std::string_view key) const {
  bool valid = !key.empty() && key.size() <= kMaxKeyLength;
  for (char c : key)
    valid = valid && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                      (c >= 'A' && c <= 'Z') || c == '_' || c == '-');
  if (!valid)
    throw Error(fmt::format("kernel cache: invalid key '{}' (expected 1 to {} "
                            "characters from [0-9A-Za-z_-])",
                            key, kMaxKeyLength));
  return directory_ / (std::string(key) + ".cubin");
}

std::optional<std::vector<std::byte>> KernelCache::load(std::string_view key) {
  std::filesystem::path path = entryPath(key);
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    ++misses_;
    return std::nullopt;
  }
  std::vector<std::byte> entry;
  try {
    entry = InputFile(path.string()).readAll();
  } catch (const Error &) {
    // Unreadable (or removed since): compile again.
    ++misses_;
    return std::nullopt;
  }
  if (!entryProblem(entry).empty()) {
    std::filesystem::remove(path, error); // the next store rewrites it
    ++corrupted_;
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  return std::vector<std::byte>(entry.begin() + kHeaderSize, entry.end());
}

void KernelCache::store(std::string_view key,
                        std::span<const std::byte> cubin) {
  std::filesystem::path path = entryPath(key);
  std::error_code error;
  std::filesystem::create_directories(directory_, error);
  if (error)
    throw Error(fmt::format("kernel cache: cannot create '{}': {}",
                            directory_.string(), error.message()));
  std::vector<std::byte> entry(kHeaderSize + cubin.size());
  std::memcpy(entry.data(), kMagic, sizeof(kMagic));
  putLittleEndian(entry.data() + 8, kCacheFormatVersion, 4);
  putLittleEndian(entry.data() + 12, 0, 4);
  putLittleEndian(entry.data() + 16, cubin.size(), 8);
  Sha256::Digest digest = Sha256::of(cubin);
  std::memcpy(entry.data() + 24, digest.data(), digest.size());
  if (!cubin.empty())
    std::memcpy(entry.data() + kHeaderSize, cubin.data(), cubin.size());
  writeFileAtomic(path.string(), entry);
  ++stores_;
}

CacheStats KernelCache::stats() const {
  return {hits_.load(), misses_.load(), stores_.load(), corrupted_.load()};
}

} // namespace kiln::rt::cuda
