//===- Optimizer.cpp - CUDA for the gradient norm and AdamW ---------------===//
//
// The global gradient norm in two stages, block partials of every
// gradient into the step's scratch and one block that adds them in order
// (runtime/cuda/device/Optimizer.cuh); AdamW in place, grid-stride, with
// its hyperparameters as doubles; gradient accumulation in place.
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
/// reads; `prologue` precedes the switch; `name(count)` names the kernel.
void emitMultiTensor(
    LaunchBuilder &k, unsigned n,
    llvm::function_ref<std::pair<int64_t, std::string>(unsigned t, unsigned i)>
        tensor,
    llvm::function_ref<void()> shared,
    llvm::function_ref<std::string(unsigned count)> name,
    llvm::StringRef prologue = "") {
  for (unsigned first = 0; first < n; first += kAdamWTensorsPerLaunch) {
    unsigned count = std::min(kAdamWTensorsPerLaunch, n - first);
    std::string text = prologue.str() + "  switch (blockIdx.y) {\n";
    int64_t largest = 0;
    for (unsigned t = 0; t < count; ++t) {
      auto [elements, statement] = tensor(t, first + t);
      largest = std::max(largest, elements);
      text += formatv("  case {0}:\n    {1}\n    break;\n", t, statement).str();
    }
    text += "  }\n";
    shared();
    k.launch(name(count), text,
             {std::min(kMaxGrid, ceilDiv(largest, kElementwiseThreads)),
              static_cast<int64_t>(count)},
             kElementwiseThreads);
  }
}

} // namespace

LogicalResult cuda::emitGlobalNorm(tile::GlobalNormOp norm, LaunchBuilder &k) {
  int64_t count = norm.getInputs().size() * kNormPartials;
  k.step().scratchBytes = count * 4;
  for (auto [index, input] : llvm::enumerate(norm.getInputs())) {
    k.value(input, false, "x");
    k.integer("n", numElements(input));
    k.scratch("float", "partials", index * kNormPartials * 4);
    k.launch("kiln_squared_norm_" + planDtypeName(elementType(input)),
             formatv("  kiln::dev::squaredNormPartial<{0}, 256>(x, n, "
                     "partials);\n",
                     cudaType(elementType(input)))
                 .str(),
             {kNormPartials}, 256);
  }
  k.scratch("const float", "partials", 0);
  k.integer("count", count);
  k.value(norm.getResult(), true, "out");
  k.launch("kiln_finish_norm",
           "  kiln::dev::finishNorm<1024>(partials, (int)count, out);\n", {1},
           1024);
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
  unsigned n = adamw.getNumParams();
  bool copies = adamw.getComputeCopies();
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
        k.value(adamw.getNewParam(i), true, formatv("param{0}", t).str());
        k.value(adamw.getGrad(i), false, formatv("grad{0}", t).str());
        k.value(adamw.getNewExpAvg(i), true, formatv("expAvg{0}", t).str());
        k.value(adamw.getNewExpAvgSq(i), true, formatv("expAvgSq{0}", t).str());
        int64_t elements = numElements(adamw.getParam(i));
        k.integer(formatv("n{0}", t).str(), elements);
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
