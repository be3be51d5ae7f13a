//===- IoTestSupport.h - Temporary directories and error capture -*- C++
//-*-===//
//
// Shared by the runtime I/O tests: each test works in its own temporary
// directory, removed at the end, and checks the messages of the Errors it
// provokes.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TEST_RUNTIME_IO_IOTESTSUPPORT_H
#define KILN_TEST_RUNTIME_IO_IOTESTSUPPORT_H

#include "runtime/Error.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <stdlib.h>

namespace kiln::rt::testing {

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when the object goes.
class TempDir {
public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "kiln-io-test-XXXXXX")
            .string();
    if (!::mkdtemp(pattern.data()))
      throw std::runtime_error("cannot create a temporary directory");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;

  /// The path of `name` inside the directory.
  std::string file(const std::string &name) const {
    return (path_ / name).string();
  }

  /// The names of the directory's entries, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto &entry : std::filesystem::directory_iterator(path_))
      names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  const std::filesystem::path &path() const { return path_; }

private:
  std::filesystem::path path_;
};

/// Writes `bytes` to `path`, plainly (to set up inputs).
inline void writeBytes(const std::string &path,
                       const std::vector<std::byte> &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char *>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out)
    throw std::runtime_error("cannot write test input " + path);
}

/// The bytes of the file at `path`.
inline std::vector<std::byte> readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::transform(chars.begin(), chars.end(), bytes.begin(),
                 [](char c) { return static_cast<std::byte>(c); });
  return bytes;
}

/// The bytes of `text`.
inline std::vector<std::byte> bytesOf(std::string_view text) {
  std::vector<std::byte> bytes(text.size());
  std::transform(text.begin(), text.end(), bytes.begin(),
                 [](char c) { return static_cast<std::byte>(c); });
  return bytes;
}

/// Appends `value` as `width` little-endian bytes.
inline void appendLittleEndian(std::vector<std::byte> &out,
                               unsigned long long value, int width) {
  for (int i = 0; i < width; ++i)
    out.push_back(static_cast<std::byte>((value >> (8 * i)) & 0xff));
}

/// The message of the kiln::rt::Error that `action` throws; records a test
/// failure and returns "" if it throws none.
template <typename Action> std::string errorMessage(Action &&action) {
  try {
    action();
  } catch (const Error &e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a kiln::rt::Error";
  return "";
}

} // namespace kiln::rt::testing

#endif // KILN_TEST_RUNTIME_IO_IOTESTSUPPORT_H
