//===- LowerToTile.cpp - nn-lower-to-tile ---------------------------------===//
//
// Lowers nn ops to tile kernels: GEMMs with explicit geometry, attention
// that saves its log-sum-exp, loss/optimizer kernels, and one tile.fused
// region per elementwise or row-wise op.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNDialect.h"
#include "dialects/nn/NNOps.h"
#include "dialects/tile/TileOps.h"
#include "passes/Chunks.h"
#include "passes/Gemms.h"
#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/DialectConversion.h"
#include "llvm/Support/CheckedArithmetic.h"

namespace kiln {
#define GEN_PASS_DEF_NNLOWERTOTILEPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// Checks what the patterns multiply and divide: every tensor of `op` has
/// an element count that fits in int64, and a GEMM's are not empty (its m,
/// n and k must be positive). Shapes must be static.
LogicalResult checkSizes(Operation *op) {
  bool gemm = isa<nn::LinearOp, nn::LinearWeightGradOp, nn::MatmulOp>(op);
  auto check = [&](Value value, StringRef kind,
                   unsigned index) -> LogicalResult {
    auto type = dyn_cast<RankedTensorType>(value.getType());
    if (!type)
      return success();
    if (!type.hasStaticShape())
      return op->emitOpError()
             << "nn-lower-to-tile needs static shapes, got " << type;
    std::optional<int64_t> elements = 1;
    for (int64_t dim : type.getShape())
      if (elements)
        elements = llvm::checkedMul(*elements, dim);
    if (!elements)
      return op->emitOpError()
             << "nn-lower-to-tile: " << kind << " #" << index << " (" << type
             << ") has more than 2^63 elements";
    if (gemm && *elements == 0)
      return op->emitOpError()
             << "nn-lower-to-tile: " << kind << " #" << index << " (" << type
             << ") is empty; a GEMM needs positive m, n and k";
    return success();
  };
  for (OpOperand &operand : op->getOpOperands())
    if (failed(check(operand.get(), "operand", operand.getOperandNumber())))
      return failure();
  for (OpResult result : op->getResults())
    if (failed(check(result, "result", result.getResultNumber())))
      return failure();
  return success();
}

/// `x W^T + b`: one GEMM (passes/Gemms.h).
struct LowerLinear : OpRewritePattern<nn::LinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(nn::LinearOp op,
                                PatternRewriter &rewriter) const override {
    GemmGeometry g = linearGeometry(op);
    auto gemm = tile::GemmOp::create(rewriter, op.getLoc(), op.getType(), g.a,
                                     g.b, op.getBias(), g.batch, g.m, g.n, g.k,
                                     g.transposeA, g.transposeB);
    copyChunk(op, gemm); // before replaceOp, which erases `op`
    rewriter.replaceOp(op, gemm.getResult());
    return success();
  }
};

/// dW summed over tokens: one GEMM whose contraction is the tokens.
struct LowerLinearWeightGrad : OpRewritePattern<nn::LinearWeightGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(nn::LinearWeightGradOp op,
                                PatternRewriter &rewriter) const override {
    GemmGeometry g = weightGradGeometry(op);
    auto gemm = tile::GemmOp::create(rewriter, op.getLoc(), op.getType(), g.a,
                                     g.b, /*bias=*/Value(), g.batch, g.m, g.n,
                                     g.k, g.transposeA, g.transposeB);
    copyChunk(op, gemm); // before replaceOp, which erases `op`
    rewriter.replaceOp(op, gemm.getResult());
    return success();
  }
};

struct LowerMatmul : OpRewritePattern<nn::MatmulOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(nn::MatmulOp op,
                                PatternRewriter &rewriter) const override {
    auto lhs = cast<RankedTensorType>(op.getLhs().getType());
    auto result = cast<RankedTensorType>(op.getType());
    int64_t rank = result.getRank();
    int64_t m = result.getDimSize(rank - 2), n = result.getDimSize(rank - 1);
    int64_t k = op.getTransposeLhs() ? lhs.getDimSize(rank - 2)
                                     : lhs.getDimSize(rank - 1);
    int64_t batch = result.getNumElements() / (m * n);
    auto gemm = tile::GemmOp::create(
        rewriter, op.getLoc(), op.getType(), op.getLhs(), op.getRhs(), Value(),
        batch, m, n, k, op.getTransposeLhs(), op.getTransposeRhs());
    copyChunk(op, gemm); // before replaceOp, which erases `op`
    rewriter.replaceOp(op, gemm.getResult());
    return success();
  }
};

/// The embedding gradient accumulates rows that share an id, so its kernel
/// accumulates into FP32; a BF16 table gets the sum rounded once by a cast,
/// as the host's FP32 accumulation does.
struct LowerEmbeddingGrad : OpRewritePattern<nn::EmbeddingGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(nn::EmbeddingGradOp op,
                                PatternRewriter &rewriter) const override {
    auto type = cast<RankedTensorType>(op.getType());
    auto f32Type = type.clone(rewriter.getF32Type());
    auto grad = tile::EmbeddingGradOp::create(rewriter, op.getLoc(), f32Type,
                                              op.getGrad(), op.getIds());
    copyChunk(op, grad);
    if (f32Type == type) {
      rewriter.replaceOp(op, grad.getResult());
      return success();
    }
    auto cast = nn::CastOp::create(rewriter, op.getLoc(), type, grad);
    copyChunk(op, cast);
    rewriter.replaceOp(op, cast.getResult());
    return success();
  }
};

/// One-to-one lowering of an nn op to the tile kernel with the same
/// operands and attributes.
template <typename From, typename To>
struct LowerOneToOne : OpRewritePattern<From> {
  using OpRewritePattern<From>::OpRewritePattern;
  LogicalResult matchAndRewrite(From op,
                                PatternRewriter &rewriter) const override {
    auto lowered = To::create(rewriter, op.getLoc(), op->getResultTypes(),
                              op->getOperands(), op->getAttrs());
    rewriter.replaceOp(op, lowered->getResults());
    return success();
  }
};

/// Wraps an elementwise or row-wise op in its own tile.fused region.
struct WrapInFused : RewritePattern {
  WrapInFused(MLIRContext *context)
      : RewritePattern(MatchAnyOpTypeTag(), /*benefit=*/1, context) {}
  LogicalResult matchAndRewrite(Operation *op,
                                PatternRewriter &rewriter) const override {
    if (!tile::isFusible(op) || op->getParentOfType<tile::FusedOp>())
      return rewriter.notifyMatchFailure(op, "not a fusible op at top level");
    auto fused = tile::FusedOp::create(rewriter, op->getLoc(),
                                       op->getResultTypes(), op->getOperands());
    copyChunk(op, fused);
    Block &body = fused.getBody().front();
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointToStart(&body);
    IRMapping mapping;
    mapping.map(op->getOperands(), body.getArguments());
    Operation *inner = rewriter.clone(*op, mapping);
    inner->removeAttr(kChunkAttr);
    tile::YieldOp::create(rewriter, op->getLoc(), inner->getResults());
    rewriter.replaceOp(op, fused.getResults());
    return success();
  }
};

struct NNLowerToTilePass
    : kiln::impl::NNLowerToTilePassBase<NNLowerToTilePass> {
  void runOnOperation() final {
    ModuleOp module = getOperation();
    bool dynamic = false;
    module.walk([&](Operation *op) {
      if (op->getDialect() && op->getDialect()->getNamespace() == "nn")
        for (Type type : op->getOperandTypes())
          if (auto tensor = dyn_cast<RankedTensorType>(type);
              tensor && !tensor.hasStaticShape()) {
            op->emitOpError("nn-lower-to-tile needs static shapes, got ")
                << tensor;
            dynamic = true;
          }
    });
    if (dynamic)
      return signalPassFailure();

    bool badSize = false;
    module.walk([&](Operation *op) {
      if (op->getDialect() && op->getDialect()->getNamespace() == "nn" &&
          failed(checkSizes(op)))
        badSize = true;
    });
    if (badSize)
      return signalPassFailure();

    // Attention has its own pass, which picks tile sizes for a target.
    WalkResult attention = module.walk([&](Operation *op) {
      if (isa<nn::AttentionOp, nn::AttentionGradOp>(op)) {
        op->emitOpError("is lowered by nn-tile-attention, which must run "
                        "before nn-lower-to-tile");
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (attention.wasInterrupted())
      return signalPassFailure();

    // Every nn op becomes a kernel or moves inside one; an nn op that is
    // left at the top level has no lowering and fails the conversion at its
    // location.
    ConversionTarget target(getContext());
    target.addLegalDialect<tile::TileDialect>();
    target.addDynamicallyLegalDialect<nn::NNDialect>([](Operation *op) {
      return static_cast<bool>(op->getParentOfType<tile::FusedOp>());
    });

    RewritePatternSet patterns(&getContext());
    patterns.add<
        LowerLinear, LowerLinearWeightGrad, LowerMatmul, WrapInFused,
        LowerOneToOne<nn::CrossEntropyOp, tile::CrossEntropyOp>,
        LowerOneToOne<nn::RoPETableOp, tile::RoPETableOp>,
        LowerOneToOne<nn::CrossEntropyGradOp, tile::CrossEntropyGradOp>,
        LowerEmbeddingGrad, LowerOneToOne<nn::GlobalNormOp, tile::GlobalNormOp>,
        LowerOneToOne<nn::AdamWUpdateOp, tile::AdamWOp>,
        LowerOneToOne<nn::GradAccumulateOp, tile::GradAccumulateOp>>(
        &getContext());
    if (failed(applyPartialConversion(module, target, std::move(patterns))))
      return signalPassFailure();
  }
};

} // namespace
