//===- TileAttention.cpp - nn-tile-attention ------------------------------===//
//
// Lowers attention to the FlashAttention-2 kernels with tile sizes for the
// target, from the tuning database when it has them, else the cost model.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"
#include "dialects/tile/TileOps.h"
#include "passes/Chunks.h"
#include "passes/CostModel.h"
#include "passes/Passes.h"
#include "passes/Report.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>

namespace kiln {
#define GEN_PASS_DEF_NNTILEATTENTIONPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// What the patterns share: the target, the tuning database and the report.
struct TilePolicy {
  TilePolicy(Target target, std::string tuningDb, bool report)
      : target(std::move(target)), tuningDb(std::move(tuningDb)),
        report(report) {}

  Target target;
  std::string tuningDb;
  bool report = false;
  bool failed = false;
  llvm::DenseMap<Operation *, unsigned> positions; // of the attentions
  SmallVector<Decision> decisions;

  /// Tile sizes for an attention on `query`, recorded for the report when
  /// asked.
  AttentionTiles choose(Operation *op, Value query, int64_t numHeads,
                        int64_t numKvHeads, bool causal, bool backward) {
    auto type = cast<RankedTensorType>(query.getType());
    AttentionShape shape{type.getDimSize(0),
                         type.getDimSize(1),
                         numHeads,
                         numKvHeads,
                         type.getDimSize(2) / numHeads,
                         type.getElementTypeBitWidth() / 8,
                         causal};
    std::optional<AttentionTiles> tiles;
    if (!tuningDb.empty()) {
      auto tuned = lookupTunedAttention(tuningDb, target, shape);
      if (!tuned) {
        op->emitError() << "nn-tile-attention: "
                        << llvm::toString(tuned.takeError());
        failed = true;
      } else {
        tiles = *tuned;
      }
    }
    if (!tiles)
      tiles = chooseAttentionTiles(target, shape, backward);
    if (report) {
      double flops = attentionFlops(shape, backward);
      double seconds =
          predictSeconds(target, flops, attentionBytes(shape, backward));
      decisions.push_back(
          {op->getLoc(), positions.lookup(op),
           llvm::formatv(
               "{0}: batch {1}, seq {2}, {3} heads ({4} kv), head_dim "
               "{5}{6}: block_q {7}, block_k {8}, {9} warps, {10} stages — "
               "{11}; predicted {12:f2} GFLOP in {13:f3} ms on {14}",
               backward ? "backward" : "forward", shape.batch, shape.seqLen,
               shape.numHeads, shape.numKvHeads, shape.headDim,
               causal ? ", causal" : "", tiles->blockQ, tiles->blockK,
               tiles->numWarps, tiles->numStages, tiles->reason, flops / 1e9,
               seconds * 1e3, target.name)
               .str()});
    }
    return *tiles;
  }
};

RankedTensorType lseType(Value query, int64_t numHeads) {
  auto type = cast<RankedTensorType>(query.getType());
  return RankedTensorType::get(
      {type.getDimSize(0), numHeads, type.getDimSize(1)},
      Float32Type::get(query.getContext()));
}

/// Builds the forward kernel of an attention (of nn.attention, or to
/// recompute the statistics an nn.attention_grad needs).
template <typename Attention>
tile::FlashAttentionFwdOp buildForward(PatternRewriter &rewriter, Attention op,
                                       TilePolicy &policy) {
  Builder &b = rewriter;
  AttentionTiles tiles =
      policy.choose(op, op.getQuery(), op.getNumHeads(), op.getNumKvHeads(),
                    op.getCausal(), /*backward=*/false);
  auto forward = tile::FlashAttentionFwdOp::create(
      rewriter, op.getLoc(), op.getQuery().getType(),
      lseType(op.getQuery(), op.getNumHeads()), op.getQuery(), op.getKey(),
      op.getValue(), op.getCuSeqlens(), op.getRope(), op.getNumHeadsAttr(),
      op.getNumKvHeadsAttr(), op.getCausalAttr(), op.getScaleAttr(),
      b.getI64IntegerAttr(tiles.blockQ), b.getI64IntegerAttr(tiles.blockK),
      b.getI64IntegerAttr(tiles.numWarps),
      b.getI64IntegerAttr(tiles.numStages));
  copyChunk(op, forward);
  return forward;
}

struct TileAttention : OpRewritePattern<nn::AttentionOp> {
  TileAttention(MLIRContext *context, TilePolicy &policy)
      : OpRewritePattern(context), policy(policy) {}
  LogicalResult matchAndRewrite(nn::AttentionOp op,
                                PatternRewriter &rewriter) const override {
    rewriter.replaceOp(op, buildForward(rewriter, op, policy).getResult());
    return success();
  }
  TilePolicy &policy;
};

/// The forward kernel of the same attention, whose output and log-sum-exp
/// the backward kernel reuses instead of recomputing them.
tile::FlashAttentionFwdOp findForward(nn::AttentionGradOp op) {
  for (Operation *user : op.getQuery().getUsers()) {
    auto forward = dyn_cast<tile::FlashAttentionFwdOp>(user);
    if (forward && forward.getKey() == op.getKey() &&
        forward.getValue() == op.getValue() &&
        forward.getCuSeqlens() == op.getCuSeqlens() &&
        forward.getRope() == op.getRope() &&
        forward.getNumHeads() == op.getNumHeads() &&
        forward.getNumKvHeads() == op.getNumKvHeads() &&
        forward.getCausal() == op.getCausal() &&
        forward.getScaleAttr() == op.getScaleAttr())
      return forward;
  }
  return {};
}

struct TileAttentionGrad : OpRewritePattern<nn::AttentionGradOp> {
  TileAttentionGrad(MLIRContext *context, TilePolicy &policy)
      : OpRewritePattern(context), policy(policy) {}
  LogicalResult matchAndRewrite(nn::AttentionGradOp op,
                                PatternRewriter &rewriter) const override {
    tile::FlashAttentionFwdOp forward = findForward(op);
    if (!forward)
      forward = buildForward(rewriter, op, policy);
    AttentionTiles tiles =
        policy.choose(op, op.getQuery(), op.getNumHeads(), op.getNumKvHeads(),
                      op.getCausal(), /*backward=*/true);
    Builder &b = rewriter;
    auto grad = tile::FlashAttentionBwdOp::create(
        rewriter, op.getLoc(), op.getResultTypes(), op.getGrad(), op.getQuery(),
        op.getKey(), op.getValue(), forward.getResult(), forward.getLse(),
        op.getCuSeqlens(), op.getRope(), op.getNumHeadsAttr(),
        op.getNumKvHeadsAttr(), op.getCausalAttr(), op.getScaleAttr(),
        b.getI64IntegerAttr(tiles.blockQ), b.getI64IntegerAttr(tiles.blockK),
        b.getI64IntegerAttr(tiles.numWarps),
        b.getI64IntegerAttr(tiles.numStages));
    // Tag before replacing: replaceOp erases `op`.
    copyChunk(op, grad);
    rewriter.replaceOp(op, grad.getResults());
    return success();
  }
  TilePolicy &policy;
};

struct NNTileAttentionPass
    : kiln::impl::NNTileAttentionPassBase<NNTileAttentionPass> {
  using Base::Base;
  void runOnOperation() final {
    llvm::Expected<Target> resolved = lookupTarget(target);
    if (!resolved) {
      getOperation().emitError()
          << "nn-tile-attention: " << llvm::toString(resolved.takeError());
      return signalPassFailure();
    }
    TilePolicy policy(*resolved, tuningDb, report);
    bool dynamic = false;
    getOperation().walk([&](Operation *op) {
      if (!isa<nn::AttentionOp, nn::AttentionGradOp>(op))
        return;
      for (Type type : op->getOperandTypes())
        if (!cast<RankedTensorType>(type).hasStaticShape()) {
          op->emitOpError("nn-tile-attention needs static shapes, got ")
              << type;
          dynamic = true;
        }
    });
    if (dynamic)
      return signalPassFailure();
    // The report lists decisions in program order, whatever order the
    // rewrites take.
    getOperation().walk([&](Operation *op) {
      if (isa<nn::AttentionOp, nn::AttentionGradOp>(op))
        policy.positions.try_emplace(op, policy.positions.size());
    });

    GreedyRewriteConfig config;
    config.setRegionSimplificationLevel(GreedySimplifyRegionLevel::Disabled);
    config.enableFolding(false);
    // Forward attention first, so that every backward kernel finds the
    // forward kernel whose statistics it reuses.
    RewritePatternSet forward(&getContext());
    forward.add<TileAttention>(&getContext(), policy);
    RewritePatternSet backward(&getContext());
    backward.add<TileAttentionGrad>(&getContext(), policy);
    if (failed(applyPatternsGreedily(getOperation(), std::move(forward),
                                     config)) ||
        failed(applyPatternsGreedily(getOperation(), std::move(backward),
                                     config)) ||
        policy.failed)
      return signalPassFailure();
    emitGroupedRemarks("nn-tile-attention", "attention", policy.decisions);
  }
};

} // namespace
