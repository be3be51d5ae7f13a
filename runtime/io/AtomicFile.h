//===- AtomicFile.h - Replacing a file all at once --------------*- C++ -*-===//
//
// Checkpoints and token shards are written atomically: the bytes go to a
// temporary file in the target's directory, which is flushed to disk and then
// renamed over the target, and the directory is flushed so that the rename
// itself survives a crash. A reader (or a run resumed after a crash) sees
// either the old file or the complete new one, never a torn one.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_IO_ATOMICFILE_H
#define KILN_RUNTIME_IO_ATOMICFILE_H

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace kiln::rt {

/// A file being written in place of `path`. Data is streamed with write();
/// commit() makes it replace `path`. Destroying an uncommitted AtomicFile, or
/// any failure, removes the temporary file and leaves `path` as it was.
class AtomicFile {
public:
  /// Creates the temporary file next to `path`; throws Error (naming the
  /// path and the system's reason) if the directory does not take it.
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile &) = delete;
  AtomicFile &operator=(const AtomicFile &) = delete;

  /// Appends `bytes`; throws Error on a failed write.
  void write(std::span<const std::byte> bytes);

  /// Flushes the file, renames it over `path` and flushes the directory;
  /// throws Error on failure.
  void commit();

  const std::string &path() const { return path_; }
  const std::string &tempPath() const { return tempPath_; }

private:
  /// Closes and removes the temporary file; used on every failure.
  void discard() noexcept;

  std::string path_;
  std::string tempPath_;
  int fd_ = -1;
};

/// Temporary names are `<target>.tmp.<suffix>`, the suffix this many
/// characters of [a-z0-9]; what an interrupted write leaves behind can be
/// recognised by it.
constexpr std::size_t kTemporarySuffixLength = 8;

/// A fresh random suffix for a temporary name.
std::string temporarySuffix();

/// Whether `name` (a file name, no directory) is such a temporary name.
bool isTemporaryName(std::string_view name);

/// Flushes the directory `dir`, so that renames in it survive a crash;
/// throws Error on failure (file systems that cannot flush directories are
/// left alone).
void flushDirectory(const std::string &dir);

/// Replaces the file at `path` with `bytes`, atomically (see AtomicFile).
void writeFileAtomic(const std::string &path, std::span<const std::byte> bytes);

} // namespace kiln::rt

#endif // KILN_RUNTIME_IO_ATOMICFILE_H
