//===- FoldViews.cpp - tile-fold-views ------------------------------------===//
//
// Removes the copies of packed tensors: a split of a GEMM's packed output
// becomes row-strided views that its consumers read in place, and a concat
// of gradients becomes a buffer that their producers write into, when every
// kernel involved reads or writes row-strided operands.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"
#include "dialects/tile/TileOps.h"
#include "passes/Chunks.h"
#include "passes/Passes.h"
#include "passes/Report.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/FormatVariadic.h"

namespace kiln {
#define GEN_PASS_DEF_TILEFOLDVIEWSPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// The one op of a tile.fused region, if that is all it holds.
Operation *soleOp(tile::FusedOp fused) {
  Block &body = fused.getBody().front();
  if (!llvm::hasSingleElement(body.without_terminator()))
    return nullptr;
  Operation &op = body.front();
  // The region must yield exactly the op's results, in order.
  auto yield = cast<tile::YieldOp>(body.getTerminator());
  if (yield.getValues() != ValueRange(op.getResults()))
    return nullptr;
  for (auto [operand, arg] : llvm::zip(op.getOperands(), body.getArguments()))
    if (operand != arg)
      return nullptr;
  if (op.getNumOperands() != body.getNumArguments())
    return nullptr;
  return &op;
}

/// "forward" or "backward", from the op's chunk tag (the forward function
/// has none).
StringRef chunkDirection(Operation *op) {
  auto chunk = op->getAttrOfType<StringAttr>(kChunkAttr);
  return !chunk || chunk.getValue() == "F" ? "forward" : "backward";
}

/// Whether the parts of `whole` cut along `dim` (the first or the last)
/// start at 16-byte boundaries, and its rows are 16-byte multiples apart
/// where that matters: the GPU kernels load and store 16 bytes at a time.
bool keepsAlignment(Value whole, ArrayRef<Value> parts, int64_t dim) {
  auto type = cast<RankedTensorType>(whole.getType());
  int64_t bytes = type.getElementTypeBitWidth() / 8;
  bool rows = dim == type.getRank() - 1 && tile::rowCount(whole) > 1;
  if ((rows || tile::isRowStrided(whole)) &&
      tile::rowPitch(whole) * bytes % 16 != 0)
    return false;
  // Elements from one part's start to the next's.
  int64_t step = 1;
  if (dim != type.getRank() - 1) {
    step = tile::rowPitch(whole);
    for (int64_t d = dim + 1; d + 1 < type.getRank(); ++d)
      step *= type.getDimSize(d);
  }
  int64_t start = 0;
  for (Value part : parts) {
    if (start * step * bytes % 16 != 0)
      return false;
    start += cast<RankedTensorType>(part.getType()).getDimSize(dim);
  }
  return true;
}

/// Why some use of `value` cannot read it row-strided, or "" if every use
/// can.
std::string whyNotStridedUses(Value value) {
  for (OpOperand &use : value.getUses())
    if (!tile::readsRowStrided(use))
      return llvm::formatv("'{0}' reads operand #{1} contiguous",
                           use.getOwner()->getName(), use.getOperandNumber())
          .str();
  return "";
}

struct TileFoldViewsPass
    : kiln::impl::TileFoldViewsPassBase<TileFoldViewsPass> {
  using Base::Base;
  void runOnOperation() final;
};

void TileFoldViewsPass::runOnOperation() {
  SmallVector<Decision> decisions;
  unsigned position = 0;
  auto decide = [&](Operation *op, StringRef kind, const Twine &what) {
    if (report)
      decisions.push_back(Decision{
          op->getLoc(), position++,
          llvm::formatv("{0}: {1} {2}", chunkDirection(op), kind, what.str())
              .str()});
  };

  SmallVector<tile::FusedOp> regions;
  getOperation().walk([&](tile::FusedOp fused) { regions.push_back(fused); });
  for (tile::FusedOp fused : regions) {
    Operation *op = soleOp(fused);
    if (!op)
      continue;
    OpBuilder b(fused);
    if (auto split = dyn_cast<nn::SplitOp>(op)) {
      // Parts of the last dimension are row-strided (so are those of a
      // row-strided source); those of the first, contiguous.
      Value source = fused.getInputs()[0];
      int64_t dim = split.getSplitDim();
      auto sourceType = cast<RankedTensorType>(source.getType());
      bool strided =
          (dim == sourceType.getRank() - 1 && tile::rowCount(source) > 1) ||
          tile::isRowStrided(source);
      std::string why;
      if (strided)
        for (Value result : fused.getResults())
          if (why.empty())
            why = whyNotStridedUses(result);
      SmallVector<Value> parts(fused.getResults());
      if (why.empty() && !keepsAlignment(source, parts, dim))
        why = "a part would not start 16-byte aligned";
      if (!why.empty()) {
        decide(fused, "split", "stays a copy: " + why);
        continue;
      }
      int64_t start = 0;
      for (Value result : fused.getResults()) {
        auto view = tile::ViewOp::create(b, fused.getLoc(), result.getType(),
                                         source, dim, start);
        start += cast<RankedTensorType>(result.getType()).getDimSize(dim);
        result.replaceAllUsesWith(view.getResult());
      }
      decide(fused, "split",
             strided ? "read in place: row-strided views of the packed "
                       "tensor, no kernel"
                     : "read in place: contiguous parts of the packed "
                       "tensor, no kernel");
      fused.erase();
      continue;
    }
    auto concat = dyn_cast<nn::ConcatOp>(op);
    if (!concat)
      continue;
    // Parts of the last dimension are written row-strided by their
    // producers; parts of the first are contiguous blocks, written by any
    // kernel, or arguments the planner lays out side by side.
    int64_t dim = concat.getConcatDim();
    auto type = cast<RankedTensorType>(fused.getResult(0).getType());
    bool strided =
        dim == type.getRank() - 1 && tile::rowCount(fused.getResult(0)) > 1;
    bool arguments = isa<BlockArgument>(fused.getInputs()[0]);
    std::string why;
    for (auto [index, input] : llvm::enumerate(fused.getInputs())) {
      if (!why.empty())
        break;
      auto result = dyn_cast<OpResult>(input);
      if (isa<BlockArgument>(input) != arguments)
        why = "its inputs are not all arguments or all computed";
      else if (arguments && strided)
        why = llvm::formatv("input #{0} is an argument, which is stored "
                            "contiguous",
                            index);
      else if (result && strided && !tile::writesRowStrided(result))
        why = llvm::formatv("input #{0} comes from '{1}', which writes it "
                            "contiguous",
                            index, result.getOwner()->getName());
      else if (result && (isa<tile::AdamWOp, tile::ViewOp>(result.getOwner())))
        why =
            llvm::formatv("input #{0} lives in another tensor's buffer", index);
      else if (tile::concatUser(input) ||
               llvm::count(fused.getInputs(), input) > 1)
        why = llvm::formatv("input #{0} is placed elsewhere too", index);
      else if (strided)
        for (OpOperand &use : input.getUses())
          if (use.getOwner() != fused && !tile::readsRowStrided(use))
            why = llvm::formatv("input #{0} is read contiguous by '{1}'", index,
                                use.getOwner()->getName());
    }
    SmallVector<Value> parts(fused.getInputs());
    if (why.empty() && !keepsAlignment(fused.getResult(0), parts, dim))
      why = "a part would not start 16-byte aligned";
    if (!why.empty()) {
      decide(fused, "concat", "stays a copy: " + why);
      continue;
    }
    auto placed =
        tile::ConcatOp::create(b, fused.getLoc(), type, fused.getInputs(), dim);
    fused.getResult(0).replaceAllUsesWith(placed.getResult());
    decide(fused, "concat",
           arguments ? "in place: its arguments are laid out side by side, "
                       "no kernel"
           : strided ? "written in place: its inputs' kernels write them "
                       "row-strided into the packed tensor, no kernel"
                     : "written in place: its inputs' kernels write them "
                       "into the packed tensor, no kernel");
    fused.erase();
  }
  if (report)
    emitGroupedRemarks("tile-fold-views", "tensor", decisions);
}

} // namespace
