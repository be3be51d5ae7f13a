//===- DocumentPacker.h - Documents packed into batch rows ------*- C++ -*-===//
//
// Sequence packing (`--packing documents|pad`): the token stream split into
// documents (each ends after an end-of-text token, or at the end of its
// shard; one longer than a row is cut at row length, each piece then its
// own document), placed into the rows of a batch. `documents` packs a
// lookahead buffer of at least two batches' tokens first-fit-decreasing:
// longest piece first, each into the first row with room; the pieces that
// fit nowhere wait in the buffer, in arrival order, for the next batch.
// The `rows` oldest pieces go first, in arrival order, so that no piece
// waits longer than the buffer takes to drain. `pad` puts one piece in
// each row. The rest of a row is padding: its own
// document of end-of-text tokens whose targets are ignored. Positions
// restart at 0 in every document; the target of a document's last token
// (its end-of-text: the next token belongs to another document) is ignored,
// that of a piece cut at a row's end is the document's next token.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_IO_DOCUMENTPACKER_H
#define KILN_RUNTIME_IO_DOCUMENTPACKER_H

#include "runtime/io/TokenShard.h"

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace kiln::rt {

/// How the data fills the batch rows (the plan's model.packing).
enum class Packing { Stream, Documents, Pad };
std::optional<Packing> parsePacking(std::string_view name);

/// One packed batch, row-major [rows, seqLen].
struct PackedRows {
  std::vector<std::int32_t> inputs, targets, positions;
  /// Per row, its documents' lengths in order (padding last, as one).
  std::vector<std::vector<std::int64_t>> documents;
  /// Positions holding data, not padding.
  std::int64_t dataTokens = 0;
};

/// The cu_seqlens of rows [firstRow, firstRow + rowCount) of `rows`:
/// cumulative document offsets over those rows' flattened tokens from 0,
/// then `entries` - (documents + 1) copies of the last (the plan's static
/// size; Error if the documents need more).
std::vector<std::int32_t> cuSeqlensOf(const PackedRows &rows,
                                      std::size_t firstRow,
                                      std::size_t rowCount,
                                      std::size_t entries);

class DocumentPacker {
public:
  /// Reads documents from `stream`, which it advances; `ignoreIndex` is
  /// the target the loss skips. `mode` is Documents or Pad.
  DocumentPacker(TokenStream &stream, std::uint32_t endOfText,
                 std::int32_t ignoreIndex, Packing mode);

  /// The next batch of `rows` rows of `seqLen` tokens.
  void next(std::int64_t rows, std::int64_t seqLen, PackedRows &out);

  /// The pieces read but not yet placed: with the stream's position, the
  /// packer's whole state (checkpoints record both).
  const std::vector<TokenStream::Piece> &pending() const { return buffer; }
  /// Continues with `pieces` waiting (from pending()); throws Error if one
  /// is not in the stream's shards.
  void restore(std::vector<TokenStream::Piece> pieces);

private:
  /// Writes `piece` into the row of `out` from position `at`.
  void place(const TokenStream::Piece &piece, std::size_t at, PackedRows &out);

  TokenStream &stream;
  std::uint32_t endOfText;
  std::int32_t ignoreIndex;
  Packing mode;
  std::vector<TokenStream::Piece> buffer;
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_IO_DOCUMENTPACKER_H
