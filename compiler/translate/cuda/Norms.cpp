//===- Norms.cpp - CUDA for RMSNorm, LayerNorm and column sums ------------===//
//
// Block-per-row kernels (runtime/cuda/device/Norms.cuh) for the norms and
// their input gradients; the weight gradients and column sums reduce
// columns in two stages, row chunks into scratch and then the chunks in
// order, so that a tall input fills the GPU and the sums stay
// deterministic.
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"
#include "compiler/translate/cuda/EmitterSupport.h"

#include "llvm/ADT/StringExtras.h"

#include <algorithm>

using namespace mlir;
using namespace kiln;
using namespace kiln::cuda;
using llvm::formatv;

namespace {

/// Two-stage column reductions (runtime/cuda/device/Reductions.cuh): row
/// chunks of about this many rows, at most kMaxColumnChunks of them.
constexpr int64_t kColumnChunkRows = 64;
constexpr int64_t kMaxColumnChunks = 256;

/// The row chunks of a two-stage column reduction over `rows` rows.
int64_t columnChunks(int64_t rows) {
  return std::clamp<int64_t>(ceilDiv(rows, kColumnChunkRows), 1,
                             kMaxColumnChunks);
}

/// Stage 2 of a column reduction: `result` (`cols` columns, element type
/// `t`, plan dtype `tag`) from the `chunks` partials at `partialsOffset`
/// of the step's scratch.
void finishColumns(LaunchBuilder &k, int64_t partialsOffset, int64_t chunks,
                   Value result, int64_t cols, StringRef tag, StringRef t) {
  k.scratch("const float", "partials", partialsOffset);
  k.value(result, true, "y");
  k.integer("chunks", chunks);
  k.integer("cols", cols);
  k.launch(("kiln_finish_columns_" + tag).str(),
           formatv("  kiln::dev::finishColumns<{0}>(partials, y, (int)chunks, "
                   "cols);\n",
                   t)
               .str(),
           {ceilDiv(cols, kElementwiseThreads)}, kElementwiseThreads);
}

double epsilonOf(Operation *op) {
  return cast<FloatAttr>(op->getAttr("epsilon")).getValueAsDouble();
}

/// The parameters of a norm's row statistics at the start of the step's
/// scratch, as pointers to `type`: LayerNorm's mean and rstd, RMSNorm's
/// rstd. One statement per parameter: their order is the launch's.
std::string statsParams(LaunchBuilder &k, StringRef type, bool isLayer,
                        int64_t rows) {
  if (!isLayer)
    return k.scratch(type, "rstd", 0);
  std::string mean = k.scratch(type, "mean", 0);
  return mean + ", " + k.scratch(type, "rstd", rows * 4);
}

/// Launches the kernel that writes the row statistics of `input` (a
/// LayerNorm's or RMSNorm's) for a weight gradient; returns their bytes.
int64_t launchRowStats(LaunchBuilder &k, Value input, bool isLayer,
                       double eps) {
  std::string t = cudaType(elementType(input));
  std::string tag = planDtypeName(elementType(input));
  int64_t dim = lastDim(input);
  int64_t rows = numElements(input) / dim;
  int64_t threads = rowThreads(dim);
  k.value(input, false, "x");
  std::string stats = statsParams(k, "float", isLayer, rows);
  k.integer("rows", rows);
  k.integer("dim", dim);
  k.number("eps", eps);
  std::string fn = isLayer ? "layerRowStats" : "rmsRowStats";
  k.launch(formatv("kiln_{0}_{1}_t{2}", fn, tag, threads).str(),
           formatv("  kiln::dev::{0}<{1}, {2}>(x, {3}, rows, (int)dim, "
                   "eps);\n",
                   fn, t, threads, stats)
               .str(),
           {std::min(rows, kMaxGrid)}, threads);
  return rows * 4 * (isLayer ? 2 : 1);
}

} // namespace

LogicalResult cuda::emitNorm(const RegionOp &r, LaunchBuilder &k) {
  Operation &inner = *r.op;
  Value x = r.in(0);
  std::string t = cudaType(elementType(x));
  std::string tag = planDtypeName(elementType(x));
  int64_t dim = lastDim(x), rows = numElements(x) / std::max<int64_t>(dim, 1);
  int64_t threads = rowThreads(dim);
  bool isGrad = isa<nn::RMSNormGradOp, nn::LayerNormGradOp>(inner);
  bool isLayer = isa<nn::LayerNormOp, nn::LayerNormGradOp>(inner);
  std::string fn =
      std::string(isLayer ? "layerNorm" : "rmsNorm") + (isGrad ? "Grad" : "");
  SmallVector<std::string> call;
  if (isGrad) {
    call = {k.value(r.in(0), false, "dy"), k.value(r.in(1), false, "x"),
            k.value(r.in(2), false, "w")};
  } else {
    call = {k.value(r.in(0), false, "x"), k.value(r.in(1), false, "w")};
    if (isLayer)
      call.push_back(inner.getNumOperands() > 2 ? k.value(r.in(2), false, "b")
                                                : k.null(t, "b"));
  }
  call.push_back(k.value(r.out(0), true, isGrad ? "dx" : "y"));
  k.integer("rows", rows);
  k.integer("dim", dim);
  k.number("eps", epsilonOf(&inner));
  k.launch(formatv("kiln_{0}_{1}_t{2}", fn, tag, threads).str(),
           formatv("  kiln::dev::{0}<{1}, {2}>({3}, rows, (int)dim, eps);\n",
                   fn, t, threads, llvm::join(call, ", "))
               .str(),
           {std::min(rows, kMaxGrid)}, threads);
  return success();
}

LogicalResult cuda::emitNormWeightGrad(const RegionOp &r, LaunchBuilder &k) {
  Operation &inner = *r.op;
  bool isLayer = isa<nn::LayerNormWeightGradOp>(inner);
  Value dy = r.in(0), input = r.in(1);
  std::string t = cudaType(elementType(dy));
  std::string tag = planDtypeName(elementType(dy));
  int64_t dim = lastDim(input);
  int64_t rows = numElements(input) / dim;
  int64_t chunks = columnChunks(rows);
  int64_t statsBytes = launchRowStats(k, input, isLayer, epsilonOf(&inner));
  k.step().scratchBytes = statsBytes + chunks * dim * 4;
  k.value(dy, false, "dy");
  k.value(input, false, "x");
  std::string constStats = statsParams(k, "const float", isLayer, rows);
  k.scratch("float", "partials", statsBytes);
  k.integer("rows", rows);
  k.integer("dim", dim);
  std::string fn =
      isLayer ? "layerNormWeightGradPartials" : "rmsNormWeightGradPartials";
  k.launch(formatv("kiln_{0}_{1}", fn, tag).str(),
           formatv("  kiln::dev::{0}<{1}>(dy, x, {2}, partials, rows, "
                   "(int)dim);\n",
                   fn, t, constStats)
               .str(),
           {ceilDiv(dim, kElementwiseThreads), chunks}, kElementwiseThreads);
  // The result may be the FP32 accumulator of BF16 inputs (nn-fuse's
  // epilogue group).
  Value dw = r.out(0);
  finishColumns(k, statsBytes, chunks, dw, dim, planDtypeName(elementType(dw)),
                cudaType(elementType(dw)));
  return success();
}

LogicalResult cuda::emitColumnSum(const RegionOp &r, LaunchBuilder &k) {
  Value x = r.in(0);
  std::string t = cudaType(elementType(x));
  std::string tag = planDtypeName(elementType(x));
  int64_t dim = lastDim(x), rows = numElements(x) / std::max<int64_t>(dim, 1);
  int64_t chunks = columnChunks(rows);
  k.step().scratchBytes = chunks * dim * 4;
  k.value(x, false, "x");
  k.scratch("float", "partials", 0);
  k.integer("rows", rows);
  k.integer("cols", dim);
  k.launch("kiln_column_sum_" + tag,
           formatv("  kiln::dev::columnSumPartials<{0}>(x, partials, rows, "
                   "(int)cols);\n",
                   t)
               .str(),
           {ceilDiv(dim, kElementwiseThreads), chunks}, kElementwiseThreads);
  // The result may be the FP32 accumulator of a BF16 input (nn-fuse's
  // epilogue group).
  Value y = r.out(0);
  finishColumns(k, 0, chunks, y, dim, planDtypeName(elementType(y)),
                cudaType(elementType(y)));
  return success();
}

LogicalResult
cuda::emitLayerNormParamGrads(tile::FusedOp fused,
                              nn::LayerNormWeightGradOp weightGrad,
                              LaunchBuilder &k) {
  // The region's inputs are (dy, x) and its results (dw, db).
  Value dy = fused.getInputs()[0], input = fused.getInputs()[1];
  Value dw = fused.getResult(0), db = fused.getResult(1);
  std::string t = cudaType(elementType(dy));
  std::string tag = planDtypeName(elementType(dy));
  int64_t dim = lastDim(input);
  int64_t rows = numElements(input) / dim;
  int64_t chunks = columnChunks(rows);
  int64_t statsBytes =
      launchRowStats(k, input, /*isLayer=*/true, epsilonOf(weightGrad));
  int64_t partialsBytes = chunks * dim * 4;
  k.step().scratchBytes = statsBytes + 2 * partialsBytes;
  k.value(dy, false, "dy");
  k.value(input, false, "x");
  std::string stats = statsParams(k, "const float", /*isLayer=*/true, rows);
  k.scratch("float", "wPartials", statsBytes);
  k.scratch("float", "bPartials", statsBytes + partialsBytes);
  k.integer("rows", rows);
  k.integer("dim", dim);
  k.launch(formatv("kiln_layerNormParamGradPartials_{0}", tag).str(),
           formatv("  kiln::dev::layerNormParamGradPartials<{0}>(dy, x, {1}, "
                   "wPartials, bPartials, rows, (int)dim);\n",
                   t, stats)
               .str(),
           {ceilDiv(dim, kElementwiseThreads), chunks}, kElementwiseThreads);
  finishColumns(k, statsBytes, chunks, dw, dim, planDtypeName(elementType(dw)),
                cudaType(elementType(dw)));
  finishColumns(k, statsBytes + partialsBytes, chunks, db, dim,
                planDtypeName(elementType(db)), cudaType(elementType(db)));
  return success();
}

nn::LayerNormWeightGradOp cuda::layerNormParamGrads(tile::FusedOp fused) {
  Block &body = fused.getBody().front();
  auto ops = body.without_terminator();
  if (std::distance(ops.begin(), ops.end()) != 2 || body.getNumArguments() != 2)
    return {};
  auto weightGrad = dyn_cast<nn::LayerNormWeightGradOp>(*ops.begin());
  auto sum = dyn_cast<nn::ColumnSumOp>(*std::next(ops.begin()));
  auto yield = cast<tile::YieldOp>(body.getTerminator());
  if (!weightGrad || !sum || weightGrad.getGrad() != body.getArgument(0) ||
      weightGrad.getInput() != body.getArgument(1) ||
      sum.getInput() != body.getArgument(0) ||
      yield.getValues() != ValueRange{weightGrad.getResult(), sum.getResult()})
    return {};
  return weightGrad;
}
