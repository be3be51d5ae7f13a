//===- TokenShard.cpp - llm.c token shards and the training stream --------===//

#include "runtime/io/TokenShard.h"

#include "runtime/Error.h"
#include "runtime/io/AtomicFile.h"
#include "runtime/io/InputFile.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <limits>

namespace kiln::rt {

namespace {

constexpr std::size_t kHeaderBytes = kTokenShardHeaderWords * 4;

/// Tokens encoded per write when writing a shard, to bound the buffer.
constexpr std::size_t kWriteChunkTokens = 1 << 20;

/// The largest token a version-1 shard holds.
constexpr std::uint32_t kMaxVersion1Token = 0xffff;

/// What a shard's header says, checked against its file.
struct ShardHeader {
  int version;
  std::uint64_t numTokens;
  std::size_t tokenBytes;
};

/// The little-endian unsigned integer of `width` bytes at `bytes`.
std::uint32_t decodeLittleEndian(const std::byte *bytes, std::size_t width) {
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < width; ++i)
    value |= std::to_integer<std::uint32_t>(bytes[i]) << (8 * i);
  return value;
}

/// Appends `value` as `width` little-endian bytes.
void encodeLittleEndian(std::vector<std::byte> &out, std::uint32_t value,
                        std::size_t width) {
  for (std::size_t i = 0; i < width; ++i)
    out.push_back(static_cast<std::byte>((value >> (8 * i)) & 0xff));
}

std::size_t tokenBytesOf(int version) { return version == 1 ? 2 : 4; }

/// Reads and checks the header of the shard `file`, including that the file
/// holds exactly the tokens the header counts.
ShardHeader readHeader(const InputFile &file) {
  const std::string &path = file.path();
  if (file.size() < kHeaderBytes)
    throw Error(fmt::format("{}: file is {} bytes, shorter than the {}-byte "
                            "token shard header",
                            path, file.size(), kHeaderBytes));
  std::array<std::byte, kHeaderBytes> raw;
  file.readAt(0, raw);
  auto word = [&](std::size_t index) {
    return static_cast<std::int32_t>(decodeLittleEndian(&raw[4 * index], 4));
  };
  if (word(0) != kTokenShardMagic)
    throw Error(fmt::format("{}: bad magic number: expected {}, found {} (not "
                            "an llm.c token shard)",
                            path, kTokenShardMagic, word(0)));
  ShardHeader header;
  header.version = word(1);
  if (header.version != 1 && header.version != 2)
    throw Error(fmt::format("{}: unsupported token shard version {} (1 for "
                            "uint16 tokens, 2 for uint32)",
                            path, header.version));
  if (word(2) < 0)
    throw Error(fmt::format("{}: header says {} tokens", path, word(2)));
  header.numTokens = static_cast<std::uint64_t>(word(2));
  header.tokenBytes = tokenBytesOf(header.version);

  std::uint64_t dataBytes = file.size() - kHeaderBytes;
  std::uint64_t held = dataBytes / header.tokenBytes;
  std::uint64_t stray = dataBytes % header.tokenBytes;
  if (held != header.numTokens || stray != 0)
    throw Error(fmt::format(
        "{}: header says {} tokens but the file holds {}{} ({})", path,
        header.numTokens, held,
        stray
            ? fmt::format(" and {} stray byte{}", stray, stray == 1 ? "" : "s")
            : "",
        dataBytes < header.numTokens * header.tokenBytes
            ? "truncated"
            : "trailing bytes after the tokens"));
  return header;
}

/// "'a', 'b', 'c'" for messages, eliding all but the first few.
std::string describePaths(const std::vector<std::string> &paths) {
  constexpr std::size_t kShown = 3;
  std::vector<std::string> shown;
  for (std::size_t i = 0; i < std::min(paths.size(), kShown); ++i)
    shown.push_back(fmt::format("'{}'", paths[i]));
  if (paths.size() > kShown)
    shown.push_back(fmt::format("... ({} more)", paths.size() - kShown));
  return fmt::format("{}", fmt::join(shown, ", "));
}

} // namespace

std::vector<std::uint32_t>
readTokenShard(const std::string &path,
               std::optional<std::uint32_t> vocabSize) {
  InputFile file(path);
  ShardHeader header = readHeader(file);
  std::vector<std::byte> raw(header.numTokens * header.tokenBytes);
  file.readAt(kHeaderBytes, raw);
  std::vector<std::uint32_t> tokens(header.numTokens);
  for (std::size_t i = 0; i < tokens.size(); ++i)
    tokens[i] =
        decodeLittleEndian(&raw[i * header.tokenBytes], header.tokenBytes);
  if (vocabSize) {
    auto outside =
        std::find_if(tokens.begin(), tokens.end(),
                     [&](std::uint32_t t) { return t >= *vocabSize; });
    if (outside != tokens.end())
      throw Error(fmt::format("{}: token {} at position {} is outside the "
                              "vocabulary (vocab_size {})",
                              path, *outside, outside - tokens.begin(),
                              *vocabSize));
  }
  return tokens;
}

void writeTokenShard(const std::string &path,
                     std::span<const std::uint32_t> tokens, int version) {
  if (version != 1 && version != 2)
    throw Error(fmt::format("{}: unsupported token shard version {} (1 for "
                            "uint16 tokens, 2 for uint32)",
                            path, version));
  constexpr auto kMaxTokens =
      static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
  if (tokens.size() > kMaxTokens)
    throw Error(fmt::format("{}: {} tokens do not fit one shard (at most {})",
                            path, tokens.size(), kMaxTokens));
  if (version == 1) {
    auto tooLarge =
        std::find_if(tokens.begin(), tokens.end(),
                     [](std::uint32_t t) { return t > kMaxVersion1Token; });
    if (tooLarge != tokens.end())
      throw Error(fmt::format("{}: token {} at position {} does not fit a "
                              "version 1 shard (uint16 tokens, at most {}); "
                              "write version 2",
                              path, *tooLarge, tooLarge - tokens.begin(),
                              kMaxVersion1Token));
  }

  std::vector<std::byte> bytes;
  bytes.reserve(kHeaderBytes);
  std::array<std::int32_t, kTokenShardHeaderWords> header{};
  header[0] = kTokenShardMagic;
  header[1] = version;
  header[2] = static_cast<std::int32_t>(tokens.size());
  for (std::int32_t word : header)
    encodeLittleEndian(bytes, static_cast<std::uint32_t>(word), 4);

  AtomicFile file(path);
  file.write(bytes);
  std::size_t tokenBytes = tokenBytesOf(version);
  for (std::size_t begin = 0; begin < tokens.size();
       begin += kWriteChunkTokens) {
    bytes.clear();
    std::size_t end = std::min(tokens.size(), begin + kWriteChunkTokens);
    for (std::size_t i = begin; i < end; ++i)
      encodeLittleEndian(bytes, tokens[i], tokenBytes);
    file.write(bytes);
  }
  file.commit();
}

TokenStream::TokenStream(std::vector<std::string> shardPaths,
                         std::optional<std::uint32_t> vocabSize)
    : paths_(std::move(shardPaths)), vocabSize_(vocabSize) {
  if (paths_.empty())
    throw Error("TokenStream: no token shards given");
  for (const std::string &path : paths_) {
    ShardHeader header = readHeader(InputFile(path));
    shardStart_.push_back(totalTokens_);
    shardTokens_.push_back(header.numTokens);
    totalTokens_ += header.numTokens;
  }
}

void TokenStream::load(std::size_t index) {
  if (loadedShard_ == index)
    return;
  loadedShard_.reset();
  loadedTokens_ = readTokenShard(paths_[index], vocabSize_);
  if (loadedTokens_.size() != shardTokens_[index])
    throw Error(fmt::format("{}: the shard changed while the stream was open "
                            "(it held {} tokens, now {})",
                            paths_[index], shardTokens_[index],
                            loadedTokens_.size()));
  constexpr auto kMaxInput =
      static_cast<std::uint32_t>(std::numeric_limits<std::int32_t>::max());
  auto tooLarge = std::find_if(loadedTokens_.begin(), loadedTokens_.end(),
                               [](std::uint32_t t) { return t > kMaxInput; });
  if (tooLarge != loadedTokens_.end())
    throw Error(fmt::format("{}: token {} at position {} does not fit the "
                            "int32 model inputs",
                            paths_[index], *tooLarge,
                            tooLarge - loadedTokens_.begin()));
  loadedShard_ = index;
}

void TokenStream::nextBatch(int batch, int seqLen,
                            std::vector<std::int32_t> &inputs,
                            std::vector<std::int32_t> &targets) {
  if (batch <= 0 || seqLen <= 0)
    throw Error(fmt::format("TokenStream: batch ({}) and sequence length ({}) "
                            "must be positive",
                            batch, seqLen));
  const std::uint64_t windowTokens = static_cast<std::uint64_t>(seqLen) + 1;
  if (totalTokens_ < windowTokens)
    throw Error(fmt::format("TokenStream: the token shards {} hold {} tokens "
                            "in all, fewer than the {} that one window of "
                            "sequence length {} needs",
                            describePaths(paths_), totalTokens_, windowTokens,
                            seqLen));

  const auto rowTokens = static_cast<std::size_t>(seqLen);
  inputs.resize(static_cast<std::size_t>(batch) * rowTokens);
  targets.resize(inputs.size());
  std::vector<std::uint32_t> window(windowTokens);
  Position next = position_;
  for (std::size_t row = 0; row < static_cast<std::size_t>(batch); ++row) {
    if (shardStart_[next.shard] + next.offset + windowTokens > totalTokens_)
      next = Position{0, 0, next.epoch + 1};

    // Gather the window, crossing into later shards where it needs to.
    std::size_t shard = next.shard;
    std::uint64_t offset = next.offset;
    std::size_t filled = 0;
    while (filled < window.size()) {
      if (offset == shardTokens_[shard]) {
        ++shard;
        offset = 0;
        continue;
      }
      load(shard);
      std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>(
          window.size() - filled, shardTokens_[shard] - offset));
      std::copy_n(loadedTokens_.begin() + offset, count,
                  window.begin() + filled);
      filled += count;
      offset += count;
    }
    for (std::size_t t = 0; t < rowTokens; ++t) {
      inputs[row * rowTokens + t] = static_cast<std::int32_t>(window[t]);
      targets[row * rowTokens + t] = static_cast<std::int32_t>(window[t + 1]);
    }

    // The next window starts at this one's last token.
    next.offset += rowTokens;
    while (next.offset >= shardTokens_[next.shard]) {
      next.offset -= shardTokens_[next.shard];
      ++next.shard;
    }
  }
  position_ = next;
}

TokenStream::Piece TokenStream::nextPiece(std::uint32_t endOfText,
                                          std::uint64_t maxTokens) {
  if (totalTokens_ == 0)
    throw Error(fmt::format("TokenStream: the token shards {} hold no tokens",
                            describePaths(paths_)));
  maxTokens = std::max<std::uint64_t>(maxTokens, 1);
  while (position_.offset >= shardTokens_[position_.shard]) {
    position_.offset = 0;
    if (++position_.shard == paths_.size())
      position_ = Position{0, 0, position_.epoch + 1};
  }
  load(position_.shard);
  Piece piece{position_.shard, position_.offset, 0, true};
  const std::uint64_t end =
      std::min(shardTokens_[piece.shard], piece.offset + maxTokens);
  auto begin = loadedTokens_.begin() + piece.offset;
  auto found = std::find(begin, loadedTokens_.begin() + end, endOfText);
  if (found != loadedTokens_.begin() + end)
    piece.length = static_cast<std::uint64_t>(found - begin) + 1;
  else
    piece.length = end - piece.offset;
  // (A piece cut at maxTokens before its document's end continues it.)
  piece.last =
      found != loadedTokens_.begin() + end || end == shardTokens_[piece.shard];
  position_.offset += piece.length;
  return piece;
}

std::span<const std::uint32_t> TokenStream::tokens(std::size_t shard,
                                                   std::uint64_t offset,
                                                   std::uint64_t count) {
  if (shard >= paths_.size() || offset > shardTokens_[shard] ||
      count > shardTokens_[shard] - offset)
    throw Error(fmt::format("TokenStream: tokens {}..{} of shard {} are "
                            "outside the data ({} shards)",
                            offset, offset + count, shard, paths_.size()));
  load(shard);
  return std::span(loadedTokens_).subspan(offset, count);
}

void TokenStream::seek(Position position) {
  if (position.shard >= paths_.size())
    throw Error(fmt::format("TokenStream: cannot seek to shard {}: there are "
                            "{} shards",
                            position.shard, paths_.size()));
  if (position.offset > shardTokens_[position.shard])
    throw Error(fmt::format("{}: cannot seek to token {}: the shard holds {} "
                            "tokens",
                            paths_[position.shard], position.offset,
                            shardTokens_[position.shard]));
  position_ = position;
}

} // namespace kiln::rt
