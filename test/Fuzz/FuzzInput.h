//===- FuzzInput.h - Fuzz inputs as files the readers open -----*- C++ -*-===//
//
// The runtime's readers take a path. Each input is written to one anonymous
// in-memory file (memfd), reused for every input, and the readers open it as
// /proc/self/fd/N: a regular file, with no disk traffic.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TEST_FUZZ_FUZZINPUT_H
#define KILN_TEST_FUZZ_FUZZINPUT_H

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

namespace kiln::fuzz {

/// Replaces the in-memory file's contents with `data` and returns its path.
inline const std::string &writeInput(const std::uint8_t *data,
                                     std::size_t size) {
  static const int fd = [] {
    int fd = ::memfd_create("kiln-fuzz-input", MFD_CLOEXEC);
    if (fd < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    return fd;
  }();
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (::ftruncate(fd, 0) != 0) {
    std::perror("ftruncate");
    std::abort();
  }
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd, data + done, size - done, done);
    if (n <= 0) {
      std::perror("pwrite");
      std::abort();
    }
    done += static_cast<std::size_t>(n);
  }
  return path;
}

} // namespace kiln::fuzz

#endif // KILN_TEST_FUZZ_FUZZINPUT_H
