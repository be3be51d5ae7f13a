//===- Optimizer.cpp - CUDA for the gradient norm and AdamW ---------------===//
//
// The global gradient norm in two stages, block partials of every
// gradient into the step's scratch and one block that adds them in order
// (runtime/cuda/device/Optimizer.cuh); AdamW in place, grid-stride, with
// its hyperparameters as doubles; gradient accumulation in place. Under
// ZeRO-1 (`shards`) the norm and the updates cover the rank's shards, found
// from its rank at launch.
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"
#include "compiler/translate/cuda/EmitterSupport.h"

using namespace mlir;
using namespace kiln;
using namespace kiln::cuda;
using llvm::formatv;

namespace {

/// Blocks of each partial sum of squares in the gradient norm.
constexpr int64_t kNormPartials = 64;

/// A multi-tensor kernel over `n` tensors: a launch per group of up to
/// kAdamWTensorsPerLaunch (their pointers and sizes fit a launch's 4 KiB of
/// arguments), a row of blocks per tensor (blockIdx.y), each row
/// grid-stride over its tensor. `tensor(t, i)` binds tensor `i`'s
/// parameters as slot `t` of its launch and returns its element count and
/// the statement its row runs; `shared()` binds the parameters every row
/// reads; `prologue` precedes the switch and `epilogue` follows it;
/// `name(count)` names the kernel.
void emitMultiTensor(
    LaunchBuilder &k, unsigned n,
    llvm::function_ref<std::pair<int64_t, std::string>(unsigned t, unsigned i)>
        tensor,
    llvm::function_ref<void()> shared,
    llvm::function_ref<std::string(unsigned count)> name,
    llvm::StringRef prologue = "", llvm::StringRef epilogue = "") {
  for (unsigned first = 0; first < n; first += kAdamWTensorsPerLaunch) {
    unsigned count = std::min(kAdamWTensorsPerLaunch, n - first);
    std::string text = prologue.str() + "  switch (blockIdx.y) {\n";
    int64_t largest = 0;
    for (unsigned t = 0; t < count; ++t) {
      auto [elements, statement] = tensor(t, first + t);
      largest = std::max(largest, elements);
      text += formatv("  case {0}:\n    {1}\n    break;\n", t, statement).str();
    }
    text += "  }\n" + epilogue.str();
    shared();
    k.launch(name(count), text,
             {std::min(kMaxGrid, ceilDiv(largest, kElementwiseThreads)),
              static_cast<int64_t>(count)},
             kElementwiseThreads);
  }
}

} // namespace

LogicalResult cuda::emitGlobalNorm(tile::GlobalNormOp norm, LaunchBuilder &k) {
  // ZeRO-1: each rank's partials cover its shard of every gradient, the
  // finishing launch leaves the rank's sum of squares in the result, the
  // runtime sums it over the ranks (docs/plan.md) and the last launch takes
  // the square root.
  const int64_t shards = norm.getShards().value_or(1);
  int64_t count = norm.getInputs().size() * kNormPartials;
  k.step().scratchBytes = count * 4;
  for (auto [index, input] : llvm::enumerate(norm.getInputs())) {
    std::string type = cudaType(elementType(input));
    k.value(input, false, "x");
    k.integer("n", numElements(input));
    k.scratch("float", "partials", index * kNormPartials * 4);
    if (shards == 1) {
      k.launch("kiln_squared_norm_" + planDtypeName(elementType(input)),
               formatv("  kiln::dev::squaredNormPartial<{0}, 256>(x, n, "
                       "partials);\n",
                       type)
                   .str(),
               {kNormPartials}, 256);
      continue;
    }
    k.integer("shards", shards);
    k.rank("rank");
    k.launch("kiln_squared_norm_shard_" + planDtypeName(elementType(input)),
             formatv("  const kiln::dev::Shard s = kiln::dev::shardOf(n, "
                     "shards, rank);\n"
                     "  kiln::dev::squaredNormPartial<{0}, 256>(x + s.offset, "
                     "s.count, partials);\n",
                     type)
                 .str(),
             {kNormPartials}, 256);
  }
  k.scratch("const float", "partials", 0);
  k.integer("count", count);
  k.value(norm.getResult(), true, "out");
  if (shards == 1) {
    k.launch("kiln_finish_norm",
             "  kiln::dev::finishNorm<1024>(partials, (int)count, out);\n", {1},
             1024);
    return success();
  }
  k.launch("kiln_finish_norm_sum",
           "  kiln::dev::finishNorm<1024, false>(partials, (int)count, "
           "out);\n",
           {1}, 1024);
  k.value(norm.getResult(), true, "x");
  k.launch("kiln_sqrt_norm", "  kiln::dev::sqrtInPlace(x);\n", {1}, 32);
  return success();
}

LogicalResult cuda::emitAdamW(tile::AdamWOp adamw, LaunchBuilder &k) {
  // In place: the kernel writes params and moments through their inputs'
  // pointers, which the plan gives the results' offsets.
  auto common = [&] {
    k.value(adamw.getLr(), false, "lr");
    k.value(adamw.getStep(), false, "step");
    k.value(adamw.getGradNorm(), false, "gradNorm");
    k.real("beta1", adamw.getBeta1().convertToDouble());
    k.real("beta2", adamw.getBeta2().convertToDouble());
    k.real("eps", adamw.getEpsilon().convertToDouble());
    k.real("weightDecay", adamw.getWeightDecay().convertToDouble());
    k.real("maxGradNorm", adamw.getMaxGradNorm().convertToDouble());
  };
  // Tensor `i`'s parameter, gradient, moments and element count (the
  // gradient's: a sharded master is shorter) as slot `t` of a launch.
  auto tensorState = [&](unsigned t, unsigned i) {
    k.value(adamw.getNewParam(i), true, formatv("param{0}", t).str());
    k.value(adamw.getGrad(i), false, formatv("grad{0}", t).str());
    k.value(adamw.getNewExpAvg(i), true, formatv("expAvg{0}", t).str());
    k.value(adamw.getNewExpAvgSq(i), true, formatv("expAvgSq{0}", t).str());
    int64_t elements = numElements(adamw.getGrad(i));
    k.integer(formatv("n{0}", t).str(), elements);
    return elements;
  };
  unsigned n = adamw.getNumParams();
  bool copies = adamw.getComputeCopies();
  const int64_t shards = adamw.getShards().value_or(1);
  if (shards > 1) {
    // (nn-fuse keeps compute copies out of sharded updates: a rank updates
    // only its shard of each master.)
    if (copies)
      return adamw.emitOpError()
             << "the cuda emitter cannot update compute copies of a sharded "
                "(ZeRO-1) optimizer";
    emitMultiTensor(
        k, n,
        [&](unsigned t, unsigned i) {
          int64_t elements = tensorState(t, i);
          // A sharded master (BF16) is the shard alone.
          k.integer(formatv("paramIsShard{0}", t).str(),
                    numElements(adamw.getParam(i)) != elements);
          // (The row picks its tensor; one call after the switch keeps
          // the kernel small: a call per case spilled.)
          return std::pair(
              ceilDiv(elements, shards),
              formatv("param = param{0}; grad = grad{0}; expAvg = expAvg{0}; "
                      "expAvgSq = expAvgSq{0}; n = n{0}; paramIsShard = "
                      "paramIsShard{0} != 0;",
                      t)
                  .str());
        },
        [&] {
          common();
          k.integer("shards", shards);
          k.rank("rank");
        },
        [&](unsigned count) {
          return formatv("kiln_adamw_shards_x{0}", count).str();
        },
        "  float *param = nullptr, *expAvg = nullptr, *expAvgSq = nullptr;\n"
        "  const float *grad = nullptr;\n"
        "  long long n = 0;\n"
        "  bool paramIsShard = false;\n",
        "  kiln::dev::adamwShard(param, grad, expAvg, expAvgSq, n, shards, "
        "rank, paramIsShard, lr, step, gradNorm, beta1, beta2, eps, "
        "weightDecay, maxGradNorm);\n");
    return success();
  }
  if (n == 1 && !copies) {
    int64_t elements = numElements(adamw.getParam());
    k.value(adamw.getNewParam(), true, "param");
    k.value(adamw.getGrad(), false, "grad");
    k.value(adamw.getNewExpAvg(), true, "expAvg");
    k.value(adamw.getNewExpAvgSq(), true, "expAvgSq");
    k.integer("n", elements);
    common();
    k.launch("kiln_adamw",
             "  kiln::dev::adamw(param, grad, expAvg, expAvgSq, n, lr, step, "
             "gradNorm, beta1, beta2, eps, weightDecay, maxGradNorm);\n",
             {std::min(kMaxGrid, ceilDiv(elements, kElementwiseThreads))},
             kElementwiseThreads);
    return success();
  }
  // Many parameters: one multi-tensor kernel per group.
  emitMultiTensor(
      k, n,
      [&](unsigned t, unsigned i) {
        int64_t elements = tensorState(t, i);
        if (copies)
          k.value(adamw.getNewComputeCopy(i), true,
                  formatv("copy{0}", t).str());
        return std::pair(
            elements,
            formatv("kiln::dev::adamw(param{0}, grad{0}, expAvg{0}, "
                    "expAvgSq{0}, n{0}, lr, step, gradNorm, beta1, beta2, "
                    "eps, weightDecay, maxGradNorm{1});",
                    t, copies ? formatv(", copy{0}", t).str() : "")
                .str());
      },
      common,
      [&](unsigned count) {
        return formatv("kiln_adamw_x{0}{1}", count, copies ? "_copies" : "")
            .str();
      });
  return success();
}

LogicalResult cuda::emitGradAccumulate(tile::GradAccumulateOp op,
                                       LaunchBuilder &k) {
  // In place, like AdamW.
  emitMultiTensor(
      k, op.getNumGrads(),
      [&](unsigned t, unsigned i) {
        k.value(op.getAccumulated()[i], true, formatv("acc{0}", t).str());
        k.value(op.getGrad(i), false, formatv("grad{0}", t).str());
        int64_t elements = numElements(op.getGrad(i));
        k.integer(formatv("n{0}", t).str(), elements);
        return std::pair(
            elements,
            formatv("kiln::dev::accumulateGrad(acc{0}, grad{0}, n{0}, first);",
                    t)
                .str());
      },
      [&] { k.value(op.getMicroStep(), false, "microStep"); },
      [](unsigned count) {
        return formatv("kiln_grad_accumulate_x{0}", count).str();
      },
      "  const bool first = *microStep == 0.0f;\n");
  return success();
}
