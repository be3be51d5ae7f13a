//===- DocumentPackerTest.cpp - Documents packed into batch rows ----------===//
//
// The packer on a hand-made shard set: documents split after end-of-text
// and at a shard's end, a document longer than a row cut into pieces, the
// rows first-fit (the oldest pieces first, then decreasing), targets,
// positions and documents of each row, padding, the waiting pieces carried
// to the next batch and restored from a checkpoint's record, pad mode, and
// cu_seqlens.
//
//===----------------------------------------------------------------------===//

#include "runtime/io/DocumentPacker.h"

#include "IoTestSupport.h"

#include "runtime/Error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace kiln::rt;
using namespace kiln::rt::testing;
using ::testing::HasSubstr;

namespace {

constexpr std::uint32_t E = 99;  // end of text
constexpr std::int32_t X = -100; // ignored target

using Tokens = std::vector<std::int32_t>;
using Piece = TokenStream::Piece;

/// Shard 0: [1 2 E] [3 4 5 6 E] [7 E] [10 .. 19 E] (11 tokens: longer
/// than a row of 8); shard 1: [20 21] (no end-of-text: the shard's end
/// ends it).
class DocumentPackerTest : public ::testing::Test {
protected:
  void SetUp() override {
    write("shard_0.bin", {1,  2,  E,  3,  4,  5,  6,  E,  7,  E, 10,
                          11, 12, 13, 14, 15, 16, 17, 18, 19, E});
    write("shard_1.bin", {20, 21});
  }

  void write(const std::string &name, const std::vector<std::uint32_t> &t) {
    paths.push_back(dir.file(name));
    writeTokenShard(paths.back(), t);
  }

  TempDir dir;
  std::vector<std::string> paths;
};

TEST_F(DocumentPackerTest, PiecesEndAfterEndOfTextAtShardEndsAndAtRowLength) {
  TokenStream stream(paths);
  std::vector<Piece> pieces;
  for (int i = 0; i < 7; ++i)
    pieces.push_back(stream.nextPiece(E, 8));
  EXPECT_EQ(pieces, (std::vector<Piece>{{0, 0, 3, true},
                                        {0, 3, 5, true},
                                        {0, 8, 2, true},
                                        {0, 10, 8, false},
                                        {0, 18, 3, true},
                                        {1, 0, 2, true},
                                        {0, 0, 3, true}}));
  EXPECT_EQ(stream.position(), (TokenStream::Position{0, 3, 1}));
  EXPECT_THAT(
      [&] { stream.tokens(1, 1, 2); },
      ThrowsMessage<Error>(HasSubstr("tokens 1..3 of shard 1 are outside")));
}

TEST_F(DocumentPackerTest, PacksOldestFirstThenFirstFitDecreasing) {
  TokenStream stream(paths);
  DocumentPacker packer(stream, E, X, Packing::Documents);
  PackedRows rows;
  // The lookahead reads 2 batches' tokens (32): both shards (23) and three
  // documents of the next epoch. The two oldest fill row 0, the longest of
  // the rest (the first 8 tokens of [10 .. 19 E], predicting 18) row 1.
  packer.next(2, 8, rows);
  EXPECT_EQ(rows.inputs, (Tokens{1, 2, E, 3, 4, 5, 6, E, //
                                 10, 11, 12, 13, 14, 15, 16, 17}));
  EXPECT_EQ(rows.targets, (Tokens{2, E, X, 4, 5, 6, E, X, //
                                  11, 12, 13, 14, 15, 16, 17, 18}));
  EXPECT_EQ(rows.positions, (Tokens{0, 1, 2, 0, 1, 2, 3, 4, //
                                    0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(rows.documents,
            (std::vector<std::vector<std::int64_t>>{{3, 5}, {8}}));
  EXPECT_EQ(rows.dataTokens, 16);
  // Waiting, in arrival order: [7 E], [18 19 E], [20 21] and the next
  // epoch's [1 2 E], [3 4 5 6 E], [7 E].
  EXPECT_EQ(packer.pending(), (std::vector<Piece>{{0, 8, 2, true},
                                                  {0, 18, 3, true},
                                                  {1, 0, 2, true},
                                                  {0, 0, 3, true},
                                                  {0, 3, 5, true},
                                                  {0, 8, 2, true}}));
  TokenStream::Position after = stream.position();
  std::vector<Piece> waiting = packer.pending();

  // The oldest two, [7 E] and [18 19 E], then decreasing: the next
  // epoch's long piece fills row 1, [1 2 E] the rest of row 0.
  packer.next(2, 8, rows);
  EXPECT_EQ(rows.inputs, (Tokens{7, E, 18, 19, E, 1, 2, E, //
                                 10, 11, 12, 13, 14, 15, 16, 17}));
  EXPECT_EQ(rows.targets, (Tokens{E, X, 19, E, X, 2, E, X, //
                                  11, 12, 13, 14, 15, 16, 17, 18}));
  EXPECT_EQ(rows.positions, (Tokens{0, 1, 0, 1, 2, 0, 1, 2, //
                                    0, 1, 2, 3, 4, 5, 6, 7}));

  // A packer restored from the stream position and the waiting pieces
  // (what a checkpoint records) packs the same second batch.
  TokenStream again(paths);
  again.seek(after);
  DocumentPacker restored(again, E, X, Packing::Documents);
  restored.restore(waiting);
  PackedRows second;
  restored.next(2, 8, second);
  EXPECT_EQ(second.inputs, rows.inputs);
  EXPECT_EQ(second.targets, rows.targets);
  EXPECT_EQ(second.positions, rows.positions);
  EXPECT_EQ(second.documents, rows.documents);
  EXPECT_EQ(restored.pending(), packer.pending());
}

TEST_F(DocumentPackerTest, PadPutsOneDocumentInEachRow) {
  TokenStream stream(paths);
  DocumentPacker packer(stream, E, X, Packing::Pad);
  PackedRows rows;
  packer.next(2, 8, rows);
  // Padding: end-of-text tokens, ignored targets, a document of its own
  // with positions from 0.
  EXPECT_EQ(rows.inputs, (Tokens{1, 2, E, E, E, E, E, E, //
                                 3, 4, 5, 6, E, E, E, E}));
  EXPECT_EQ(rows.targets, (Tokens{2, E, X, X, X, X, X, X, //
                                  4, 5, 6, E, X, X, X, X}));
  EXPECT_EQ(rows.positions, (Tokens{0, 1, 2, 0, 1, 2, 3, 4, //
                                    0, 1, 2, 3, 4, 0, 1, 2}));
  EXPECT_EQ(rows.documents,
            (std::vector<std::vector<std::int64_t>>{{3, 5}, {5, 3}}));
  EXPECT_EQ(rows.dataTokens, 8);
  EXPECT_TRUE(packer.pending().empty());

  EXPECT_EQ(cuSeqlensOf(rows, 0, 2, 6), (Tokens{0, 3, 8, 13, 16, 16}));
  EXPECT_EQ(cuSeqlensOf(rows, 1, 1, 4), (Tokens{0, 5, 8, 8}));
  EXPECT_THAT([&] { cuSeqlensOf(rows, 0, 2, 4); },
              ThrowsMessage<Error>(HasSubstr(
                  "4 documents in 2 rows: more than the plan's cu_seqlens "
                  "holds (4 entries)")));
}

TEST_F(DocumentPackerTest, RestoreRefusesPiecesOutsideTheData) {
  TokenStream stream(paths);
  DocumentPacker packer(stream, E, X, Packing::Documents);
  EXPECT_THAT(
      [&] {
        packer.restore({{1, 1, 2, true}});
      },
      ThrowsMessage<Error>(HasSubstr("outside the data")));
  EXPECT_THAT(
      [&] {
        packer.restore({{2, 0, 1, true}});
      },
      ThrowsMessage<Error>(HasSubstr("outside the data")));
}

} // namespace
