//===- PackProjections.cpp - nn-pack-projections --------------------------===//
//
// Packs the projections that read the same activations (Q, K and V; gate
// and up) into one GEMM over their weights concatenated row-wise, whose
// output is split back into the projections' results. Runs on the forward
// pass before nn-autodiff, which then derives the packed backward: one
// input-gradient GEMM and one weight-gradient GEMM for the group.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"
#include "passes/Passes.h"
#include "passes/Report.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/TypeUtilities.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/Support/FormatVariadic.h"

namespace kiln {
#define GEN_PASS_DEF_NNPACKPROJECTIONSPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// A parameter as a projection reads it: the argument itself (FP32), or
/// its one cast to the compute type (BF16), which only this projection
/// reads. Null when `value` is neither.
Value parameterForm(Value value, Operation *projection) {
  if (!value)
    return nullptr;
  auto arg = dyn_cast<BlockArgument>(value);
  auto rounding = value.getDefiningOp<nn::CastOp>();
  if (rounding)
    arg = dyn_cast<BlockArgument>(rounding.getInput());
  auto func =
      arg ? dyn_cast<func::FuncOp>(arg.getOwner()->getParentOp()) : nullptr;
  if (!func || !func.getArgAttr(arg.getArgNumber(), attrs::kParam))
    return nullptr;
  if (rounding && !llvm::all_of(rounding->getUsers(), [&](Operation *user) {
        return user == projection;
      }))
    return nullptr;
  return value;
}

/// The last path component of a projection's module ("q_proj").
std::string moduleName(Location loc) {
  std::string name = "?";
  loc->walk([&](Location inner) {
    if (auto named = dyn_cast<NameLoc>(inner)) {
      name = named.getName().getValue().rsplit('.').second.str();
      if (name.empty())
        name = named.getName().getValue().str();
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return name;
}

struct NNPackProjectionsPass
    : kiln::impl::NNPackProjectionsPassBase<NNPackProjectionsPass> {
  using Base::Base;
  void runOnOperation() final;
};

void NNPackProjectionsPass::runOnOperation() {
  SmallVector<Decision> decisions;
  unsigned position = 0;
  getOperation().walk([&](func::FuncOp func) {
    if (func.isExternal())
      return;
    Block &block = func.getBody().front();
    // The packable projections of each input, in program order.
    llvm::MapVector<Value, SmallVector<nn::LinearOp>> byInput;
    for (auto linear : block.getOps<nn::LinearOp>()) {
      if (linear.getTransposeWeight() ||
          !parameterForm(linear.getWeight(), linear) ||
          (linear.getBias() && !parameterForm(linear.getBias(), linear)))
        continue;
      byInput[linear.getInput()].push_back(linear);
    }
    for (auto &[input, linears] : byInput) {
      // One GEMM per kind of projection: with or without a bias, the same
      // types.
      SmallVector<nn::LinearOp> group;
      for (nn::LinearOp linear : linears)
        if (getElementTypeOrSelf(linear.getWeight().getType()) ==
                getElementTypeOrSelf(linears.front().getWeight().getType()) &&
            static_cast<bool>(linear.getBias()) ==
                static_cast<bool>(linears.front().getBias()))
          group.push_back(linear);
      if (group.size() < 2)
        continue;
      nn::LinearOp first = group.front();
      OpBuilder b(first);
      // The weights' casts move to the first projection: they read only
      // arguments, and the packed weight must exist before it.
      SmallVector<Value> weights, biases;
      SmallVector<Location> locations;
      int64_t out = 0;
      for (nn::LinearOp linear : group) {
        for (Value v : {linear.getWeight(), linear.getBias()})
          if (Operation *def = v ? v.getDefiningOp() : nullptr)
            def->moveBefore(first);
        weights.push_back(linear.getWeight());
        if (linear.getBias())
          biases.push_back(linear.getBias());
        locations.push_back(linear.getLoc());
        out += cast<RankedTensorType>(linear.getType()).getShape().back();
      }
      Location loc = b.getFusedLoc(locations);
      auto weightType = cast<RankedTensorType>(first.getWeight().getType());
      auto packedWeight = nn::ConcatOp::create(
          b, loc,
          RankedTensorType::get({out, weightType.getDimSize(1)},
                                weightType.getElementType()),
          weights, b.getI64IntegerAttr(0));
      Value packedBias;
      if (!biases.empty())
        packedBias = nn::ConcatOp::create(
            b, loc,
            RankedTensorType::get(
                {out}, getElementTypeOrSelf(first.getBias().getType())),
            biases, b.getI64IntegerAttr(0));
      auto resultType = cast<RankedTensorType>(first.getType());
      SmallVector<int64_t> shape(resultType.getShape());
      shape.back() = out;
      auto packed = nn::LinearOp::create(
          b, loc, RankedTensorType::get(shape, resultType.getElementType()),
          input, packedWeight, packedBias, /*transpose_weight=*/false);
      SmallVector<Type> partTypes;
      for (nn::LinearOp linear : group)
        partTypes.push_back(linear.getType());
      auto split = nn::SplitOp::create(b, loc, partTypes, packed.getResult(),
                                       IntegerAttr());
      std::string names;
      for (auto [linear, part] : llvm::zip_equal(group, split.getResults())) {
        names += (names.empty() ? "" : ", ") + moduleName(linear.getLoc());
        linear.getResult().replaceAllUsesWith(part);
        linear.erase();
      }
      if (report)
        decisions.push_back(Decision{
            locations.front(), position++,
            llvm::formatv("forward: {0} in one GEMM over their weights side "
                          "by side ({1} outputs); the backward is one "
                          "input-gradient and one weight-gradient GEMM",
                          names, out)
                .str()});
    }
  });
  if (report)
    emitGroupedRemarks("nn-pack-projections", "projection", decisions);
}

} // namespace
