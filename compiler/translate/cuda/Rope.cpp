//===- Rope.cpp - CUDA for rotary position embedding ----------------------===//
//
// Block per token (runtime/cuda/device/Rope.cuh): threads split the
// frequencies of one head, so the block size follows half the row width.
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"
#include "compiler/translate/cuda/EmitterSupport.h"

using namespace mlir;
using namespace kiln;
using namespace kiln::cuda;
using llvm::formatv;

LogicalResult cuda::emitRope(nn::RoPEOp rope, const RegionOp &r,
                             LaunchBuilder &k) {
  Value x = r.in(0);
  std::string t = cudaType(elementType(x));
  std::string tag = planDtypeName(elementType(x));
  int64_t dim = lastDim(x);
  auto shape = cast<RankedTensorType>(x.getType()).getShape();
  int64_t heads = rope.getNumHeads();
  int64_t threads = rowThreads(dim / 2);
  k.value(x, false, "x");
  rope.getPositions() ? k.value(r.in(1), false, "positions")
                      : k.null("int", "positions");
  k.value(r.out(0), true, "y");
  k.integer("batch", shape[0]);
  k.integer("seq", shape[1]);
  k.integer("heads", heads);
  k.integer("headDim", dim / heads);
  k.number("theta", rope.getTheta().convertToDouble());
  k.integer("inverse", rope.getInverse());
  k.launch(formatv("kiln_rope_{0}_t{1}", tag, threads).str(),
           formatv("  kiln::dev::rope<{0}, {1}>(x, positions, y, (int)batch, "
                   "(int)seq, (int)heads, (int)headDim, theta, inverse != "
                   "0);\n",
                   t, threads)
               .str(),
           {std::min(shape[0] * shape[1], kMaxGrid)}, threads);
  return success();
}
