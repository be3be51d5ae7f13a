//===- Elementwise.cpp - CUDA for fills and elementwise regions -----------===//
//
// Fills instantiate kiln::dev::fill; a fused region of elementwise ops gets
// a generated body (a grid-stride loop over groups of V elements, loaded
// and stored with the device library's loadElements / storeElements,
// computed in FP32, bf16 temporaries rounded as the host rounds them);
// split and concat are generated index remappings along the last
// dimension. Generated kernels are named by a hash of their text, so
// identical regions share one kernel.
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"
#include "compiler/translate/cuda/EmitterSupport.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kiln;
using namespace kiln::cuda;
using llvm::formatv;

SmallVector<std::string> cuda::elementExpressions(Operation *op,
                                                  ArrayRef<std::string> in) {
  auto tanhFlag = [](nn::GeluApproximation a) {
    return a == nn::GeluApproximation::tanh ? "true" : "false";
  };
  return llvm::TypeSwitch<Operation *, SmallVector<std::string>>(op)
      .Case([&](nn::AddOp) {
        return SmallVector<std::string>{in[0] + " + " + in[1]};
      })
      .Case([&](nn::MulOp) {
        return SmallVector<std::string>{in[0] + " * " + in[1]};
      })
      .Case([&](nn::CastOp) { return SmallVector<std::string>{in[0]}; })
      .Case([&](nn::SwiGLUOp) {
        return SmallVector<std::string>{
            formatv("kiln::dev::silu({0}) * {1}", in[0], in[1]).str()};
      })
      .Case([&](nn::SwiGLUGradOp) {
        return SmallVector<std::string>{
            formatv("kiln::dev::swigluGate({0}, {1}, {2})", in[0], in[1], in[2])
                .str(),
            formatv("kiln::dev::swigluUp({0}, {1})", in[0], in[1]).str()};
      })
      .Case([&](nn::GeluOp gelu) {
        return SmallVector<std::string>{formatv("kiln::dev::gelu({0}, {1})",
                                                in[0],
                                                tanhFlag(gelu.getApproximate()))
                                            .str()};
      })
      .Case([&](nn::GeluGradOp grad) {
        return SmallVector<std::string>{
            formatv("kiln::dev::geluGrad({0}, {1}, {2})", in[0], in[1],
                    tanhFlag(grad.getApproximate()))
                .str()};
      })
      .Default([](Operation *) { return SmallVector<std::string>{}; });
}

LogicalResult cuda::emitFill(arith::ConstantOp constant, LaunchBuilder &k) {
  Value out = constant.getResult();
  auto splat = dyn_cast<SplatElementsAttr>(constant.getValue());
  if (!splat)
    return constant->emitOpError("cuda: only splat constants are supported");
  std::string t = cudaType(elementType(out));
  k.value(out, true, "out");
  k.integer("n", numElements(out));
  k.number("value", splat.getSplatValue<APFloat>().convertToDouble());
  k.launch("kiln_fill_" + planDtypeName(elementType(out)),
           formatv("  kiln::dev::fill<{0}>(out, n, value);\n", t).str(),
           {std::min(kMaxGrid, ceilDiv(numElements(out), kElementwiseThreads))},
           kElementwiseThreads);
  return success();
}

bool cuda::isElementwise(Operation *op) {
  return isa<nn::AddOp, nn::MulOp, nn::CastOp, nn::SwiGLUOp, nn::SwiGLUGradOp,
             nn::GeluOp, nn::GeluGradOp>(op);
}

LogicalResult cuda::emitElementwiseRegion(tile::FusedOp fused,
                                          LaunchBuilder &k) {
  Block &body = fused.getBody().front();
  auto yield = cast<tile::YieldOp>(body.getTerminator());
  int64_t n = numElements(fused.getResult(0));
  for (Operation &inner : body.without_terminator())
    for (Value v : llvm::concat<Value>(inner.getOperands(), inner.getResults()))
      if (numElements(v) != n)
        return inner.emitOpError(
            "cuda: an elementwise region needs one element count");
  int64_t width = n % kVectorWidth == 0 ? kVectorWidth : 1;
  llvm::DenseMap<Value, std::string> names;
  std::string text;
  llvm::raw_string_ostream os(text);
  os << formatv("  constexpr int V = {0};\n", width);
  os << "  long long stride = (long long)gridDim.x * blockDim.x * V;\n";
  os << "  for (long long base = ((long long)blockIdx.x * blockDim.x + "
        "threadIdx.x) * V; base < n; base += stride) {\n";
  for (auto [index, arg] : llvm::enumerate(body.getArguments())) {
    std::string name = formatv("a{0}", index).str();
    names[arg] = name;
    os << formatv("    float {0}[V];\n    kiln::dev::loadElements<V>(in{1} + "
                  "base, {0});\n",
                  name, index);
  }
  int temp = 0;
  for (Operation &inner : body.without_terminator()) {
    SmallVector<std::string> operands;
    for (Value operand : inner.getOperands())
      operands.push_back(names.lookup(operand) + "[e]");
    SmallVector<std::string> exprs = elementExpressions(&inner, operands);
    for (auto [result, expr] : llvm::zip_equal(inner.getResults(), exprs)) {
      std::string name = formatv("t{0}", temp++).str();
      names[result] = name;
      bool round = elementType(result).isBF16();
      os << formatv("    float {0}[V];\n#pragma unroll\n    for (int e = 0; "
                    "e < V; ++e)\n      {0}[e] = {1};\n",
                    name, round ? "kiln::dev::roundBf16(" + expr + ")" : expr);
    }
  }
  for (auto [index, v] : llvm::enumerate(yield.getValues()))
    os << formatv("    kiln::dev::storeElements<V>(out{0} + base, {1});\n",
                  index, names.lookup(v));
  os << "  }\n";
  std::string signature = text;
  for (Value v : llvm::concat<Value>(fused.getInputs(), fused.getResults())) {
    // Two appends, not `" " + name`: GCC 12 warns on that (-Wrestrict,
    // GCC bug 105329) once it is inlined here.
    signature += ' ';
    signature += planDtypeName(elementType(v));
  }
  std::string name = hashedName("ew", signature);
  for (auto [index, input] : llvm::enumerate(fused.getInputs()))
    k.value(input, false, formatv("in{0}", index).str());
  for (auto [index, result] : llvm::enumerate(fused.getResults()))
    k.value(result, true, formatv("out{0}", index).str());
  k.integer("n", n);
  k.launch(name, text,
           {std::min(kMaxGrid, ceilDiv(n / width, kElementwiseThreads))},
           kElementwiseThreads);
  return success();
}

LogicalResult cuda::emitSplitConcat(const RegionOp &r, LaunchBuilder &k) {
  // Index remapping along the last dimension: element `i` of the whole
  // goes to (or comes from) the part whose column range holds it.
  Operation &inner = *r.op;
  bool split = isa<nn::SplitOp>(inner);
  Value x = r.in(0);
  std::string tag = planDtypeName(elementType(x));
  Value whole = split ? x : r.out(0);
  ValueRange partsInner =
      split ? ValueRange(inner.getResults()) : inner.getOperands();
  // Along the last dimension each row holds a run of every part; along the
  // first there is one row, the parts back to back.
  int64_t dim = split ? cast<nn::SplitOp>(inner).getSplitDim()
                      : cast<nn::ConcatOp>(inner).getConcatDim();
  int64_t rows = dim == 0 ? 1 : numElements(whole) / lastDim(whole);
  int64_t width = numElements(whole) / rows;
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "  long long stride = (long long)gridDim.x * blockDim.x;\n"
        "  for (long long i = (long long)blockIdx.x * blockDim.x + "
        "threadIdx.x; i < n; i += stride) {\n"
     << formatv("    long long row = i / {0}, col = i % {0};\n", width);
  int64_t offset = 0;
  for (auto [index, part] : llvm::enumerate(partsInner)) {
    int64_t w = numElements(part) / rows;
    os << formatv("    {0}if (col < {1}) ", index ? "else " : "", offset + w)
       << (split ? formatv("part{0}[row * {1} + col - {2}] = whole[i];\n",
                           index, w, offset)
                 : formatv("whole[i] = part{0}[row * {1} + col - {2}];\n",
                           index, w, offset))
              .str();
    offset += w;
  }
  os << "  }\n";
  if (split) {
    k.value(x, false, "whole");
    for (unsigned i = 0; i < inner.getNumResults(); ++i)
      k.value(r.out(i), true, formatv("part{0}", i).str());
  } else {
    for (unsigned i = 0; i < inner.getNumOperands(); ++i)
      k.value(r.in(i), false, formatv("part{0}", i).str());
    k.value(r.out(0), true, "whole");
  }
  int64_t n = numElements(whole);
  k.integer("n", n);
  k.launch(hashedName(split ? "split_" + tag : "concat_" + tag, text), text,
           {std::min(kMaxGrid, ceilDiv(n, kElementwiseThreads))},
           kElementwiseThreads);
  return success();
}
