//===- KernelCache.h - Compiled kernels kept on disk ------------*- C++ -*-===//
//
// NVRTC takes from tens of milliseconds to seconds per kernel; a training
// run compiles the same kernels as the last one. The cache keeps each cubin
// in a file named by a SHA-256 key of everything that determines it (see
// cacheKey in Nvrtc.h), under $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln,
// else $HOME/.cache/kiln:
//
//   <cache dir>/kernels/<64 hex digits>.cubin
//
// An entry is a header followed by the cubin; little-endian:
//
//   offset  0  8 bytes   magic "KILNCUBN"
//           8  uint32    entry format version (kCacheFormatVersion)
//          12  uint32    zero
//          16  uint64    payload size in bytes
//          24  32 bytes  SHA-256 of the payload
//          56  payload   the cubin
//
// Entries are written atomically (AtomicFile), so concurrent processes
// see a whole entry or none; an entry that fails any check is treated as a
// miss, deleted and counted, and the next compile writes it again.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_KERNELCACHE_H
#define KILN_RUNTIME_CUDA_KERNELCACHE_H

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/io/Sha256.h"

namespace kiln::rt::cuda {

/// Version of the entry format and of the key derivation: bumping it
/// invalidates every cached kernel (old entries are never read again).
constexpr std::uint32_t kCacheFormatVersion = 1;

/// Counts since the cache object was made. A corrupted entry counts as a
/// miss as well.
struct CacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t stores = 0;
  std::uint64_t corrupted = 0;
};

/// $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else $HOME/.cache/kiln; read
/// at each call. Throws Error if none of them is set.
std::filesystem::path defaultCacheRoot();

/// A directory of cubins keyed by hex digests. Safe to share between
/// threads and processes.
class KernelCache {
public:
  /// Entries in `<defaultCacheRoot()>/kernels`.
  KernelCache();
  /// Entries directly in `directory` (created on the first store).
  explicit KernelCache(std::filesystem::path directory);

  const std::filesystem::path &directory() const { return directory_; }

  /// The file of `key`'s entry. Keys are 1 to 128 characters from
  /// [0-9A-Za-z_-]; throws Error for any other.
  std::filesystem::path entryPath(std::string_view key) const;

  /// The cubin stored under `key`, or nullopt if there is none or the entry
  /// is damaged (wrong magic, version or size, checksum mismatch; the
  /// entry is then deleted and counted in stats().corrupted).
  std::optional<std::vector<std::byte>> load(std::string_view key);

  /// Writes `cubin` as `key`'s entry, atomically; throws Error if the
  /// directory cannot be created or written.
  void store(std::string_view key, std::span<const std::byte> cubin);

  CacheStats stats() const;

private:
  std::filesystem::path directory_;
  std::atomic<std::uint64_t> hits_{0}, misses_{0}, stores_{0}, corrupted_{0};
};

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_KERNELCACHE_H
