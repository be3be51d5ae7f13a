//===- CrossEntropy.cpp - CUDA for the cross-entropy loss -----------------===//
//
// Block per row of logits, then a single-block mean over the valid rows
// (runtime/cuda/device/CrossEntropy.cuh); the gradient first counts the
// valid targets in one block. Both go through the step's scratch rather
// than atomics, so the loss is deterministic. linear_cross_entropy runs
// the same row work per chunk of tokens between the cuBLASLt GEMMs the
// backend issues (docs/plan.md).
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"
#include "compiler/translate/cuda/EmitterSupport.h"

using namespace mlir;
using namespace kiln;
using namespace kiln::cuda;
using llvm::formatv;

namespace {

/// The mean loss over the rows whose target is not `ignoreIndex`, from the
/// per-row losses at `rowLossOffset` of the step's scratch: one block.
void launchLossReduce(LaunchBuilder &k, int64_t rowLossOffset, Value targets,
                      Value loss, int64_t rows, int64_t ignoreIndex) {
  k.scratch("const float", "rowLoss", rowLossOffset);
  k.value(targets, false, "targets");
  k.value(loss, true, "loss");
  k.integer("rows", rows);
  k.integer("ignoreIndex", ignoreIndex);
  k.launch("kiln_cross_entropy_reduce",
           "  kiln::dev::crossEntropyReduce<1024>(rowLoss, targets, loss, "
           "rows, ignoreIndex);\n",
           {1}, 1024);
}

} // namespace

LogicalResult cuda::emitCrossEntropy(tile::CrossEntropyOp loss,
                                     LaunchBuilder &k) {
  Value logits = loss.getLogits();
  int64_t vocab = lastDim(logits), rows = numElements(logits) / vocab;
  std::string t = cudaType(elementType(logits));
  k.step().scratchBytes = rows * 4;
  int64_t threads = rowThreads(vocab);
  k.value(logits, false, "logits");
  k.value(loss.getTargets(), false, "targets");
  k.scratch("float", "rowLoss", 0);
  k.integer("rows", rows);
  k.integer("vocab", vocab);
  k.integer("ignoreIndex", loss.getIgnoreIndex());
  k.errorFlag();
  k.launch(formatv("kiln_cross_entropy_rows_{0}_t{1}",
                   planDtypeName(elementType(logits)), threads)
               .str(),
           formatv("  kiln::dev::crossEntropyRows<{0}, {1}>(logits, "
                   "targets, rowLoss, rows, (int)vocab, ignoreIndex, "
                   "error);\n",
                   t, threads)
               .str(),
           {std::min(rows, kMaxGrid)}, threads);
  launchLossReduce(k, 0, loss.getTargets(), loss.getLoss(), rows,
                   loss.getIgnoreIndex());
  return success();
}

LogicalResult cuda::emitCrossEntropyGrad(tile::CrossEntropyGradOp grad,
                                         LaunchBuilder &k) {
  Value logits = grad.getLogits();
  int64_t vocab = lastDim(logits), rows = numElements(logits) / vocab;
  std::string t = cudaType(elementType(logits));
  k.step().scratchBytes = 4;
  k.value(grad.getTargets(), false, "targets");
  k.integer("rows", rows);
  k.integer("ignoreIndex", grad.getIgnoreIndex());
  k.scratch("float", "count", 0);
  k.launch("kiln_count_valid",
           "  kiln::dev::countValid<1024>(targets, rows, ignoreIndex, "
           "count);\n",
           {1}, 1024);
  int64_t threads = rowThreads(vocab);
  k.value(grad.getGrad(), false, "dloss");
  k.scratch("const float", "count", 0);
  k.value(logits, false, "logits");
  k.value(grad.getTargets(), false, "targets");
  k.value(grad.getResult(), true, "dlogits");
  k.integer("rows", rows);
  k.integer("vocab", vocab);
  k.integer("ignoreIndex", grad.getIgnoreIndex());
  k.launch(formatv("kiln_cross_entropy_grad_{0}_t{1}",
                   planDtypeName(elementType(logits)), threads)
               .str(),
           formatv("  kiln::dev::crossEntropyGrad<{0}, {1}>(dloss, count, "
                   "logits, targets, dlogits, rows, (int)vocab, "
                   "ignoreIndex);\n",
                   t, threads)
               .str(),
           {std::min(rows, kMaxGrid)}, threads);
  return success();
}

/// Three launches: count the valid targets; the row kernel, once per chunk
/// after the chunk's logits GEMM (the backend sets its last argument, the
/// chunk index); the mean of the row losses. Scratch as
/// plan::linearCrossEntropyScratch lays it out.
LogicalResult cuda::emitLinearCrossEntropy(tile::LinearCrossEntropyOp op,
                                           LaunchBuilder &k) {
  Value input = op.getInput();
  int64_t vocab =
      cast<RankedTensorType>(op.getWeight().getType()).getDimSize(0);
  int64_t rows = numElements(op.getTargets());
  int64_t chunkRows = op.getChunkRows();
  bool bf16 = elementType(input).isBF16();
  plan::LinearCrossEntropyScratch layout =
      plan::linearCrossEntropyScratch(rows, chunkRows, vocab, bf16);
  k.step().library = std::string(plan::kCublasLt);
  k.step().scratchBytes = layout.bytes;
  k.value(op.getTargets(), false, "targets");
  k.integer("rows", rows);
  k.integer("ignoreIndex", op.getIgnoreIndex());
  k.scratch("float", "count", layout.count);
  k.launch("kiln_count_valid",
           "  kiln::dev::countValid<1024>(targets, rows, ignoreIndex, "
           "count);\n",
           {1}, 1024);
  std::string t = cudaType(elementType(input));
  int64_t threads = rowThreads(vocab);
  // The kernel writes the logits scratch: FP32, the gradient over the
  // logits (one pointer: the parameters are __restrict__); BF16, the logits
  // rounded to BF16, the gradient into the step's scratch.
  k.value(op.getLogitsScratch(), /*output=*/true, "logits");
  k.value(op.getTargets(), false, "targets");
  k.scratch("float", "rowLoss", layout.rowLoss);
  k.value(op.getGrad(), false, "dloss");
  k.scratch("const float", "count", layout.count);
  if (bf16)
    k.scratch(t, "dlogits", layout.dlogits);
  k.integer("rows", rows);
  k.integer("chunkRows", chunkRows);
  k.integer("vocab", vocab);
  k.integer("ignoreIndex", op.getIgnoreIndex());
  k.errorFlag();
  k.integer("chunk", 0);
  bool roundLogits = bf16 && !op.getFp32Logits();
  k.launch(formatv("kiln_linear_cross_entropy_rows_{0}_t{1}{2}",
                   planDtypeName(elementType(input)), threads,
                   roundLogits ? "" : "_fp32_logits")
               .str(),
           formatv("  kiln::dev::linearCrossEntropyRows<{0}, {1}, {3}>(logits, "
                   "targets, rowLoss, dloss, count, {2}, rows, chunkRows, "
                   "(int)vocab, ignoreIndex, error, chunk);\n",
                   t, threads, bf16 ? "dlogits" : "logits",
                   roundLogits ? "true" : "false")
               .str(),
           {std::min(chunkRows, kMaxGrid)}, threads);
  launchLossReduce(k, layout.rowLoss, op.getTargets(), op.getLoss(), rows,
                   op.getIgnoreIndex());
  return success();
}
