//===- Embedding.cpp - CUDA for the embedding and its gradient ------------===//
//
// The lookup is block per id; the gradient is a gather over vocabulary
// ranges (runtime/cuda/device/Embedding.cuh), thread per column, so it
// needs no atomics and accumulates in an FP32 table.
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"
#include "compiler/translate/cuda/EmitterSupport.h"

#include <algorithm>

using namespace mlir;
using namespace kiln;
using namespace kiln::cuda;
using llvm::formatv;

namespace {

/// The embedding gradient's vocabulary ranges: at least this many ids each
/// (each block scans every id of the batch), and at most 65535 ranges
/// (grid.y).
constexpr int64_t kEmbeddingGradIdsPerRange = 64;

} // namespace

LogicalResult cuda::emitEmbedding(const RegionOp &r, LaunchBuilder &k) {
  Value x = r.in(0), ids = r.in(1);
  std::string t = cudaType(elementType(x));
  std::string tag = planDtypeName(elementType(x));
  int64_t dim = lastDim(x);
  int64_t threads = rowThreads(dim);
  k.value(x, false, "table");
  k.value(ids, false, "ids");
  k.value(r.out(0), true, "y");
  k.integer("numIds", numElements(ids));
  k.integer("vocab", cast<RankedTensorType>(x.getType()).getDimSize(0));
  k.integer("dim", dim);
  k.errorFlag();
  k.launch(formatv("kiln_embedding_{0}_t{1}", tag, threads).str(),
           formatv("  kiln::dev::embedding<{0}, {1}>(table, ids, y, numIds, "
                   "(int)vocab, (int)dim, error);\n",
                   t, threads)
               .str(),
           {std::min(numElements(ids), kMaxGrid)}, threads);
  return success();
}

LogicalResult cuda::emitEmbeddingGrad(tile::EmbeddingGradOp grad,
                                      LaunchBuilder &k) {
  Value dy = grad.getGrad(), table = grad.getResult();
  if (!elementType(table).isF32())
    return grad->emitOpError("cuda: the embedding gradient accumulates in an "
                             "f32 result (nn-lower-to-tile makes it so)");
  int64_t dim = lastDim(dy);
  k.value(dy, false, "dy");
  k.value(grad.getIds(), false, "ids");
  k.value(table, true, "dtable");
  k.integer("numIds", numElements(grad.getIds()));
  k.integer("vocab", cast<RankedTensorType>(table.getType()).getDimSize(0));
  k.integer("dim", dim);
  int64_t vocab = cast<RankedTensorType>(table.getType()).getDimSize(0);
  int64_t ranges = ceilDiv(
      vocab, std::max(kEmbeddingGradIdsPerRange, ceilDiv(vocab, 65535)));
  k.launch("kiln_embedding_grad_" + planDtypeName(elementType(dy)),
           formatv("  kiln::dev::embeddingGradColumns<{0}>(dy, ids, dtable, "
                   "numIds, (int)vocab, (int)dim);\n",
                   cudaType(elementType(dy)))
               .str(),
           {ceilDiv(dim, kElementwiseThreads), ranges}, kElementwiseThreads);
  return success();
}
