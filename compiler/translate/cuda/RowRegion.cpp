//===- RowRegion.cpp - CUDA for fused regions of row-local ops ------------===//
//
// A fused region whose ops are all row-local with one row count
// (tile::rowWiseRows) becomes one generated kernel (the design:
// runtime/cuda/device/RowRegion.cuh): a block per row, a grid-stride loop
// over the rows, and per row the region's ops in order, grouped in stages
// with a __syncthreads() after each. A norm, RoPE or embedding is a stage
// of its own, a call of its device per-row function; a run of elementwise
// ops of one row width is one stage, a generated loop that keeps the run's
// values in registers. A value the region yields is written to its output
// and later stages re-read it there; any other value a later stage reads
// is an FP32 row of dynamic shared memory (RoundedBf16 for bf16 values).
// Kernels are named by a hash of their text, so the same region in every
// layer shares one kernel.
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"
#include "compiler/translate/cuda/EmitterSupport.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>

using namespace mlir;
using namespace kiln;
using namespace kiln::cuda;
using llvm::formatv;

namespace {

/// The dynamic shared memory a row region may use: the opt-in limit of the
/// smallest GPU Kiln targets (A100, sm_80: 163 KiB; the H100 allows 227).
/// The runtime opts in above 48 KiB (runtime/cuda/CudaBackend.cpp).
constexpr int64_t kMaxRowSharedBytes = 163 * 1024;

/// The threads per SM a row region's launch bounds ask ptxas to keep
/// resident (__launch_bounds__(threads, max(1, 768 / threads))): at most
/// 85 registers a thread in blocks of up to 256, 128 in blocks of 512, 64
/// in blocks of 1024. Measured with NVRTC 13.0 (tile-to-cuda-compile.mlir,
/// cuda-compile.test): without a minimum ptxas aimed for more blocks and
/// spilled (the GPT-2 LayerNorm backward region at 128 threads got 48
/// registers on sm_90a; SwiGLU, RMSNorm and GELU at 1024 threads 32); at
/// 1024 threads per SM nn-fuse's GPT-2 embedding + add + LayerNorm region
/// spilled at 64 registers on sm_90a; with a minimum of one block ptxas
/// took up to 78 registers in blocks of 512, a quarter of the SM's threads.
constexpr int64_t kMinRowRegionThreadsPerSm = 768;

/// Shared rows start at multiples of 16 bytes, for vector access.
constexpr int64_t kSharedRowAlignment = 16;

/// One stage of the kernel: a row op, or a run of elementwise ops of one
/// row width.
struct Stage {
  SmallVector<Operation *> ops;
  bool elementwise = false;
  int64_t width = 0;
};

} // namespace

namespace {

class RowRegionEmitter {
public:
  RowRegionEmitter(tile::FusedOp fused, int64_t rows, LaunchBuilder &k)
      : fused(fused), body(fused.getBody().front()), rows(rows), k(k) {}

  LogicalResult emit();

private:
  /// Elements of `v` per row: its last dimension (1 for an ids tensor).
  int64_t width(Value v) const { return numElements(v) / rows; }
  /// The expression of a pointer to the current row of `v`, which is in
  /// memory (a region input or output, or a shared row).
  std::string rowOf(Value v) const;
  /// The current row's one element of an ids or positions input, as an
  /// integer expression.
  std::string idOf(Value v) const {
    return formatv("(long long){0}[row]", inputName.lookup(v)).str();
  }
  /// The pointer to the whole of `v`, a region input (weights, tables).
  FailureOr<std::string> wholeOf(Operation *op, unsigned operand) const;
  /// The pointer an op writes its result `v` to.
  std::string destination(Value v) const { return rowOf(v); }

  void planStages();
  LogicalResult placeValues();
  void emitElementwiseStage(const Stage &stage, llvm::raw_ostream &os);
  LogicalResult emitRowOp(Operation *op, llvm::raw_ostream &os);
  /// The threads of the block: the most any stage asks for.
  int64_t threads() const;

  tile::FusedOp fused;
  Block &body;
  int64_t rows;
  LaunchBuilder &k;
  SmallVector<Stage> stages;
  llvm::DenseMap<Operation *, unsigned> stageOf;
  /// Region inputs and outputs: parameter names.
  llvm::DenseMap<Value, std::string> inputName, outputName;
  /// Elements between rows of the region's row-strided inputs and outputs.
  llvm::DenseMap<Value, int64_t> pitch;
  /// Values in shared memory: the row's variable name.
  llvm::DenseMap<Value, std::string> sharedName;
  /// Declarations of the shared rows, and their bytes.
  std::string sharedDecls;
  int64_t sharedBytes = 0;
  /// Per-op scalar parameters (eps, theta): name and value, in order.
  SmallVector<std::pair<std::string, double>> numbers;
  bool usesErrorFlag = false;
  /// Whether a stage reduces over the row (the norms).
  bool usesScratch = false;
};

std::string RowRegionEmitter::rowOf(Value v) const {
  if (auto it = sharedName.find(v); it != sharedName.end())
    return it->second;
  auto it = outputName.find(v);
  const std::string &base =
      it != outputName.end() ? it->second : inputName.lookup(v);
  // A row-strided input or output (a view into a packed tensor) has its
  // rows further apart than they are wide.
  auto found = pitch.find(v);
  return formatv("{0} + row * {1}", base,
                 found != pitch.end() ? found->second : width(v))
      .str();
}

FailureOr<std::string> RowRegionEmitter::wholeOf(Operation *op,
                                                 unsigned operand) const {
  Value v = op->getOperand(operand);
  auto it = inputName.find(v);
  if (it == inputName.end())
    return op->emitOpError() << "cuda: a row region reads operand #" << operand
                             << " whole, so it must be an input of the region";
  return it->second;
}

void RowRegionEmitter::planStages() {
  for (Operation &op : body.without_terminator()) {
    bool elementwise = isElementwise(&op);
    int64_t w = width(op.getResult(0));
    if (elementwise && !stages.empty() && stages.back().elementwise &&
        stages.back().width == w) {
      stages.back().ops.push_back(&op);
    } else {
      stages.push_back(Stage{{&op}, elementwise, w});
    }
    stageOf[&op] = stages.size() - 1;
  }
}

LogicalResult RowRegionEmitter::placeValues() {
  for (auto [index, arg] : llvm::enumerate(body.getArguments())) {
    inputName[arg] = formatv("in{0}", index).str();
    if (tile::isRowStrided(fused.getInputs()[index]))
      pitch[arg] = tile::rowPitch(fused.getInputs()[index]);
  }
  auto yield = cast<tile::YieldOp>(body.getTerminator());
  for (auto [index, v] : llvm::enumerate(yield.getValues())) {
    if (tile::isRowStrided(fused.getResult(index)))
      pitch[v] = tile::rowPitch(fused.getResult(index));
    if (!v.getDefiningOp() || v.getParentBlock() != &body)
      return fused->emitOpError()
             << "cuda: a row region must yield values its ops compute, not "
                "its inputs (result #"
             << index << ")";
    if (outputName.count(v))
      return fused->emitOpError() << "cuda: a row region yields a value twice "
                                     "(result #"
                                  << index << ")";
    outputName[v] = formatv("out{0}", index).str();
  }
  // A result lives in shared memory when it is not yielded and a later
  // stage reads it, or a row op writes it (a row op always writes memory).
  for (Operation &op : body.without_terminator()) {
    for (Value result : op.getResults()) {
      if (outputName.count(result))
        continue;
      bool readLater = llvm::any_of(result.getUsers(), [&](Operation *user) {
        return !isa<tile::YieldOp>(user) &&
               stageOf.lookup(user) != stageOf[&op];
      });
      if (!readLater && isElementwise(&op))
        continue;
      Type type = elementType(result);
      std::string t = type.isBF16()  ? "kiln::dev::RoundedBf16"
                      : type.isF32() ? "float"
                                     : "";
      if (t.empty())
        return op.emitOpError()
               << "cuda: a row region keeps f32 and bf16 values in shared "
                  "memory, not "
               << type;
      std::string name = formatv("s{0}", sharedName.size()).str();
      sharedName[result] = name;
      sharedDecls += formatv("  {0} *{1} = kiln::dev::sharedRow<{0}>({2});\n",
                             t, name, sharedBytes)
                         .str();
      sharedBytes +=
          ceilDiv(width(result) * 4, kSharedRowAlignment) * kSharedRowAlignment;
    }
  }
  if (sharedBytes > kMaxRowSharedBytes)
    return fused->emitOpError()
           << "cuda: a row region needs " << sharedBytes
           << " bytes of shared memory for its temporary rows, more than the "
           << kMaxRowSharedBytes << " every target GPU allows";
  return success();
}

void RowRegionEmitter::emitElementwiseStage(const Stage &stage,
                                            llvm::raw_ostream &os) {
  // Like a fused elementwise region (Elementwise.cpp), over one row: V
  // elements per access where the width allows (rows then start 16-byte
  // aligned: the plan aligns buffers to 256 bytes, shared rows to 16).
  int64_t v = stage.width % kVectorWidth == 0 ? kVectorWidth : 1;
  os << formatv("    for (int j = threadIdx.x * {0}; j < {1}; j += kThreads * "
                "{0}) {{\n",
                v, stage.width);
  llvm::DenseMap<Value, std::string> names;
  int loaded = 0, temp = 0;
  for (Operation *op : stage.ops) {
    SmallVector<std::string> operands;
    for (Value operand : op->getOperands()) {
      if (!names.count(operand)) {
        std::string name = formatv("a{0}", loaded++).str();
        names[operand] = name;
        os << formatv("      float {0}[{1}];\n      "
                      "kiln::dev::loadElements<{1}>({2} + j, {0});\n",
                      name, v, rowOf(operand));
      }
      operands.push_back(names.lookup(operand) + "[e]");
    }
    SmallVector<std::string> exprs = elementExpressions(op, operands);
    for (auto [result, expr] : llvm::zip_equal(op->getResults(), exprs)) {
      std::string name = formatv("t{0}", temp++).str();
      names[result] = name;
      bool round = elementType(result).isBF16();
      os << formatv("      float {0}[{1}];\n#pragma unroll\n      for (int e = "
                    "0; e < {1}; ++e)\n        {0}[e] = {2};\n",
                    name, v,
                    round ? "kiln::dev::roundBf16(" + expr + ")" : expr);
      if (outputName.count(result) || sharedName.count(result))
        os << formatv("      kiln::dev::storeElements<{0}>({1} + j, {2});\n", v,
                      destination(result), name);
    }
  }
  os << "    }\n";
}

LogicalResult RowRegionEmitter::emitRowOp(Operation *op,
                                          llvm::raw_ostream &os) {
  auto number = [&](StringRef kind, double value) {
    std::string name = formatv("{0}{1}", kind, numbers.size()).str();
    numbers.emplace_back(name, value);
    return name;
  };
  auto epsilon = [&] {
    return number("eps",
                  cast<FloatAttr>(op->getAttr("epsilon")).getValueAsDouble());
  };
  Value result = op->getResult(0);
  int64_t dim = width(result);
  auto norm = [&](StringRef fn, SmallVector<std::string> rowsIn,
                  SmallVector<std::string> wholeIn) {
    usesScratch = true;
    os << formatv(
        "    kiln::dev::{0}<kThreads>({1}, {2}, {3}, {4}, scratch);\n", fn,
        llvm::join(llvm::concat<std::string>(rowsIn, wholeIn), ", "),
        destination(result), dim, epsilon());
  };
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](nn::RMSNormOp) -> LogicalResult {
        FailureOr<std::string> w = wholeOf(op, 1);
        if (failed(w))
          return failure();
        norm("rmsNormOfRow", {rowOf(op->getOperand(0))}, {*w});
        return success();
      })
      .Case([&](nn::LayerNormOp ln) -> LogicalResult {
        FailureOr<std::string> w = wholeOf(op, 1);
        if (failed(w))
          return failure();
        std::string b = "static_cast<const float *>(nullptr)";
        if (ln.getBias()) {
          FailureOr<std::string> bias = wholeOf(op, 2);
          if (failed(bias))
            return failure();
          b = *bias;
        }
        norm("layerNormOfRow", {rowOf(op->getOperand(0))}, {*w, b});
        return success();
      })
      .Case<nn::RMSNormGradOp, nn::LayerNormGradOp>(
          [&](Operation *) -> LogicalResult {
            FailureOr<std::string> w = wholeOf(op, 2);
            if (failed(w))
              return failure();
            norm(isa<nn::RMSNormGradOp>(op) ? "rmsNormGradOfRow"
                                            : "layerNormGradOfRow",
                 {rowOf(op->getOperand(0)), rowOf(op->getOperand(1))}, {*w});
            return success();
          })
      .Case([&](nn::RoPEOp rope) -> LogicalResult {
        int64_t heads = rope.getNumHeads();
        auto shape = cast<RankedTensorType>(result.getType()).getShape();
        std::string position =
            rope.getPositions()
                ? idOf(rope.getPositions())
                : formatv("row % {0}", shape.size() >= 2
                                           ? shape[shape.size() - 2]
                                           : int64_t(1))
                      .str();
        os << formatv("    kiln::dev::ropeOfRow<kThreads>({0}, {1}, {2}, {3}, "
                      "{4}, {5}, {6});\n",
                      rowOf(rope.getInput()), destination(result), position,
                      heads, dim / heads,
                      number("theta", rope.getTheta().convertToDouble()),
                      rope.getInverse() ? "true" : "false");
        return success();
      })
      .Case([&](nn::EmbeddingOp embedding) -> LogicalResult {
        FailureOr<std::string> table = wholeOf(op, 0);
        if (failed(table))
          return failure();
        usesErrorFlag = true;
        os << formatv("    kiln::dev::embeddingOfRow<kThreads>({0}, {1}, {2}, "
                      "{3}, {4}, error, row);\n",
                      *table, idOf(embedding.getIds()),
                      cast<RankedTensorType>(embedding.getTable().getType())
                          .getDimSize(0),
                      destination(result), dim);
        return success();
      })
      .Default([](Operation *other) {
        return other->emitOpError("cuda: no row function for this op");
      });
}

int64_t RowRegionEmitter::threads() const {
  int64_t most = 32;
  for (const Stage &stage : stages) {
    // RoPE's threads take one frequency of half a head each (the heads
    // are a loop); the others a vector of the row each.
    Operation *op = stage.ops.front();
    int64_t w = stage.width;
    if (auto rope = dyn_cast<nn::RoPEOp>(op)) {
      int64_t half = w / rope.getNumHeads() / 2, t = 32;
      while (t < 1024 && t < half)
        t *= 2;
      most = std::max(most, t);
      continue;
    }
    // An elementwise stage loops over the row; more than 256 threads
    // (launch bounds of 1024: 64 registers) would only spill.
    most =
        std::max(most, stage.elementwise ? std::min<int64_t>(rowThreads(w), 256)
                                         : rowThreads(w));
  }
  return most;
}

LogicalResult RowRegionEmitter::emit() {
  planStages();
  if (failed(placeValues()))
    return failure();
  int64_t blockThreads = threads();
  std::string stageText;
  llvm::raw_string_ostream os(stageText);
  for (const Stage &stage : stages) {
    os << "    // " << stage.ops.front()->getName();
    for (Operation *op : llvm::drop_begin(stage.ops))
      os << ", " << op->getName();
    os << "\n";
    if (stage.elementwise)
      emitElementwiseStage(stage, os);
    else if (failed(emitRowOp(stage.ops.front(), os)))
      return failure();
    os << "    __syncthreads();\n";
  }
  std::string text =
      formatv("  constexpr int kThreads = {0};\n"
              "{3}{1}"
              "  for (long long row = blockIdx.x; row < rows; row += "
              "gridDim.x) {{\n{2}  }\n",
              blockThreads, sharedDecls, stageText,
              usesScratch ? "  __shared__ float scratch[kThreads / 32];\n" : "")
          .str();
  std::string signature = text;
  for (Value v : llvm::concat<Value>(fused.getInputs(), fused.getResults())) {
    signature += ' ';
    signature += planDtypeName(elementType(v));
  }
  for (auto [index, input] : llvm::enumerate(fused.getInputs()))
    k.value(input, false, formatv("in{0}", index).str());
  for (auto [index, result] : llvm::enumerate(fused.getResults()))
    k.value(result, true, formatv("out{0}", index).str());
  k.integer("rows", rows);
  for (const auto &[name, value] : numbers)
    k.number(name, value);
  if (usesErrorFlag)
    k.errorFlag();
  k.launch(hashedName("row", signature), text, {std::min(rows, kMaxGrid)},
           blockThreads, sharedBytes,
           /*minBlocksPerSm=*/
           std::max<int64_t>(1, kMinRowRegionThreadsPerSm / blockThreads));
  return success();
}

} // namespace

LogicalResult cuda::emitRowRegion(tile::FusedOp fused, int64_t rows,
                                  LaunchBuilder &k) {
  if (rows == 0)
    return success(); // no rows, nothing to write
  return RowRegionEmitter(fused, rows, k).emit();
}
