//===- AtomicFile.cpp - Replacing a file all at once ----------------------===//

#include "runtime/io/AtomicFile.h"

#include "runtime/Error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <random>
#include <unistd.h>

namespace kiln::rt {

namespace {

/// How many random names to try before giving up on creating a temporary
/// file (each collides only if a file of that name already exists).
constexpr int kTempNameAttempts = 100;

/// The directory that holds `path` ("." for a bare file name).
std::string directoryOf(const std::string &path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

/// Flushes the directory `dir`, so that a rename in it is durable.
void syncDirectory(const std::string &path, const std::string &dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw Error(fmt::format("{}: written, but cannot open its directory '{}' "
                            "to flush it: {}",
                            path, dir, errnoMessage(err)));
  }
  int result = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some file systems cannot flush directories (EINVAL); they make renames
  // durable by other means.
  if (result != 0 && err != EINVAL)
    throw Error(fmt::format("{}: written, but flushing its directory '{}' "
                            "failed: {}",
                            path, dir, errnoMessage(err)));
}

} // namespace

std::string temporarySuffix() {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::uniform_int_distribution<int> pick(0, sizeof(kAlphabet) - 2);
  std::string suffix(kTemporarySuffixLength, ' ');
  for (char &c : suffix)
    c = kAlphabet[pick(device)];
  return suffix;
}

bool isTemporaryName(std::string_view name) {
  std::size_t at = name.rfind(".tmp.");
  return at != std::string_view::npos && at > 0 &&
         name.size() == at + 5 + kTemporarySuffixLength &&
         std::all_of(name.begin() + at + 5, name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
         });
}

void flushDirectory(const std::string &dir) { syncDirectory(dir, dir); }

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  if (path_.empty())
    throw Error("cannot write a file with an empty path");
  for (int attempt = 0; attempt < kTempNameAttempts; ++attempt) {
    tempPath_ = path_ + ".tmp." + temporarySuffix();
    // 0666 less the umask: the file gets the permissions a plain write would.
    fd_ = ::open(tempPath_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                 0666);
    if (fd_ >= 0)
      return;
    if (errno != EEXIST && errno != EINTR)
      break;
  }
  int err = errno;
  tempPath_.clear();
  throw Error(fmt::format("{}: cannot create a temporary file in '{}': {}",
                          path_, directoryOf(path_), errnoMessage(err)));
}

AtomicFile::~AtomicFile() { discard(); }

void AtomicFile::discard() noexcept {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
  if (!tempPath_.empty())
    ::unlink(tempPath_.c_str());
  tempPath_.clear();
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  if (fd_ < 0)
    throw Error(fmt::format("{}: write after the file was committed or "
                            "abandoned",
                            path_));
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int err = errno;
      std::string temp = tempPath_;
      discard();
      throw Error(fmt::format("{}: cannot write to '{}': {}", path_, temp,
                              errnoMessage(err)));
    }
    done += static_cast<std::size_t>(n);
  }
}

void AtomicFile::commit() {
  if (fd_ < 0)
    throw Error(fmt::format("{}: commit after the file was committed or "
                            "abandoned",
                            path_));
  // Throws errno's reason why `step` failed (with `tail` after the
  // temporary file's name), after removing the temporary file.
  auto fail = [&](std::string_view step, std::string_view tail = "") {
    int err = errno;
    std::string temp = tempPath_;
    discard();
    throw Error(fmt::format("{}: cannot {} '{}'{}: {}", path_, step, temp, tail,
                            errnoMessage(err)));
  };
  if (::fsync(fd_) != 0)
    fail("flush", " to disk");
  int result = ::close(fd_);
  fd_ = -1;
  if (result != 0)
    fail("close");
  if (::rename(tempPath_.c_str(), path_.c_str()) != 0)
    fail("rename", " over it");
  tempPath_.clear();
  syncDirectory(path_, directoryOf(path_));
}

void writeFileAtomic(const std::string &path,
                     std::span<const std::byte> bytes) {
  AtomicFile file(path);
  file.write(bytes);
  file.commit();
}

} // namespace kiln::rt
