//===- Sha256Test.cpp - SHA-256 digests -----------------------------------===//
//
// SHA-256 against the FIPS 180-2 vectors, whole and in pieces, and of files.
//
//===----------------------------------------------------------------------===//

#include "runtime/io/Sha256.h"
#include "runtime/Error.h"

#include "IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace kiln::rt;
using kiln::rt::testing::bytesOf;
using kiln::rt::testing::errorMessage;
using kiln::rt::testing::TempDir;
using kiln::rt::testing::writeBytes;
using ::testing::HasSubstr;

namespace {

// FIPS 180-2, appendix B, and the empty message.
TEST(Sha256Test, FipsVectors) {
  EXPECT_EQ(toHex(Sha256::of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(toHex(Sha256::of("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(toHex(Sha256::of(
                "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a', fed in uneven pieces.
  Sha256 hash;
  std::string piece(999, 'a');
  for (int i = 0; i < 1001; ++i)
    hash.update(piece);
  hash.update(std::string(1000000 - 999 * 1001, 'a'));
  EXPECT_EQ(toHex(hash.finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// A file's digest equals the digest of its bytes, across the 1 MiB pieces
// it is read in.
TEST(Sha256Test, OfFile) {
  TempDir dir;
  std::string text(3 * (1 << 20) + 17, 'x');
  for (std::size_t i = 0; i < text.size(); i += 4093)
    text[i] = static_cast<char>('a' + i % 26);
  std::string path = (dir.path() / "data.bin").string();
  writeBytes(path, bytesOf(text));
  EXPECT_EQ(toHex(sha256OfFile(path)), toHex(Sha256::of(text)));
  std::string empty = (dir.path() / "empty.bin").string();
  writeBytes(empty, {});
  EXPECT_EQ(toHex(sha256OfFile(empty)), toHex(Sha256::of("")));
  EXPECT_THAT(
      errorMessage([&] { sha256OfFile((dir.path() / "none").string()); }),
      HasSubstr("none"));
}

} // namespace
