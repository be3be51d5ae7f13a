//===- DocumentPacker.cpp - Documents packed into batch rows --------------===//

#include "runtime/io/DocumentPacker.h"

#include "runtime/Error.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace kiln::rt {

namespace {

/// The buffer `documents` packs from holds at least this many batches'
/// tokens: enough choice to fill the rows' ends with short documents.
constexpr std::int64_t kLookaheadBatches = 2;

} // namespace

std::optional<Packing> parsePacking(std::string_view name) {
  if (name == "stream")
    return Packing::Stream;
  if (name == "documents")
    return Packing::Documents;
  if (name == "pad")
    return Packing::Pad;
  return std::nullopt;
}

std::vector<std::int32_t> cuSeqlensOf(const PackedRows &rows,
                                      std::size_t firstRow,
                                      std::size_t rowCount,
                                      std::size_t entries) {
  std::vector<std::int32_t> offsets{0};
  for (std::size_t row = firstRow; row < firstRow + rowCount; ++row)
    for (std::int64_t length : rows.documents.at(row))
      offsets.push_back(offsets.back() + static_cast<std::int32_t>(length));
  if (offsets.size() > entries)
    throw Error(fmt::format("{} documents in {} rows: more than the plan's "
                            "cu_seqlens holds ({} entries)",
                            offsets.size() - 1, rowCount, entries));
  offsets.resize(entries, offsets.back());
  return offsets;
}

DocumentPacker::DocumentPacker(TokenStream &stream, std::uint32_t endOfText,
                               std::int32_t ignoreIndex, Packing mode)
    : stream(stream), endOfText(endOfText), ignoreIndex(ignoreIndex),
      mode(mode) {
  if (mode != Packing::Documents && mode != Packing::Pad)
    throw Error("DocumentPacker: packs documents or pads them");
}

void DocumentPacker::place(const TokenStream::Piece &piece, std::size_t at,
                           PackedRows &out) {
  // (A piece cut before its document's end predicts the token after it.)
  std::span<const std::uint32_t> tokens = stream.tokens(
      piece.shard, piece.offset, piece.length + (piece.last ? 0 : 1));
  for (std::size_t i = 0; i < piece.length; ++i) {
    out.inputs[at + i] = static_cast<std::int32_t>(tokens[i]);
    out.positions[at + i] = static_cast<std::int32_t>(i);
    out.targets[at + i] = i + 1 < tokens.size()
                              ? static_cast<std::int32_t>(tokens[i + 1])
                              : ignoreIndex;
  }
}

void DocumentPacker::next(std::int64_t rows, std::int64_t seqLen,
                          PackedRows &out) {
  if (rows <= 0 || seqLen <= 0)
    throw Error(fmt::format("DocumentPacker: rows ({}) and row length ({}) "
                            "must be positive",
                            rows, seqLen));
  const auto rowLength = static_cast<std::uint64_t>(seqLen);
  // Which pieces go into each row, in the buffer's numbering.
  std::vector<std::vector<std::size_t>> rowPieces(rows);
  std::vector<bool> placed;
  if (mode == Packing::Pad) {
    while (buffer.size() < static_cast<std::size_t>(rows))
      buffer.push_back(stream.nextPiece(endOfText, rowLength));
    for (std::int64_t row = 0; row < rows; ++row)
      rowPieces[row].push_back(row);
    placed.assign(buffer.size(), false);
    std::fill_n(placed.begin(), rows, true);
  } else {
    std::uint64_t buffered = 0;
    for (const TokenStream::Piece &piece : buffer)
      buffered += piece.length;
    const auto wanted =
        static_cast<std::uint64_t>(kLookaheadBatches * rows) * rowLength;
    while (buffered < wanted) {
      buffer.push_back(stream.nextPiece(endOfText, rowLength));
      buffered += buffer.back().length;
    }
    // First fit: the `rows` oldest pieces in arrival order (they always fit,
    // so no piece waits longer than the buffer takes to drain), then the
    // rest decreasing (ties in arrival order).
    std::vector<std::size_t> order(buffer.size());
    std::iota(order.begin(), order.end(), 0);
    std::size_t oldest = std::min(order.size(), static_cast<std::size_t>(rows));
    std::stable_sort(order.begin() + oldest, order.end(),
                     [&](std::size_t a, std::size_t b) {
                       return buffer[a].length > buffer[b].length;
                     });
    std::vector<std::uint64_t> room(rows, rowLength);
    placed.assign(buffer.size(), false);
    for (std::size_t index : order)
      for (std::int64_t row = 0; row < rows; ++row)
        if (room[row] >= buffer[index].length) {
          room[row] -= buffer[index].length;
          rowPieces[row].push_back(index);
          placed[index] = true;
          break;
        }
  }

  const std::size_t size = static_cast<std::size_t>(rows) * rowLength;
  out.inputs.assign(size, static_cast<std::int32_t>(endOfText));
  out.targets.assign(size, ignoreIndex);
  out.positions.assign(size, 0);
  out.documents.assign(rows, {});
  out.dataTokens = 0;
  for (std::int64_t row = 0; row < rows; ++row) {
    std::size_t at = static_cast<std::size_t>(row) * rowLength;
    std::uint64_t used = 0;
    for (std::size_t index : rowPieces[row]) {
      const TokenStream::Piece &piece = buffer[index];
      place(piece, at + used, out);
      used += piece.length;
      out.documents[row].push_back(static_cast<std::int64_t>(piece.length));
    }
    out.dataTokens += static_cast<std::int64_t>(used);
    if (used < rowLength) { // padding: a document of its own
      for (std::uint64_t i = used; i < rowLength; ++i)
        out.positions[at + i] = static_cast<std::int32_t>(i - used);
      out.documents[row].push_back(static_cast<std::int64_t>(rowLength - used));
    }
  }
  std::vector<TokenStream::Piece> waiting;
  for (std::size_t i = 0; i < buffer.size(); ++i)
    if (!placed[i])
      waiting.push_back(buffer[i]);
  buffer = std::move(waiting);
}

void DocumentPacker::restore(std::vector<TokenStream::Piece> pieces) {
  for (const TokenStream::Piece &piece : pieces)
    stream.tokens(piece.shard, piece.offset,
                  piece.length + (piece.last ? 0 : 1));
  buffer = std::move(pieces);
}

} // namespace kiln::rt
