//===- AtomicFileTest.cpp - Replacing files all at once -------------------===//
//
// A file is either replaced whole or left as it was, and no temporary file
// survives a failure. Tests run as root in CI, where a read-only directory
// does not stop a write, so the failures here come from a missing directory,
// a target that is a directory, and abandoned writes.
//
//===----------------------------------------------------------------------===//

#include "runtime/io/AtomicFile.h"

#include "IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <sys/stat.h>

using namespace kiln::rt;
using namespace kiln::rt::testing;
using ::testing::HasSubstr;

namespace {

TEST(AtomicFileTest, CreatesAndReplacesFiles) {
  TempDir dir;
  std::string path = dir.file("data.bin");
  writeFileAtomic(path, bytesOf("first version"));
  EXPECT_EQ(readBytes(path), bytesOf("first version"));
  writeFileAtomic(path, bytesOf("second"));
  EXPECT_EQ(readBytes(path), bytesOf("second"));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"data.bin"});
}

TEST(AtomicFileTest, StreamsSeveralWrites) {
  TempDir dir;
  std::string path = dir.file("data.bin");
  AtomicFile file(path);
  EXPECT_EQ(std::filesystem::path(file.tempPath()).parent_path(), dir.path());
  file.write(bytesOf("one "));
  file.write(bytesOf("two"));
  EXPECT_FALSE(std::filesystem::exists(path)); // nothing visible yet
  file.commit();
  EXPECT_EQ(readBytes(path), bytesOf("one two"));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"data.bin"});
}

TEST(AtomicFileTest, GivesTheFileThePermissionsOfAPlainWrite) {
  TempDir dir;
  std::string path = dir.file("data.bin");
  writeFileAtomic(path, bytesOf("x"));
  mode_t mask = ::umask(0);
  ::umask(mask);
  struct stat info;
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0666 & ~mask);
}

TEST(AtomicFileTest, AbandonedWriteKeepsTheOldFile) {
  TempDir dir;
  std::string path = dir.file("data.bin");
  writeFileAtomic(path, bytesOf("old contents"));
  {
    AtomicFile file(path);
    file.write(bytesOf("half of the new"));
  } // destroyed without commit(), as when an exception unwinds
  EXPECT_EQ(readBytes(path), bytesOf("old contents"));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"data.bin"});
}

TEST(AtomicFileTest, MissingDirectoryNamesThePathAndTheReason) {
  TempDir dir;
  std::string path = dir.file("missing/data.bin");
  EXPECT_EQ(errorMessage([&] { writeFileAtomic(path, bytesOf("x")); }),
            path + ": cannot create a temporary file in '" +
                dir.file("missing") + "': No such file or directory");
  EXPECT_TRUE(dir.entries().empty());
}

TEST(AtomicFileTest, TargetThatIsADirectoryFailsAndLeavesNoTemporary) {
  TempDir dir;
  std::string path = dir.file("taken");
  std::filesystem::create_directory(path);
  std::filesystem::path inside = std::filesystem::path(path) / "keep";
  writeBytes(inside.string(), bytesOf("kept"));

  std::string message =
      errorMessage([&] { writeFileAtomic(path, bytesOf("new")); });
  EXPECT_THAT(message, HasSubstr(path + ": cannot rename '" + path + ".tmp."));
  EXPECT_THAT(message, HasSubstr("' over it: Is a directory"));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"taken"});
  EXPECT_EQ(readBytes(inside.string()), bytesOf("kept"));
}

TEST(AtomicFileTest, RejectsAnEmptyPath) {
  EXPECT_EQ(errorMessage([] { writeFileAtomic("", bytesOf("x")); }),
            "cannot write a file with an empty path");
}

TEST(AtomicFileTest, RejectsUseAfterCommit) {
  TempDir dir;
  std::string path = dir.file("data.bin");
  AtomicFile file(path);
  file.commit();
  EXPECT_THAT(errorMessage([&] { file.write(bytesOf("late")); }),
              HasSubstr(path + ": write after the file was committed"));
  EXPECT_THAT(errorMessage([&] { file.commit(); }),
              HasSubstr(path + ": commit after the file was committed"));
  EXPECT_EQ(readBytes(path), std::vector<std::byte>{});
}

} // namespace
