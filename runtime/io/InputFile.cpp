//===- InputFile.cpp - Reading files with errors that name them -----------===//

#include "runtime/io/InputFile.h"

#include "runtime/Error.h"

#include <fmt/format.h>

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kiln::rt {

InputFile::InputFile(std::string path) : path_(std::move(path)) {
  do {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) {
    int err = errno;
    throw Error(fmt::format("{}: cannot open: {}", path_, errnoMessage(err)));
  }
  struct stat info;
  if (::fstat(fd_, &info) != 0) {
    int err = errno;
    ::close(fd_);
    throw Error(fmt::format("{}: cannot stat: {}", path_, errnoMessage(err)));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd_);
    throw Error(fmt::format("{}: not a regular file", path_));
  }
  size_ = static_cast<std::uint64_t>(info.st_size);
}

InputFile::~InputFile() { ::close(fd_); }

void InputFile::readAt(std::uint64_t offset, std::span<std::byte> out) const {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd_, out.data() + done, out.size() - done,
                        static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int err = errno;
      throw Error(fmt::format("{}: cannot read {} bytes at offset {}: {}",
                              path_, out.size(), offset, errnoMessage(err)));
    }
    if (n == 0)
      throw Error(fmt::format(
          "{}: unexpected end of file reading {} bytes at offset {} (the "
          "file is now {} bytes)",
          path_, out.size(), offset, offset + done));
    done += static_cast<std::size_t>(n);
  }
}

std::vector<std::byte> InputFile::readAll() const {
  std::vector<std::byte> bytes(size_);
  readAt(0, bytes);
  return bytes;
}

} // namespace kiln::rt
