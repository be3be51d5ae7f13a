//===- TokenShard.h - llm.c token shards and the training stream -*- C++
//-*-===//
//
// Training data is tokenized text in llm.c's shard format: a header of 256
// little-endian int32 (magic 20240520, version, number of tokens), then the
// tokens, little-endian: uint16 in version 1 (GPT-2's vocabulary fits),
// uint32 in version 2 (Llama 3's does not).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_IO_TOKENSHARD_H
#define KILN_RUNTIME_IO_TOKENSHARD_H

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kiln::rt {

/// The first header word of every shard (llm.c's data_common.py).
constexpr std::int32_t kTokenShardMagic = 20240520;

/// Header words; the first three are magic, version and token count.
constexpr std::size_t kTokenShardHeaderWords = 256;

/// Reads every token of the shard at `path`. Throws Error naming the file if
/// the file is shorter than the header, the magic or version is wrong, the
/// token count in the header disagrees with the file's size, or (when
/// `vocabSize` is given) a token is not below `vocabSize`.
std::vector<std::uint32_t>
readTokenShard(const std::string &path,
               std::optional<std::uint32_t> vocabSize = {});

/// Writes `tokens` as a shard of `version` 1 (uint16 tokens) or 2 (uint32),
/// atomically. Throws Error if a token does not fit version 1 or on failed
/// I/O.
void writeTokenShard(const std::string &path,
                     std::span<const std::uint32_t> tokens, int version = 1);

/// The training windows of a list of shards. The shards are read as one
/// sequence of tokens, in the order given; windows of seqLen + 1 tokens start
/// every seqLen tokens (consecutive windows share one token) and may span
/// shard boundaries. An epoch ends when the next window would run past the
/// last token; the next one starts again at the first token of the first
/// shard, so every epoch yields the same windows. Shards are loaded one at a
/// time, when the stream reaches them; their headers are checked up front.
class TokenStream {
public:
  /// Where the next window starts, for resuming a run.
  struct Position {
    std::size_t shard = 0;  ///< index into the shard list
    std::size_t offset = 0; ///< token index within that shard
    std::uint64_t epoch = 0;
    bool operator==(const Position &) const = default;
  };

  /// Opens the stream at the first token of the first shard. Throws Error if
  /// the list is empty or a shard's header is invalid; with `vocabSize`, each
  /// shard's tokens are checked against it when it is loaded.
  TokenStream(std::vector<std::string> shardPaths,
              std::optional<std::uint32_t> vocabSize = {});

  /// Fills `inputs` and `targets` with `batch` windows of `seqLen` tokens
  /// each, row-major [batch, seqLen]: targets[i] is the token after
  /// inputs[i]. Throws Error if the whole dataset holds fewer than
  /// seqLen + 1 tokens.
  void nextBatch(int batch, int seqLen, std::vector<std::int32_t> &inputs,
                 std::vector<std::int32_t> &targets);

  /// A run of one document's tokens in one shard: the whole document, or
  /// (`last` false) a piece of one longer than the row it must fit.
  struct Piece {
    std::size_t shard = 0;
    std::uint64_t offset = 0, length = 0;
    bool last = true; ///< ends its document (the end-of-text or the shard's)
    bool operator==(const Piece &) const = default;
  };

  /// The next document, or its next `maxTokens` (at least 1) when it is
  /// longer: documents end after each `endOfText` token and at the end of
  /// a shard. Wraps to the first shard (the next epoch) after the last.
  Piece nextPiece(std::uint32_t endOfText, std::uint64_t maxTokens);

  /// The `count` tokens of shard `shard` from `offset`, checked to lie in
  /// it (a piece, or a piece and the token after it); valid until the next
  /// call that loads another shard.
  std::span<const std::uint32_t> tokens(std::size_t shard, std::uint64_t offset,
                                        std::uint64_t count);

  /// Where the next window starts.
  Position position() const { return position_; }

  /// Continues at `position` (from position()); throws Error if it is not a
  /// position in these shards.
  void seek(Position position);

  std::size_t numShards() const { return paths_.size(); }

  /// Tokens in all shards together, as their headers say.
  std::uint64_t numTokens() const { return totalTokens_; }

private:
  /// Makes shard `index` the loaded one.
  void load(std::size_t index);

  std::vector<std::string> paths_;
  std::optional<std::uint32_t> vocabSize_;
  std::vector<std::uint64_t> shardTokens_; // per shard, from its header
  std::vector<std::uint64_t> shardStart_;  // first token's index in the set
  std::uint64_t totalTokens_ = 0;
  Position position_;
  std::optional<std::size_t> loadedShard_;
  std::vector<std::uint32_t> loadedTokens_;
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_IO_TOKENSHARD_H
