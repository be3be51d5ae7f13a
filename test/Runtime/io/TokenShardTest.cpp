//===- TokenShardTest.cpp - llm.c token shards and the training stream ----===//
//
// Shards: round trips of both versions, shards written byte for byte from
// llm.c's layout, and every malformation the reader rejects. The stream: the
// exact windows of a small hand-made shard set, across shard boundaries and
// epochs, and resuming from a saved position.
//
//===----------------------------------------------------------------------===//

#include "runtime/io/TokenShard.h"

#include "IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <numeric>
#include <random>

using namespace kiln::rt;
using namespace kiln::rt::testing;
using ::testing::HasSubstr;

namespace {

/// A shard made by hand: the 256-word header with `magic`, `version` and
/// `count`, then `tokens` of `tokenBytes` bytes each.
std::vector<std::byte> shardBytes(std::int32_t magic, std::int32_t version,
                                  std::int32_t count,
                                  const std::vector<std::uint32_t> &tokens,
                                  int tokenBytes) {
  std::vector<std::byte> bytes;
  appendLittleEndian(bytes, static_cast<std::uint32_t>(magic), 4);
  appendLittleEndian(bytes, static_cast<std::uint32_t>(version), 4);
  appendLittleEndian(bytes, static_cast<std::uint32_t>(count), 4);
  bytes.resize(256 * 4);
  for (std::uint32_t token : tokens)
    appendLittleEndian(bytes, token, tokenBytes);
  return bytes;
}

/// `count` random tokens below `limit`, none zero.
std::vector<std::uint32_t> randomTokens(std::size_t count, std::uint32_t limit,
                                        unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::uint32_t> token(1, limit - 1);
  std::vector<std::uint32_t> tokens(count);
  for (std::uint32_t &t : tokens)
    t = token(rng);
  return tokens;
}

//===----------------------------------------------------------------------===//
// Shards
//===----------------------------------------------------------------------===//

TEST(TokenShardTest, Version1RoundTripsUint16Tokens) {
  TempDir dir;
  std::string path = dir.file("train_000.bin");
  std::vector<std::uint32_t> tokens = randomTokens(1000, 65536, 1);
  tokens.push_back(65535);
  writeTokenShard(path, tokens);
  EXPECT_EQ(readBytes(path), shardBytes(20240520, 1, 1001, tokens, 2));
  EXPECT_EQ(readTokenShard(path), tokens);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"train_000.bin"});
}

TEST(TokenShardTest, Version2RoundTripsUint32Tokens) {
  TempDir dir;
  std::string path = dir.file("train_000.bin");
  std::vector<std::uint32_t> tokens = randomTokens(1000, 128256, 2);
  tokens.push_back(0xffffffffu);
  writeTokenShard(path, tokens, 2);
  EXPECT_EQ(readBytes(path), shardBytes(20240520, 2, 1001, tokens, 4));
  EXPECT_EQ(readTokenShard(path), tokens);
}

TEST(TokenShardTest, ReadsAShardWrittenByHand) {
  TempDir dir;
  std::string path = dir.file("hand.bin");
  writeBytes(path, shardBytes(20240520, 1, 3, {50256, 1, 0x1234}, 2));
  EXPECT_EQ(readTokenShard(path, 50257),
            (std::vector<std::uint32_t>{50256, 1, 0x1234}));
}

TEST(TokenShardTest, EmptyShardRoundTrips) {
  TempDir dir;
  std::string path = dir.file("empty.bin");
  writeTokenShard(path, {});
  EXPECT_EQ(readBytes(path).size(), 1024u);
  EXPECT_TRUE(readTokenShard(path).empty());
}

TEST(TokenShardTest, Version1RefusesTokensAbove65535) {
  TempDir dir;
  std::string path = dir.file("big.bin");
  std::vector<std::uint32_t> tokens = {5, 6, 70000, 7};
  EXPECT_EQ(errorMessage([&] { writeTokenShard(path, tokens, 1); }),
            path + ": token 70000 at position 2 does not fit a version 1 "
                   "shard (uint16 tokens, at most 65535); write version 2");
  EXPECT_EQ(errorMessage([&] { writeTokenShard(path, tokens, 3); }),
            path + ": unsupported token shard version 3 (1 for uint16 "
                   "tokens, 2 for uint32)");
  EXPECT_TRUE(dir.entries().empty());
}

TEST(TokenShardTest, RejectsAFileShorterThanTheHeader) {
  TempDir dir;
  std::string path = dir.file("short.bin");
  writeBytes(path, std::vector<std::byte>(100, std::byte{1}));
  EXPECT_EQ(errorMessage([&] { readTokenShard(path); }),
            path + ": file is 100 bytes, shorter than the 1024-byte token "
                   "shard header");
}

TEST(TokenShardTest, RejectsABadMagic) {
  TempDir dir;
  std::string path = dir.file("magic.bin");
  writeBytes(path, shardBytes(12345, 1, 2, {1, 2}, 2));
  EXPECT_EQ(errorMessage([&] { readTokenShard(path); }),
            path + ": bad magic number: expected 20240520, found 12345 (not "
                   "an llm.c token shard)");
}

TEST(TokenShardTest, RejectsAnUnsupportedVersion) {
  TempDir dir;
  std::string path = dir.file("version.bin");
  writeBytes(path, shardBytes(20240520, 7, 2, {1, 2}, 2));
  EXPECT_EQ(errorMessage([&] { readTokenShard(path); }),
            path + ": unsupported token shard version 7 (1 for uint16 "
                   "tokens, 2 for uint32)");
}

TEST(TokenShardTest, RejectsATruncatedShard) {
  TempDir dir;
  std::string path = dir.file("truncated.bin");
  writeBytes(path, shardBytes(20240520, 1, 10, {1, 2, 3, 4, 5, 6, 7}, 2));
  EXPECT_EQ(errorMessage([&] { readTokenShard(path); }),
            path + ": header says 10 tokens but the file holds 7 (truncated)");

  std::vector<std::byte> halfToken = shardBytes(20240520, 2, 2, {1}, 4);
  halfToken.resize(halfToken.size() + 2, std::byte{9});
  writeBytes(path, halfToken);
  EXPECT_EQ(errorMessage([&] { readTokenShard(path); }),
            path + ": header says 2 tokens but the file holds 1 and 2 stray "
                   "bytes (truncated)");
}

TEST(TokenShardTest, RejectsTrailingBytes) {
  TempDir dir;
  std::string path = dir.file("long.bin");
  writeBytes(path, shardBytes(20240520, 1, 2, {1, 2, 3}, 2));
  EXPECT_EQ(errorMessage([&] { readTokenShard(path); }),
            path + ": header says 2 tokens but the file holds 3 (trailing "
                   "bytes after the tokens)");
}

TEST(TokenShardTest, ChecksTokensAgainstTheVocabulary) {
  TempDir dir;
  std::string path = dir.file("vocab.bin");
  std::vector<std::uint32_t> tokens = randomTokens(200, 50257, 3);
  tokens[123] = 70000;
  tokens[150] = 80000;
  writeTokenShard(path, tokens, 2);
  EXPECT_EQ(errorMessage([&] { readTokenShard(path, 50257); }),
            path + ": token 70000 at position 123 is outside the vocabulary "
                   "(vocab_size 50257)");
  EXPECT_EQ(readTokenShard(path, 80001), tokens);
}

TEST(TokenShardTest, RejectsAMissingFile) {
  TempDir dir;
  std::string path = dir.file("absent.bin");
  EXPECT_EQ(errorMessage([&] { readTokenShard(path); }),
            path + ": cannot open: No such file or directory");
}

//===----------------------------------------------------------------------===//
// TokenStream
//===----------------------------------------------------------------------===//

/// Four shards read as one sequence of 18 tokens:
///   index  0..9  : 0..9        (shard 0)
///   index 10..14 : 100..104    (shard 1)
///   (shard 2 is empty)
///   index 15..17 : 200..202    (shard 3)
class TokenStreamTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::vector<std::uint32_t> first(10);
    std::iota(first.begin(), first.end(), 0);
    write("shard_0.bin", first);
    write("shard_1.bin", {100, 101, 102, 103, 104});
    write("shard_2.bin", {});
    write("shard_3.bin", {200, 201, 202});
  }

  void write(const std::string &name, const std::vector<std::uint32_t> &t) {
    paths.push_back(dir.file(name));
    writeTokenShard(paths.back(), t);
  }

  /// The inputs and targets of the stream's next batch.
  static std::pair<std::vector<std::int32_t>, std::vector<std::int32_t>>
  next(TokenStream &stream, int batch, int seqLen) {
    std::vector<std::int32_t> inputs = {-1}, targets = {-1}; // poisoned
    stream.nextBatch(batch, seqLen, inputs, targets);
    return {inputs, targets};
  }

  TempDir dir;
  std::vector<std::string> paths;
};

using Tokens = std::vector<std::int32_t>;
using Position = TokenStream::Position;

TEST_F(TokenStreamTest, YieldsOverlappingWindowsAcrossShardsAndEpochs) {
  TokenStream stream(paths, 300);
  EXPECT_EQ(stream.numShards(), 4u);
  EXPECT_EQ(stream.numTokens(), 18u);
  EXPECT_EQ(stream.position(), (Position{0, 0, 0}));

  // Windows of 5 tokens start every 4: at 0, 4, 8, 12; the one at 16 would
  // run past the last token, so the epoch ends there.
  auto [inputs, targets] = next(stream, 2, 4);
  EXPECT_EQ(inputs, (Tokens{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(targets, (Tokens{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(stream.position(), (Position{0, 8, 0}));

  // From shard 0 into shard 1, and from shard 1 over the empty shard 2 into
  // shard 3.
  std::tie(inputs, targets) = next(stream, 2, 4);
  EXPECT_EQ(inputs, (Tokens{8, 9, 100, 101, 102, 103, 104, 200}));
  EXPECT_EQ(targets, (Tokens{9, 100, 101, 102, 103, 104, 200, 201}));
  EXPECT_EQ(stream.position(), (Position{3, 1, 0}));

  // Tokens 201, 202 cannot fill a window: epoch 1 starts from the first
  // token again, with the same windows as epoch 0.
  std::tie(inputs, targets) = next(stream, 3, 4);
  EXPECT_EQ(inputs, (Tokens{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 101}));
  EXPECT_EQ(targets, (Tokens{1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 101, 102}));
  EXPECT_EQ(stream.position(), (Position{1, 2, 1}));
}

TEST_F(TokenStreamTest, WrapsWithinABatch) {
  TokenStream stream(paths);
  // Windows of 9 at 0 and 8 fill an epoch; the third batch row is epoch 1's
  // first window.
  auto [inputs, targets] = next(stream, 3, 8);
  EXPECT_EQ(inputs, (Tokens{0,   1,   2,   3,   4, 5, 6, 7, 8, 9, 100, 101,
                            102, 103, 104, 200, 0, 1, 2, 3, 4, 5, 6,   7}));
  EXPECT_EQ(targets, (Tokens{1,   2,   3,   4,   5, 6, 7, 8, 9, 100, 101, 102,
                             103, 104, 200, 201, 1, 2, 3, 4, 5, 6,   7,   8}));
  EXPECT_EQ(stream.position(), (Position{0, 8, 1}));
}

TEST_F(TokenStreamTest, AWindowAsLargeAsTheDatasetRepeatsEachEpoch) {
  TokenStream stream(paths);
  auto [inputs, targets] = next(stream, 2, 17);
  ASSERT_EQ(inputs.size(), 34u);
  EXPECT_EQ(inputs[0], 0);
  EXPECT_EQ(targets[16], 202);
  EXPECT_EQ(inputs[17], 0); // the second row is epoch 1
  EXPECT_EQ(targets[33], 202);
  EXPECT_EQ(stream.position().epoch, 1u);
}

TEST_F(TokenStreamTest, SeekReproducesTheBatchesAfterAPosition) {
  TokenStream original(paths, 300);
  next(original, 1, 3);
  next(original, 2, 3);
  Position saved = original.position();
  std::vector<std::pair<Tokens, Tokens>> expected;
  for (int i = 0; i < 6; ++i) // through an epoch boundary
    expected.push_back(next(original, 2, 3));

  TokenStream resumed(paths, 300);
  resumed.seek(saved);
  EXPECT_EQ(resumed.position(), saved);
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(next(resumed, 2, 3), expected[i]) << "batch " << i;
  EXPECT_EQ(resumed.position(), original.position());
  EXPECT_GE(resumed.position().epoch, 1u);
}

TEST_F(TokenStreamTest, SeekRejectsPositionsOutsideTheShards) {
  TokenStream stream(paths);
  EXPECT_EQ(errorMessage([&] {
              stream.seek(Position{4, 0, 0});
            }),
            "TokenStream: cannot seek to shard 4: there are 4 shards");
  EXPECT_EQ(errorMessage([&] {
              stream.seek(Position{1, 6, 0});
            }),
            paths[1] + ": cannot seek to token 6: the shard holds 5 tokens");
  EXPECT_EQ(stream.position(), (Position{0, 0, 0}));
}

TEST_F(TokenStreamTest, RejectsADatasetShorterThanOneWindow) {
  TokenStream stream(paths);
  std::vector<std::int32_t> inputs, targets;
  std::string message =
      errorMessage([&] { stream.nextBatch(1, 18, inputs, targets); });
  EXPECT_THAT(message, HasSubstr("hold 18 tokens in all, fewer than the 19 "
                                 "that one window of sequence length 18 "
                                 "needs"));
  EXPECT_THAT(message, HasSubstr("'" + paths[0] + "'"));
  EXPECT_EQ(errorMessage([&] { stream.nextBatch(0, 4, inputs, targets); }),
            "TokenStream: batch (0) and sequence length (4) must be positive");
}

TEST_F(TokenStreamTest, ChecksTheVocabularyWhenItLoadsAShard) {
  TokenStream stream(paths, 150); // shard 3's tokens are 200..202
  next(stream, 2, 4);             // shards 0 and 1 only
  std::vector<std::int32_t> inputs, targets;
  EXPECT_EQ(errorMessage([&] { stream.nextBatch(2, 4, inputs, targets); }),
            paths[3] + ": token 200 at position 0 is outside the vocabulary "
                       "(vocab_size 150)");
}

TEST_F(TokenStreamTest, ChecksEveryShardHeaderUpFront) {
  std::vector<std::string> withMissing = paths;
  withMissing.push_back(dir.file("missing.bin"));
  EXPECT_EQ(errorMessage([&] { TokenStream stream(withMissing); }),
            dir.file("missing.bin") + ": cannot open: No such file or "
                                      "directory");
  EXPECT_EQ(errorMessage([] { TokenStream stream({}); }),
            "TokenStream: no token shards given");
}

} // namespace
