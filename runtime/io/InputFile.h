//===- InputFile.h - Reading files with errors that name them ---*- C++ -*-===//
//
// A read-only regular file whose every failure throws kiln::rt::Error naming
// the file and the system's reason. The readers of checkpoints, token shards
// and text all go through it.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_IO_INPUTFILE_H
#define KILN_RUNTIME_IO_INPUTFILE_H

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace kiln::rt {

/// An open regular file, read at explicit offsets.
class InputFile {
public:
  /// Opens `path`; throws Error if it cannot be opened or is not a regular
  /// file.
  explicit InputFile(std::string path);
  ~InputFile();
  InputFile(const InputFile &) = delete;
  InputFile &operator=(const InputFile &) = delete;

  const std::string &path() const { return path_; }

  /// The file's size in bytes when it was opened.
  std::uint64_t size() const { return size_; }

  /// Fills `out` with the bytes at [offset, offset + out.size()); throws
  /// Error if the file ends first or the read fails.
  void readAt(std::uint64_t offset, std::span<std::byte> out) const;

  /// The whole file.
  std::vector<std::byte> readAll() const;

private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_IO_INPUTFILE_H
