//===- ByteTokenizerTest.cpp - Byte-level tokenization --------------------===//

#include "runtime/io/ByteTokenizer.h"

#include "runtime/io/TokenShard.h"

#include "IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace kiln::rt;
using namespace kiln::rt::testing;
using ::testing::HasSubstr;

namespace {

TEST(ByteTokenizerTest, EachByteIsATokenAndDocumentsEndWithEndOfText) {
  TempDir dir;
  std::string first = dir.file("a.txt"), second = dir.file("b.txt"),
              empty = dir.file("empty.txt");
  writeBytes(first, bytesOf("h\xc3\xa9!")); // "hé!" in UTF-8
  writeBytes(second, bytesOf("ok\n"));
  writeBytes(empty, {});
  std::vector<std::uint32_t> tokens = tokenizeFiles({first, empty, second});
  EXPECT_EQ(tokens, (std::vector<std::uint32_t>{'h', 0xc3, 0xa9, '!',
                                                kEndOfText, kEndOfText, 'o',
                                                'k', '\n', kEndOfText}));
  EXPECT_EQ(detokenize(tokens), "h\xc3\xa9!ok\n");
}

TEST(ByteTokenizerTest, RoundTripsEveryByteThroughAShard) {
  TempDir dir;
  std::string text;
  for (int repeat = 0; repeat < 3; ++repeat)
    for (int b = 255; b >= 0; --b)
      text.push_back(static_cast<char>(b));
  std::string textPath = dir.file("all-bytes.txt");
  writeBytes(textPath, bytesOf(text));

  std::string shard = dir.file("all-bytes.bin");
  writeTokenShard(shard, tokenizeFiles({textPath}));
  std::vector<std::uint32_t> tokens = readTokenShard(shard, kByteVocabSize);
  ASSERT_EQ(tokens.size(), text.size() + 1);
  EXPECT_EQ(tokens.back(), kEndOfText);
  EXPECT_EQ(detokenize(tokens), text);
  EXPECT_EQ(tokenizeText(text),
            std::vector<std::uint32_t>(tokens.begin(), tokens.end() - 1));
}

TEST(ByteTokenizerTest, UnreadableFileIsNamed) {
  TempDir dir;
  std::string missing = dir.file("missing.txt");
  EXPECT_EQ(errorMessage([&] { tokenizeFiles({missing}); }),
            missing + ": cannot open: No such file or directory");
  EXPECT_EQ(errorMessage([&] { tokenizeFiles({dir.path().string()}); }),
            dir.path().string() + ": not a regular file");
}

TEST(ByteTokenizerTest, DetokenizeRejectsTokensOutsideTheVocabulary) {
  std::vector<std::uint32_t> tokens = {'a', kEndOfText, 300};
  EXPECT_EQ(errorMessage([&] { detokenize(tokens); }),
            "token 300 at position 2 is outside the byte vocabulary "
            "(vocab_size 257)");
}

} // namespace
