//===- Fuse.cpp - nn-fuse -------------------------------------------------===//
//
// Groups row-local nn ops into tile.fused regions, one kernel each: an op
// joins the group of one of its operands' producers when the merged group
// is still one pass over rows and contracting it leaves the dataflow
// acyclic; the block is then re-sorted so that every region follows its
// inputs and precedes its users.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"
#include "dialects/tile/TileOps.h"
#include "passes/Chunks.h"
#include "passes/ComputeCopies.h"
#include "passes/Gemms.h"
#include "passes/Passes.h"
#include "passes/Report.h"

#include "mlir/Analysis/TopologicalSortUtils.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/TypeUtilities.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/Support/FormatVariadic.h"

#include <deque>
#include <tuple>

namespace kiln {
#define GEN_PASS_DEF_NNFUSEPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// The option that allows a merge.
enum class Group { ResidualNorm, Rope, Elementwise };

bool isNorm(Operation *op) {
  return isa<nn::RMSNormOp, nn::LayerNormOp, nn::RMSNormGradOp,
             nn::LayerNormGradOp>(op);
}

/// The groups the pass options allow, and whether to report.
struct Policy {
  bool residualNorm, rope, elementwise, optimizer, epilogue, report;
};

/// The optimizer group: the AdamW updates that share their scalars and
/// hyperparameters become one multi-tensor tile.adamw each, at the last of
/// them (every operand is defined by then: the parameters and moments are
/// arguments, the gradients precede the updates).
void groupOptimizer(Block &block, bool computeCopies,
                    SmallVectorImpl<Decision> &decisions, unsigned &position,
                    bool report) {
  using Key = std::tuple<Value, Value, Value, double, double, double, double,
                         double, Attribute, Attribute>;
  // Few groups (two in practice): a linear search keeps program order.
  SmallVector<std::pair<Key, SmallVector<nn::AdamWUpdateOp>>> groups;
  for (auto update : block.getOps<nn::AdamWUpdateOp>()) {
    Key key{update.getLr(),
            update.getStep(),
            update.getGradNorm(),
            update.getBeta1().convertToDouble(),
            update.getBeta2().convertToDouble(),
            update.getEpsilon().convertToDouble(),
            update.getWeightDecay().convertToDouble(),
            update.getMaxGradNorm().convertToDouble(),
            update->getAttr(kChunkAttr),
            update.getShardsAttr()};
    auto it = llvm::find_if(
        groups, [&](const auto &group) { return group.first == key; });
    if (it == groups.end())
      it = groups.insert(groups.end(), {key, {}});
    it->second.push_back(update);
  }
  for (auto &[key, updates] : groups) {
    if (updates.size() < 2)
      continue;
    nn::AdamWUpdateOp last = updates.back();
    SmallVector<Value> tensors;
    SmallVector<Type> types;
    for (auto get :
         {&nn::AdamWUpdateOp::getParam, &nn::AdamWUpdateOp::getGrad,
          &nn::AdamWUpdateOp::getExpAvg, &nn::AdamWUpdateOp::getExpAvgSq})
      for (nn::AdamWUpdateOp update : updates)
        tensors.push_back((update.*get)());
    for (unsigned result = 0; result < 3; ++result)
      for (nn::AdamWUpdateOp update : updates)
        types.push_back(update->getResult(result).getType());
    OpBuilder builder(last);
    SmallVector<Location> locations;
    for (nn::AdamWUpdateOp update : updates)
      locations.push_back(update.getLoc());
    // BF16 compute copies: when every parameter of the group is cast to
    // BF16 once for the step's GEMMs, the update writes that copy (rounded
    // from the new master) and the next step reads it: a new argument and
    // result of the step each, no cast kernel.
    auto func = dyn_cast<func::FuncOp>(block.getParentOp());
    SmallVector<nn::CastOp> casts;
    for (nn::AdamWUpdateOp update : updates) {
      auto param = dyn_cast<BlockArgument>(update.getParam());
      nn::CastOp rounding;
      unsigned count = 0;
      if (param && func)
        for (Operation *user : param.getUsers())
          if (auto c = dyn_cast<nn::CastOp>(user);
              c && getElementTypeOrSelf(c.getType()).isBF16()) {
            rounding = c;
            ++count;
          }
      if (count != 1 || !func.getArgAttrOfType<StringAttr>(param.getArgNumber(),
                                                           attrs::kParam))
        break;
      casts.push_back(rounding);
    }
    // (Under ZeRO-1 a rank updates only its shard of each master: the casts
    // of the gathered parameters stay in the step.)
    bool sharded = last.getShards().value_or(1) > 1;
    bool copies = computeCopies && !sharded && casts.size() == updates.size();
    SmallVector<Value> copyArgs;
    if (copies) {
      for (auto [update, rounding] : llvm::zip_equal(updates, casts)) {
        auto param = cast<BlockArgument>(update.getParam());
        StringAttr name = func.getArgAttrOfType<StringAttr>(
            param.getArgNumber(), attrs::kParam);
        Value copy =
            replaceCastByComputeCopy(func, rounding, name, param.getLoc());
        copyArgs.push_back(copy);
        tensors.push_back(copy);
      }
      for (Value copy : copyArgs)
        types.push_back(copy.getType());
    }
    tensors.append({last.getLr(), last.getStep(), last.getGradNorm()});
    auto multi = tile::AdamWOp::create(
        builder, builder.getFusedLoc(locations), types, tensors,
        last.getBeta1Attr(), last.getBeta2Attr(), last.getEpsilonAttr(),
        last.getWeightDecayAttr(), last.getMaxGradNormAttr(),
        copies ? builder.getUnitAttr() : UnitAttr(), last.getShardsAttr());
    copyChunk(last, multi);
    unsigned n = updates.size();
    if (copies) {
      for (unsigned i = 0; i < n; ++i)
        returnComputeCopy(func, multi.getNewComputeCopy(i),
                          func.getArgAttrOfType<StringAttr>(
                              cast<BlockArgument>(copyArgs[i]).getArgNumber(),
                              attrs::kComputeCopy));
    }
    for (auto [i, update] : llvm::enumerate(updates)) {
      for (unsigned result = 0; result < 3; ++result)
        update->getResult(result).replaceAllUsesWith(
            multi.getUpdated()[result * n + i]);
    }
    for (nn::AdamWUpdateOp update : updates)
      update.erase();
    if (report)
      decisions.push_back(Decision{
          multi.getLoc(), position++,
          llvm::formatv("optimizer: {0} parameters with weight decay {1} in "
                        "one multi-tensor AdamW (optimizer){2}",
                        n, std::get<6>(key),
                        copies ? ", which writes their BF16 compute copies: "
                                 "no cast kernels"
                               : "")
              .str()});
  }
}

/// The epilogue group: a gradient reduction whose one use widens it to FP32
/// is written in FP32 (its kernel accumulates in FP32), each recorded for
/// the report.
void widenGradients(Block &block, SmallVectorImpl<Decision> &decisions,
                    unsigned &position, bool report) {
  auto isReduction = [](Operation *op) {
    return isa_and_nonnull<nn::LinearWeightGradOp, nn::ColumnSumOp,
                           nn::EmbeddingGradOp, nn::RMSNormWeightGradOp,
                           nn::LayerNormWeightGradOp>(op);
  };
  auto widens = [](Operation *user, Operation *producer) {
    auto cast = dyn_cast<nn::CastOp>(user);
    return cast && getElementTypeOrSelf(cast.getType()).isF32() &&
           producer->getAttr(kChunkAttr) == cast->getAttr(kChunkAttr);
  };
  // A reduction whose one use widens it; or whose one use splits it into
  // the gradients of parameters packed together (nn-pack-projections),
  // each of which is only widened.
  SmallVector<Operation *> producers;
  for (Operation &op : block) {
    if (!isReduction(&op) || !op.hasOneUse())
      continue;
    Operation *user = *op.getUsers().begin();
    if (widens(user, &op)) {
      producers.push_back(&op);
      continue;
    }
    auto split = dyn_cast<nn::SplitOp>(user);
    if (split && split.getSplitDim() == 0 &&
        split->getAttr(kChunkAttr) == op.getAttr(kChunkAttr) &&
        llvm::all_of(split.getResults(), [&](Value part) {
          return part.hasOneUse() && widens(*part.getUsers().begin(), &op);
        }))
      producers.push_back(&op);
  }
  for (Operation *producer : producers) {
    auto f32 = llvm::cast<RankedTensorType>(producer->getResult(0).getType())
                   .clone(Float32Type::get(producer->getContext()));
    Operation *user = *producer->getUsers().begin();
    producer->getResult(0).setType(f32);
    SmallVector<nn::CastOp> casts;
    if (auto widen = dyn_cast<nn::CastOp>(user)) {
      casts.push_back(widen);
      widen.getResult().replaceAllUsesWith(producer->getResult(0));
    } else {
      for (Value part : user->getResults()) {
        auto widen = llvm::cast<nn::CastOp>(*part.getUsers().begin());
        part.setType(widen.getType());
        widen.getResult().replaceAllUsesWith(part);
        casts.push_back(widen);
      }
    }
    if (report)
      decisions.push_back(Decision{
          producer->getLoc(), position++,
          llvm::formatv("backward: {0} writes its FP32 accumulator (epilogue): "
                        "no cast kernel, no BF16 rounding of the gradient",
                        producer->getName().stripDialect())
              .str()});
    for (nn::CastOp cast : casts)
      cast.erase();
  }
}

//===----------------------------------------------------------------------===//
// gemm-epilogue
//===----------------------------------------------------------------------===//

/// Where one op may stand for both `a` and `b` of one block: at the first
/// of them when the second's operands are defined by then, else at the
/// second when nothing reads the first before it; null if neither.
Operation *jointPlace(Operation *a, Operation *b) {
  Operation *first = a, *second = b;
  if (second->isBeforeInBlock(first))
    std::swap(first, second);
  Block &block = *first->getBlock();
  bool operandsReady = llvm::all_of(second->getOperands(), [&](Value v) {
    Operation *def = v.getDefiningOp();
    return !def || def->getBlock() != &block || def->isBeforeInBlock(first);
  });
  if (operandsReady)
    return first;
  bool readLater = llvm::all_of(first->getUsers(), [&](Operation *user) {
    Operation *ancestor = block.findAncestorOpInBlock(*user);
    return ancestor && second->isBeforeInBlock(ancestor);
  });
  return readLater ? second : nullptr;
}

/// "forward" or "backward" for the report, from a chunk tag (the forward
/// function has none: all of it is forward).
StringRef directionOf(Attribute chunk) {
  auto tag = dyn_cast_or_null<StringAttr>(chunk);
  return !tag || tag.getValue() == "F" ? "forward" : "backward";
}

bool hasStaticShapes(Operation *op) {
  auto isStatic = [](Type type) {
    auto tensor = dyn_cast<RankedTensorType>(type);
    return !tensor || tensor.hasStaticShape();
  };
  return llvm::all_of(op->getOperandTypes(), isStatic) &&
         llvm::all_of(op->getResultTypes(), isStatic);
}

/// Whether `a` and `b` may become one kernel: one block, one chunk, static
/// shapes.
bool sameKernelPlace(Operation *a, Operation *b) {
  return a->getBlock() == b->getBlock() &&
         a->getAttr(kChunkAttr) == b->getAttr(kChunkAttr) &&
         hasStaticShapes(a) && hasStaticShapes(b);
}

/// cuBLASLt's rule for the pre-activation (its aux matrix, [m, n]): a
/// leading dimension divisible by 8 elements.
constexpr int64_t kAuxAlignment = 8;
constexpr const char *kAuxRefusal =
    "{0}: {1} stays a kernel of its own (gemm-epilogue): the GEMM's {2} "
    "columns are not a multiple of 8, which cuBLASLt's GELU epilogues need";

/// The gemm-epilogue group: what cuBLASLt computes in a GEMM's epilogue
/// (and the host right after its GEMM, in the same step) instead of a
/// kernel of its own, each recorded for the report:
/// - a linear layer's GELU (tanh) with its bias: `gelu_tanh`, which also
///   writes the pre-activation when the backward reads it;
/// - GELU's input gradient of an input-gradient GEMM's output:
///   `dgelu_tanh`;
/// - a bias gradient (`nn.column_sum` of an output gradient) with the
///   weight-gradient GEMM that reads the same gradient: `bgrad_a/b`.
void fuseGemmEpilogues(Block &block, SmallVectorImpl<Decision> &decisions,
                       unsigned &position, bool report) {
  auto record = [&](Location loc, const Twine &text) {
    if (report)
      decisions.push_back(Decision{loc, position++, text.str()});
  };
  for (auto gelu : llvm::make_early_inc_range(block.getOps<nn::GeluOp>())) {
    auto linear = gelu.getInput().getDefiningOp<nn::LinearOp>();
    if (!linear || !sameKernelPlace(linear, gelu))
      continue;
    if (gelu.getApproximate() != nn::GeluApproximation::tanh) {
      record(gelu.getLoc(),
             "forward: the exact GELU stays a kernel of its own "
             "(gemm-epilogue): cuBLASLt's GELU epilogue is the tanh "
             "approximation");
      continue;
    }
    GemmGeometry g = linearGeometry(linear);
    if (g.n % kAuxAlignment != 0) {
      record(gelu.getLoc(), llvm::formatv(kAuxRefusal, "forward", "gelu", g.n));
      continue;
    }
    Value pre = linear.getResult();
    bool keepPre = !pre.hasOneUse();
    OpBuilder builder(linear);
    auto gemm = tile::GemmOp::create(
        builder, builder.getFusedLoc({linear.getLoc(), gelu.getLoc()}),
        gelu.getType(), keepPre ? TypeRange(pre.getType()) : TypeRange(), g.a,
        g.b, linear.getBias(), Value(), g.batch, g.m, g.n, g.k, g.transposeA,
        g.transposeB, tile::GemmOp::kGeluTanh);
    copyChunk(linear, gemm);
    record(linear.getLoc(),
           llvm::formatv("{0}: linear{1} + gelu as one GEMM (gemm-epilogue "
                         "gelu_tanh){2}",
                         directionOf(linear->getAttr(kChunkAttr)),
                         linear.getBias() ? " + bias" : "",
                         keepPre ? ", which also writes the pre-activation "
                                   "the backward reads"
                                 : ""));
    gelu.getResult().replaceAllUsesWith(gemm.getResult());
    gelu.erase();
    if (keepPre)
      pre.replaceAllUsesWith(gemm.getPreActivation());
    linear.erase();
  }

  for (auto grad : llvm::make_early_inc_range(block.getOps<nn::GeluGradOp>())) {
    auto linear = grad.getGrad().getDefiningOp<nn::LinearOp>();
    if (!linear || linear.getBias() || !sameKernelPlace(linear, grad) ||
        grad.getApproximate() != nn::GeluApproximation::tanh)
      continue;
    if (!linear.getResult().hasOneUse()) {
      record(grad.getLoc(),
             "backward: gelu_grad stays a kernel of its own (gemm-epilogue): "
             "the GEMM's output it scales has another consumer");
      continue;
    }
    Value aux = grad.getInput();
    if (getElementTypeOrSelf(aux.getType()) !=
        getElementTypeOrSelf(linear.getInput().getType()))
      continue;
    GemmGeometry g = linearGeometry(linear);
    if (g.n % kAuxAlignment != 0) {
      record(grad.getLoc(),
             llvm::formatv(kAuxRefusal, "backward", "gelu_grad", g.n));
      continue;
    }
    OpBuilder builder(grad);
    auto gemm = tile::GemmOp::create(
        builder, builder.getFusedLoc({linear.getLoc(), grad.getLoc()}),
        grad.getType(), TypeRange(), g.a, g.b, Value(), aux, g.batch, g.m, g.n,
        g.k, g.transposeA, g.transposeB, tile::GemmOp::kDgeluTanh);
    copyChunk(grad, gemm);
    record(grad.getLoc(), "backward: input-gradient GEMM + gelu_grad as one "
                          "GEMM (gemm-epilogue dgelu_tanh)");
    grad.getResult().replaceAllUsesWith(gemm.getResult());
    grad.erase();
    linear.erase();
  }

  for (auto sum : llvm::make_early_inc_range(block.getOps<nn::ColumnSumOp>())) {
    Value dy = sum.getInput();
    nn::LinearWeightGradOp weightGrad;
    for (Operation *user : dy.getUsers())
      if (auto candidate = dyn_cast<nn::LinearWeightGradOp>(user);
          candidate && candidate.getGrad() == dy &&
          sameKernelPlace(candidate, sum) &&
          getElementTypeOrSelf(candidate.getType()) ==
              getElementTypeOrSelf(sum.getType())) {
        weightGrad = candidate;
        break;
      }
    if (!weightGrad)
      continue;
    Operation *at = jointPlace(sum, weightGrad);
    if (!at) {
      record(sum.getLoc(),
             "backward: the bias gradient stays a kernel of its own "
             "(gemm-epilogue): the weight gradient's input comes after it "
             "and its result is read before the weight gradient");
      continue;
    }
    OpBuilder builder(at);
    GemmGeometry g = weightGradGeometry(weightGrad);
    // The gradient is the GEMM's A ([tokens, out]: transpose_a) for a
    // weight stored [out, in], its B for one stored [in, out].
    bool fromA = g.a == dy;
    auto gemm = tile::GemmOp::create(
        builder, builder.getFusedLoc({weightGrad.getLoc(), sum.getLoc()}),
        weightGrad.getType(), TypeRange(sum.getType()), g.a, g.b, Value(),
        Value(), g.batch, g.m, g.n, g.k, g.transposeA, g.transposeB,
        fromA ? tile::GemmOp::kBgradA : tile::GemmOp::kBgradB);
    copyChunk(weightGrad, gemm);
    record(sum.getLoc(),
           llvm::formatv("backward: linear_weight_grad + the bias gradient "
                         "(column_sum) as one GEMM (gemm-epilogue {0})",
                         fromA ? "bgrad_a" : "bgrad_b"));
    weightGrad.getResult().replaceAllUsesWith(gemm.getResult());
    sum.getResult().replaceAllUsesWith(gemm.getBiasGrad());
    weightGrad.erase();
    sum.erase();
  }
}

//===----------------------------------------------------------------------===//
// norm-param-grads
//===----------------------------------------------------------------------===//

/// The norm-param-grads group: a LayerNorm's weight gradient and its bias
/// gradient (`nn.column_sum` of the same output gradient) as one tile.fused
/// region, one kernel that reads the gradient once for both column sums.
void fuseNormParamGrads(Block &block, SmallVectorImpl<Decision> &decisions,
                        unsigned &position, bool report) {
  for (auto weightGrad :
       llvm::make_early_inc_range(block.getOps<nn::LayerNormWeightGradOp>())) {
    Value dy = weightGrad.getGrad();
    nn::ColumnSumOp sum;
    for (Operation *user : dy.getUsers())
      if (auto candidate = dyn_cast<nn::ColumnSumOp>(user);
          candidate && candidate->getBlock() == &block &&
          candidate->getAttr(kChunkAttr) == weightGrad->getAttr(kChunkAttr)) {
        sum = candidate;
        break;
      }
    if (!sum)
      continue;
    Operation *at = jointPlace(weightGrad, sum);
    if (!at) {
      if (report)
        decisions.push_back(Decision{
            weightGrad.getLoc(), position++,
            "backward: the LayerNorm's weight and bias gradients stay apart "
            "(norm-param-grads): neither can stand where the other is"});
      continue;
    }
    OpBuilder builder(at);
    Location loc = builder.getFusedLoc({weightGrad.getLoc(), sum.getLoc()});
    auto fused = tile::FusedOp::create(
        builder, loc, TypeRange{weightGrad.getType(), sum.getType()},
        ValueRange{dy, weightGrad.getInput()});
    copyChunk(weightGrad, fused);
    Block &body = fused.getBody().front();
    IRMapping mapping;
    mapping.map(dy, body.getArgument(0));
    mapping.map(weightGrad.getInput(), body.getArgument(1));
    OpBuilder inner = OpBuilder::atBlockBegin(&body);
    Operation *w = inner.clone(*weightGrad, mapping);
    Operation *b = inner.clone(*sum, mapping);
    w->removeAttr(kChunkAttr);
    b->removeAttr(kChunkAttr);
    tile::YieldOp::create(inner, loc,
                          ValueRange{w->getResult(0), b->getResult(0)});
    if (report)
      decisions.push_back(Decision{
          weightGrad.getLoc(), position++,
          "backward: layer_norm_weight_grad + the bias gradient (column_sum) "
          "as one kernel (norm-param-grads): the gradient read once"});
    weightGrad.getResult().replaceAllUsesWith(fused.getResult(0));
    sum.getResult().replaceAllUsesWith(fused.getResult(1));
    weightGrad.erase();
    sum.erase();
  }
}

//===----------------------------------------------------------------------===//
// rope-attention
//===----------------------------------------------------------------------===//

/// A forward RoPE of `value` with `heads` heads, if that is what defines it.
nn::RoPEOp forwardRope(Value value, uint64_t heads) {
  auto rope = value.getDefiningOp<nn::RoPEOp>();
  if (!rope || rope.getInverse() || rope.getNumHeads() != heads)
    return {};
  return rope;
}

/// The inverse of `forward` applied to `grad` and nothing else reading
/// `grad`: the RoPE the attention's store takes over.
nn::RoPEOp inverseRope(Value grad, nn::RoPEOp forward) {
  if (!grad.hasOneUse())
    return {};
  auto rope = dyn_cast<nn::RoPEOp>(*grad.getUsers().begin());
  if (!rope || !rope.getInverse() ||
      rope.getNumHeads() != forward.getNumHeads() ||
      rope.getPositions() != forward.getPositions() ||
      rope.getTheta() != forward.getTheta())
    return {};
  return rope;
}

/// The rope-attention group: the RoPE of Q and K moves into the attention
/// that reads them (rotated on load from one nn.rope_table per step) and the
/// inverse RoPE of dq and dk into its gradient (rotated back on store). The
/// table is built once, at the top of the step, for every attention with
/// the same positions, angle base and shape.
void fuseRopeAttention(Block &block, SmallVectorImpl<Decision> &decisions,
                       unsigned &position, bool report) {
  auto record = [&](Location loc, const Twine &text) {
    if (report)
      decisions.push_back(Decision{loc, position++, text.str()});
  };
  using TableKey = std::tuple<Value, double, Type>;
  SmallVector<std::pair<TableKey, Value>> tables;
  for (auto attention :
       llvm::make_early_inc_range(block.getOps<nn::AttentionOp>())) {
    if (attention.getRope())
      continue;
    nn::RoPEOp q = forwardRope(attention.getQuery(), attention.getNumHeads());
    nn::RoPEOp k = forwardRope(attention.getKey(), attention.getNumKvHeads());
    if (!q || !k)
      continue;
    if (q.getPositions() != k.getPositions() || q.getTheta() != k.getTheta() ||
        !hasStaticShapes(attention)) {
      record(attention.getLoc(),
             "forward: RoPE stays a kernel of its own (rope-attention): Q and "
             "K rotate by different positions or angles, or the shapes are "
             "dynamic");
      continue;
    }
    // Everything that reads the rotated Q and K must take the table: the
    // attention and the gradients of the same attention, whose dq and dk
    // the inverse RoPE alone reads.
    SmallVector<std::tuple<nn::AttentionGradOp, nn::RoPEOp, nn::RoPEOp>> grads;
    bool fusible = true;
    for (Value rotated : {q.getResult(), k.getResult()})
      for (Operation *user : rotated.getUsers()) {
        if (user == attention)
          continue;
        auto grad = dyn_cast<nn::AttentionGradOp>(user);
        if (!grad || grad.getQuery() != q.getResult() ||
            grad.getKey() != k.getResult() || grad.getRope() ||
            grad.getValue() != attention.getValue() ||
            grad.getCuSeqlens() != attention.getCuSeqlens()) {
          fusible = false;
          continue;
        }
        if (llvm::any_of(grads,
                         [&](auto &g) { return std::get<0>(g) == grad; }))
          continue;
        nn::RoPEOp dq = inverseRope(grad.getQueryGrad(), q);
        nn::RoPEOp dk = inverseRope(grad.getKeyGrad(), k);
        if (!dq || !dk)
          fusible = false;
        else
          grads.push_back({grad, dq, dk});
      }
    if (!fusible) {
      record(attention.getLoc(),
             "forward: RoPE stays a kernel of its own (rope-attention): the "
             "rotated Q or K is read by more than this attention and its "
             "gradient, or a gradient is not rotated back alone");
      continue;
    }

    // One table per positions, angle base and [batch, seq, head_dim].
    auto queryType = cast<RankedTensorType>(attention.getQuery().getType());
    auto tableType = RankedTensorType::get(
        {queryType.getDimSize(0), queryType.getDimSize(1),
         queryType.getDimSize(2) /
             static_cast<int64_t>(attention.getNumHeads())},
        Float32Type::get(attention.getContext()));
    TableKey key{q.getPositions(), q.getTheta().convertToDouble(), tableType};
    auto found = llvm::find_if(tables, [&](auto &t) { return t.first == key; });
    Value table;
    if (found != tables.end()) {
      table = found->second;
    } else {
      OpBuilder builder(&block, block.begin());
      if (Operation *def =
              q.getPositions() ? q.getPositions().getDefiningOp() : nullptr)
        builder.setInsertionPointAfter(def);
      // Shared by every layer: the step's location, not a layer's.
      auto op = nn::RoPETableOp::create(builder, block.getParentOp()->getLoc(),
                                        tableType, q.getPositions(),
                                        q.getThetaAttr());
      copyChunk(q, op);
      table = op.getResult();
      tables.push_back({key, table});
    }

    OpBuilder builder(attention);
    auto fused = nn::AttentionOp::create(
        builder, attention.getLoc(), attention.getType(), q.getInput(),
        k.getInput(), attention.getValue(), attention.getCuSeqlens(), table,
        attention.getNumHeadsAttr(), attention.getNumKvHeadsAttr(),
        attention.getCausalAttr(), attention.getScaleAttr());
    copyChunk(attention, fused);
    attention.getResult().replaceAllUsesWith(fused.getResult());
    attention.erase();
    for (auto [grad, dq, dk] : grads) {
      // In the gradient's place: the unrotated Q and K and the table come
      // before the forward, and the inverse RoPEs after the gradient.
      builder.setInsertionPoint(grad);
      auto fusedGrad = nn::AttentionGradOp::create(
          builder, grad.getLoc(), grad.getResultTypes(), grad.getGrad(),
          q.getInput(), k.getInput(), grad.getValue(), grad.getCuSeqlens(),
          table, grad.getNumHeadsAttr(), grad.getNumKvHeadsAttr(),
          grad.getCausalAttr(), grad.getScaleAttr());
      copyChunk(grad, fusedGrad);
      dq.getResult().replaceAllUsesWith(fusedGrad.getQueryGrad());
      dk.getResult().replaceAllUsesWith(fusedGrad.getKeyGrad());
      grad.getValueGrad().replaceAllUsesWith(fusedGrad.getValueGrad());
      dq.erase();
      dk.erase();
      grad.erase();
    }
    record(q.getLoc(),
           llvm::formatv("forward: the RoPE of Q and K inside the attention's "
                         "load (rope-attention){0}: no kernel, the rotated Q "
                         "and K never stored",
                         grads.empty() ? ""
                                       : "; backward: the inverse RoPE of dq "
                                         "and dk in the gradient's store")
               .str());
    // Nothing else read them (checked above).
    q.erase();
    k.erase();
  }
}

//===----------------------------------------------------------------------===//
// linear-cross-entropy
//===----------------------------------------------------------------------===//

/// Rows a dense tensor of `type` has before its last dimension.
int64_t leadingRows(Type type) {
  auto tensor = cast<RankedTensorType>(type);
  return tensor.getNumElements() / tensor.getShape().back();
}

/// The fewest rows of a chunk: a GEMM tile's height. With fewer, each
/// chunk's three GEMMs re-read the whole [vocab, hidden] weight for a few
/// rows of work (GPT-2 at 4 x 64 tokens would take 2-row chunks).
constexpr int64_t kMinChunkRows = 64;

/// The chunk of linear-cross-entropy: its FP32 logits at most about the
/// bytes of the [tokens, hidden] activations, in multiples of 64 rows, but
/// at least kMinChunkRows and at most the tokens.
int64_t chooseChunkRows(int64_t tokens, int64_t hidden, int64_t vocab,
                        int64_t elementBytes, int64_t override) {
  if (override > 0)
    return std::min(override, tokens);
  int64_t fit = tokens * hidden * elementBytes / (vocab * 4);
  int64_t rows = std::max(kMinChunkRows, fit / 64 * 64);
  return std::min(rows, tokens);
}

/// The ops of one LM head and its loss, forward and backward.
struct LossHead {
  nn::LinearOp head;
  nn::CrossEntropyOp loss;
  nn::CrossEntropyGradOp lossGrad;
  nn::LinearOp inputGrad;
  nn::LinearWeightGradOp weightGrad;
};

/// The LM head whose logits `grad` differentiates, if the group may fuse
/// it; else why not (empty: not an LM head at all, nothing to report).
FailureOr<LossHead> matchLossHead(nn::CrossEntropyGradOp grad,
                                  std::string &whyNot) {
  LossHead m;
  m.lossGrad = grad;
  m.head = grad.getLogits().getDefiningOp<nn::LinearOp>();
  if (!m.head)
    return failure();
  auto refuse = [&](const Twine &reason) {
    whyNot = reason.str();
    return failure();
  };
  if (!cast<RankedTensorType>(m.head.getInput().getType()).hasStaticShape() ||
      !cast<RankedTensorType>(m.head.getWeight().getType()).hasStaticShape())
    return refuse("the LM head has a dynamic shape");
  if (m.head.getBias())
    return refuse("the LM head has a bias");
  if (m.head.getTransposeWeight())
    return refuse("the LM head's weight is stored [hidden, vocab]");
  if (grad->getBlock() != m.head->getBlock())
    return refuse("the loss gradient is in another block than the LM head");
  for (Operation *user : m.head.getResult().getUsers()) {
    if (user == grad.getOperation())
      continue;
    auto loss = dyn_cast<nn::CrossEntropyOp>(user);
    if (!loss || m.loss)
      return refuse(llvm::formatv("the logits have another consumer, '{0}'",
                                  user->getName().getStringRef()));
    m.loss = loss;
  }
  if (!m.loss)
    return refuse("the logits feed no cross_entropy");
  if (m.loss.getTargets() != grad.getTargets() ||
      m.loss.getIgnoreIndex() != grad.getIgnoreIndex())
    return refuse("the loss and its gradient read different targets");
  for (Operation *user : grad.getResult().getUsers()) {
    if (auto linear = dyn_cast<nn::LinearOp>(user);
        linear && !m.inputGrad && linear.getInput() == grad.getResult() &&
        linear.getWeight() == m.head.getWeight() && !linear.getBias() &&
        linear.getTransposeWeight()) {
      m.inputGrad = linear;
      continue;
    }
    if (auto weightGrad = dyn_cast<nn::LinearWeightGradOp>(user);
        weightGrad && !m.weightGrad &&
        weightGrad.getGrad() == grad.getResult() &&
        weightGrad.getInput() == m.head.getInput() &&
        !weightGrad.getTransposeWeight()) {
      m.weightGrad = weightGrad;
      continue;
    }
    return refuse(llvm::formatv("the logits' gradient has another consumer, "
                                "'{0}'",
                                user->getName().getStringRef()));
  }
  if (!m.inputGrad || !m.weightGrad)
    return refuse("the logits' gradient does not feed both the input and the "
                  "weight gradient of the LM head");
  // The op stands where the loss gradient stood: whatever reads the loss
  // must come later.
  for (Operation *user : m.loss.getResult().getUsers())
    if (user->getBlock() != grad->getBlock() ||
        user->isBeforeInBlock(grad.getOperation()))
      return refuse("the loss is read before its gradient is computed");
  return m;
}

/// The linear-cross-entropy group: every LM head whose logits only the loss
/// and its gradient read becomes one tile.linear_cross_entropy, at the loss
/// gradient; a head it may not fuse is reported with the reason.
void fuseLinearCrossEntropy(Block &block, int64_t chunkOverride,
                            bool fp32Logits,
                            SmallVectorImpl<Decision> &decisions,
                            unsigned &position, bool report) {
  SmallVector<nn::CrossEntropyGradOp> grads(
      block.getOps<nn::CrossEntropyGradOp>());
  for (nn::CrossEntropyGradOp grad : grads) {
    std::string whyNot;
    FailureOr<LossHead> matched = matchLossHead(grad, whyNot);
    if (failed(matched)) {
      if (report && !whyNot.empty())
        decisions.push_back(Decision{
            grad.getLoc(), position++,
            llvm::formatv("backward: the LM head, its loss and their "
                          "gradients stay apart (linear-cross-entropy): {0}",
                          whyNot)
                .str()});
      continue;
    }
    LossHead m = *matched;
    Value input = m.head.getInput(), weight = m.head.getWeight();
    auto inputType = cast<RankedTensorType>(input.getType());
    auto weightType = cast<RankedTensorType>(weight.getType());
    int64_t tokens = leadingRows(inputType);
    int64_t hidden = inputType.getShape().back();
    int64_t vocab = weightType.getDimSize(0);
    int64_t elementBytes = inputType.getElementTypeBitWidth() / 8;
    int64_t chunk =
        chooseChunkRows(tokens, hidden, vocab, elementBytes, chunkOverride);
    OpBuilder builder(grad);
    auto scratchType =
        RankedTensorType::get({chunk, vocab}, builder.getF32Type());
    Location loc =
        builder.getFusedLoc({m.head.getLoc(), m.loss.getLoc(), grad.getLoc(),
                             m.inputGrad.getLoc(), m.weightGrad.getLoc()});
    // The weight gradient accumulates over the chunks in FP32; where the
    // unfused GEMM rounds it (a BF16 table whose gradient adds to the tied
    // embedding's), a cast rounds the sum once.
    auto weightGradType = cast<RankedTensorType>(m.weightGrad.getType());
    auto accumulatorType = weightGradType.clone(builder.getF32Type());
    auto fused = tile::LinearCrossEntropyOp::create(
        builder, loc,
        TypeRange{m.loss.getType(), m.inputGrad.getType(), accumulatorType,
                  scratchType},
        input, weight, grad.getTargets(), grad.getGrad(),
        builder.getI64IntegerAttr(chunk), grad.getIgnoreIndexAttr());
    copyChunk(grad, fused);
    if (fp32Logits && inputType.getElementType().isBF16())
      fused.setFp32Logits(true);
    if (report) {
      int64_t logitsBytes =
          tokens * vocab *
          (cast<RankedTensorType>(m.head.getType()).getElementTypeBitWidth() /
           8);
      decisions.push_back(Decision{
          m.head.getLoc(), position++,
          llvm::formatv("backward: LM head + cross_entropy + their gradients "
                        "as one op over {0} chunk{1} of {2} tokens "
                        "(linear-cross-entropy): the [{3}, {4}] logits and "
                        "their gradient ({5} bytes each) never stored, "
                        "{6} bytes of FP32 scratch",
                        llvm::divideCeil(tokens, chunk),
                        chunk < tokens ? "s" : "", chunk, tokens, vocab,
                        logitsBytes, chunk * vocab * 4)
              .str()});
    }
    m.loss.getResult().replaceAllUsesWith(fused.getLoss());
    m.inputGrad.getResult().replaceAllUsesWith(fused.getInputGrad());
    Value weightGrad = fused.getWeightGrad();
    if (accumulatorType != weightGradType) {
      // A kernel of its own, right after the op: joined to the consumers
      // (the tied sum at the end of the backward) it would keep the FP32
      // accumulator alive through the whole backward.
      Location at = m.weightGrad.getLoc();
      auto region = tile::FusedOp::create(
          builder, at, TypeRange{weightGradType}, ValueRange{weightGrad});
      copyChunk(m.weightGrad, region);
      OpBuilder inner = OpBuilder::atBlockBegin(&region.getBody().front());
      auto rounding = nn::CastOp::create(
          inner, at, weightGradType, region.getBody().front().getArgument(0));
      tile::YieldOp::create(inner, at, rounding.getResult());
      weightGrad = region.getResult(0);
    }
    m.weightGrad.getResult().replaceAllUsesWith(weightGrad);
    m.inputGrad.erase();
    m.weightGrad.erase();
    grad.erase();
    m.loss.erase();
    m.head.erase();
  }
}

/// Ops that will become one kernel.
struct Cluster {
  SmallVector<Operation *> ops;
  int64_t rows = 0;
  Attribute chunk;
  unsigned first = 0; ///< program position of the first op
  bool hasNorm = false, hasAdd = false, sibling = false;
};

class Fuser {
public:
  Fuser(Block &block, const Policy &options) : block(block), options(options) {}

  /// Forms the clusters of the block, in program order.
  void cluster();
  /// Replaces every cluster of two ops or more by a tile.fused region and
  /// re-sorts the block; records the report's decisions.
  LogicalResult materialize(SmallVectorImpl<Decision> &decisions,
                            unsigned &position);

private:
  bool allowed(Group group) const {
    switch (group) {
    case Group::ResidualNorm:
      return options.residualNorm;
    case Group::Rope:
      return options.rope;
    case Group::Elementwise:
      return options.elementwise;
    }
    return false;
  }
  /// Whether `op` may join `c`, and under which option.
  bool canJoin(Cluster &c, Operation *op, int64_t rows, bool sibling);
  /// Whether a member reads whole (a norm's weight) what a member computes:
  /// a region runs row by row, so that must come from outside it.
  bool readsWholeWithin(ArrayRef<Operation *> members) const;
  /// Whether contracting `members` into one node would make a cycle: a
  /// path from a member to a member through ops (or other clusters, each
  /// one node) outside them.
  bool wouldCycle(ArrayRef<Operation *> members);
  /// Merges `from` into `into` when both may be one kernel.
  bool tryMerge(Cluster &into, Cluster &from);

  Block &block;
  const Policy &options;
  llvm::DenseMap<Operation *, unsigned> order;
  llvm::DenseMap<Operation *, Cluster *> clusterOf;
  std::deque<Cluster> clusters;
};

bool Fuser::wouldCycle(ArrayRef<Operation *> members) {
  llvm::SmallPtrSet<Operation *, 16> inside(members.begin(), members.end());
  unsigned first = ~0u;
  for (Operation *op : members)
    first = std::min(first, order.lookup(op));
  // Walk producers backwards from the members' outside operands; nothing
  // before the first member can depend on a member.
  SmallVector<Operation *> work;
  llvm::DenseSet<Operation *> seen;
  auto push = [&](Operation *producer) {
    if (!producer || producer->getBlock() != &block ||
        order.lookup(producer) < first)
      return;
    // A producer in another cluster stands for the whole cluster.
    Cluster *other = clusterOf.lookup(producer);
    if (other && !inside.contains(producer)) {
      for (Operation *member : other->ops)
        if (seen.insert(member).second)
          work.push_back(member);
      return;
    }
    if (seen.insert(producer).second)
      work.push_back(producer);
  };
  for (Operation *op : members)
    for (Value operand : op->getOperands())
      if (!inside.contains(operand.getDefiningOp()))
        push(operand.getDefiningOp());
  while (!work.empty()) {
    Operation *next = work.pop_back_val();
    if (inside.contains(next))
      return true;
    for (Value operand : next->getOperands())
      push(operand.getDefiningOp());
  }
  return false;
}

bool Fuser::readsWholeWithin(ArrayRef<Operation *> members) const {
  llvm::SmallPtrSet<Operation *, 16> inside(members.begin(), members.end());
  for (Operation *op : members)
    for (OpOperand &operand : op->getOpOperands())
      if (!tile::isRowOperand(op, operand.getOperandNumber()) &&
          inside.contains(operand.get().getDefiningOp()))
        return true;
  return false;
}

bool Fuser::canJoin(Cluster &c, Operation *op, int64_t rows, bool sibling) {
  if (c.rows != rows || c.chunk != op->getAttr(kChunkAttr))
    return false;
  Group group = Group::Elementwise;
  if (sibling)
    group = Group::Rope;
  else if ((isNorm(op) && c.hasAdd) || (isa<nn::AddOp>(op) && c.hasNorm))
    group = Group::ResidualNorm;
  if (!allowed(group))
    return false;
  SmallVector<Operation *> members(c.ops);
  members.push_back(op);
  return !readsWholeWithin(members) && !wouldCycle(members);
}

bool Fuser::tryMerge(Cluster &into, Cluster &from) {
  if (&into == &from || from.ops.empty() || into.rows != from.rows ||
      into.chunk != from.chunk)
    return false;
  Group group = Group::Elementwise;
  if ((into.hasNorm && from.hasAdd) || (into.hasAdd && from.hasNorm))
    group = Group::ResidualNorm;
  if (!allowed(group))
    return false;
  SmallVector<Operation *> members(into.ops);
  members.append(from.ops.begin(), from.ops.end());
  if (readsWholeWithin(members) || wouldCycle(members))
    return false;
  // Keep program order inside the region.
  llvm::sort(members, [&](Operation *a, Operation *b) {
    return order.lookup(a) < order.lookup(b);
  });
  into.ops = std::move(members);
  into.first = std::min(into.first, from.first);
  into.hasNorm |= from.hasNorm;
  into.hasAdd |= from.hasAdd;
  into.sibling |= from.sibling;
  for (Operation *op : from.ops)
    clusterOf[op] = &into;
  from.ops.clear();
  return true;
}

void Fuser::cluster() {
  unsigned position = 0;
  for (Operation &op : block)
    order[&op] = position++;
  // The cluster of the last RoPE to read each positions tensor.
  llvm::DenseMap<Value, Cluster *> ropeByPositions;
  for (Operation &op : block) {
    if (!tile::isRowLocal(&op))
      continue;
    std::optional<int64_t> rows = tile::opRowCount(&op);
    if (!rows)
      continue;
    Cluster *joined = nullptr;
    for (Value operand : op.getOperands()) {
      Operation *producer = operand.getDefiningOp();
      Cluster *c = producer ? clusterOf.lookup(producer) : nullptr;
      if (c && canJoin(*c, &op, *rows, /*sibling=*/false)) {
        joined = c;
        break;
      }
    }
    auto rope = dyn_cast<nn::RoPEOp>(&op);
    if (!joined && rope && rope.getPositions())
      if (Cluster *c = ropeByPositions.lookup(rope.getPositions()))
        if (canJoin(*c, &op, *rows, /*sibling=*/true)) {
          joined = c;
          joined->sibling = true;
        }
    if (!joined) {
      joined = &clusters.emplace_back();
      joined->rows = *rows;
      joined->chunk = op.getAttr(kChunkAttr);
      joined->first = order[&op];
    }
    joined->ops.push_back(&op);
    joined->hasNorm |= isNorm(&op);
    joined->hasAdd |= isa<nn::AddOp>(&op);
    clusterOf[&op] = joined;
    // The producers of its other operands may join too (the two gathers
    // that GPT-2's first add sums).
    for (Value operand : op.getOperands())
      if (Cluster *c = clusterOf.lookup(operand.getDefiningOp()))
        if (c != joined)
          tryMerge(*joined, *c);
    if (rope && rope.getPositions())
      ropeByPositions[rope.getPositions()] = joined;
  }
}

/// "add + rms_norm" for the report.
std::string describe(ArrayRef<Operation *> ops) {
  std::string text;
  for (Operation *op : ops) {
    if (!text.empty())
      text += " + ";
    text += op->getName().stripDialect().str();
  }
  return text;
}

LogicalResult Fuser::materialize(SmallVectorImpl<Decision> &decisions,
                                 unsigned &position) {
  bool changed = false;
  for (Cluster &c : clusters) {
    if (c.ops.size() < 2)
      continue;
    llvm::SmallPtrSet<Operation *, 8> members(c.ops.begin(), c.ops.end());
    llvm::SetVector<Value> inputs;
    SmallVector<Value> outputs;
    SmallVector<Location> locations;
    for (Operation *op : c.ops) {
      locations.push_back(op->getLoc());
      for (Value operand : op->getOperands())
        if (!members.contains(operand.getDefiningOp()))
          inputs.insert(operand);
      for (Value result : op->getResults())
        if (llvm::any_of(result.getUsers(), [&](Operation *user) {
              return !members.contains(block.findAncestorOpInBlock(*user));
            }))
          outputs.push_back(result);
    }
    OpBuilder builder(c.ops.front());
    Location loc = builder.getFusedLoc(locations);
    auto fused = tile::FusedOp::create(
        builder, loc, ValueRange(outputs).getTypes(), inputs.getArrayRef());
    if (c.chunk)
      fused->setAttr(kChunkAttr, c.chunk);
    Block &body = fused.getBody().front();
    IRMapping mapping;
    mapping.map(inputs.getArrayRef(), body.getArguments());
    builder.setInsertionPointToStart(&body);
    for (Operation *op : c.ops) {
      Operation *clone = builder.clone(*op, mapping);
      clone->removeAttr(kChunkAttr);
    }
    SmallVector<Value> yields;
    for (Value output : outputs)
      yields.push_back(mapping.lookup(output));
    tile::YieldOp::create(builder, loc, yields);
    for (auto [output, result] : llvm::zip_equal(outputs, fused.getResults()))
      output.replaceUsesWithIf(result, [&](OpOperand &use) {
        return !members.contains(block.findAncestorOpInBlock(*use.getOwner()));
      });
    // The report reads the ops: before they are erased.
    if (options.report) {
      // The anchor: the norm, else the first op.
      Operation *anchor = c.ops.front();
      for (Operation *op : c.ops)
        if (isNorm(op)) {
          anchor = op;
          break;
        }
      StringRef group = c.hasNorm && c.hasAdd ? "residual-norm"
                        : c.sibling           ? "rope"
                                              : "elementwise";
      StringRef direction = directionOf(c.chunk);
      int64_t onChip = 0;
      for (Operation *op : c.ops)
        onChip += op->getNumResults();
      onChip -= static_cast<int64_t>(outputs.size());
      decisions.push_back(Decision{
          anchor->getLoc(), position++,
          llvm::formatv("{0}: {1} as one kernel ({2}): {3} written, {4} kept "
                        "on chip",
                        direction, describe(c.ops), group, outputs.size(),
                        onChip)
              .str()});
    }
    for (Operation *op : llvm::reverse(c.ops))
      op->erase();
    changed = true;
  }
  // Clusters were checked to leave the dataflow acyclic.
  if (changed && !sortTopologically(&block))
    return block.getParentOp()->emitError(
        "nn-fuse: internal error: the fused block has a cycle");
  return success();
}

struct NNFusePass : kiln::impl::NNFusePassBase<NNFusePass> {
  using NNFusePassBase::NNFusePassBase;

  void runOnOperation() final {
    if (crossEntropyChunkRows < 0) {
      getOperation().emitError()
          << "nn-fuse: cross-entropy-chunk-rows must be 0 (chosen) or "
             "positive, got "
          << crossEntropyChunkRows;
      return signalPassFailure();
    }
    SmallVector<Decision> decisions;
    unsigned position = 0;
    Policy options{residualNorm, rope,     elementwise,
                   optimizer,    epilogue, report};
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (func.isExternal())
        continue;
      for (Block &block : func.getBody()) {
        if (epilogue)
          widenGradients(block, decisions, position, report);
        if (optimizer)
          groupOptimizer(block, computeCopies, decisions, position, report);
        // Before the row groups, which would pair the RoPEs of Q and K.
        if (ropeAttention)
          fuseRopeAttention(block, decisions, position, report);
        // After the epilogue group: a bias gradient joins its weight
        // gradient's GEMM in the element type both then have.
        if (gemmEpilogue)
          fuseGemmEpilogues(block, decisions, position, report);
        // After gemm-epilogue, which takes the bias gradients of linear
        // layers.
        if (normParamGrads)
          fuseNormParamGrads(block, decisions, position, report);
        // After the epilogue group, which may have widened the LM head's
        // weight gradient to the FP32 the op then writes.
        if (linearCrossEntropy)
          fuseLinearCrossEntropy(block, crossEntropyChunkRows,
                                 crossEntropyFp32Logits, decisions, position,
                                 report);
        Fuser fuser(block, options);
        fuser.cluster();
        if (failed(fuser.materialize(decisions, position)))
          return signalPassFailure();
      }
    }
    if (report)
      emitGroupedRemarks("nn-fuse", "kernel", decisions);
  }
};

} // namespace
