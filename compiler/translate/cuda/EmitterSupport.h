//===- EmitterSupport.h - Shared pieces of the CUDA emitters ----*- C++ -*-===//
//
// What the per-family CUDA emitters (compiler/translate/cuda/*.cpp) share:
// the launch constants, type and shape helpers, and LaunchBuilder, which
// collects one kernel's parameters with the matching plan launch arguments.
// Each family emits, like DeepGEMM's JIT, a small `extern "C" __global__`
// wrapper that includes the device library (runtime/cuda/device/) and
// instantiates one of its templates with compile-time constants.
//
// Internal to the translation library: CudaEmitter.cpp dispatches to the
// `emit*` functions declared at the end.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_COMPILER_TRANSLATE_CUDA_EMITTERSUPPORT_H
#define KILN_COMPILER_TRANSLATE_CUDA_EMITTERSUPPORT_H

#include "compiler/translate/CudaEmitter.h"

#include "dialects/nn/NNOps.h"
#include "dialects/tile/TileOps.h"
#include "runtime/plan/Schema.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/FormatVariadic.h"

#include <string>
#include <vector>

namespace kiln {

namespace cuda {

/// Threads of the generic elementwise and grid-stride kernels.
constexpr int64_t kElementwiseThreads = 256;
/// Parameters per launch of a multi-tensor AdamW: 5 arguments each (4
/// pointers, a size), 64 of them in 2.6 KiB of the 4 KiB a launch may pass.
constexpr unsigned kAdamWTensorsPerLaunch = 64;
/// Elements per thread of vectorised elementwise kernels: 16 bytes of BF16.
constexpr int64_t kVectorWidth = 8;
/// The largest grid.x used by grid-stride kernels.
constexpr int64_t kMaxGrid = 65535 * 16;

inline mlir::Type elementType(mlir::Value v) {
  return mlir::cast<mlir::RankedTensorType>(v.getType()).getElementType();
}

inline int64_t numElements(mlir::Value v) {
  return mlir::cast<mlir::RankedTensorType>(v.getType()).getNumElements();
}

inline int64_t lastDim(mlir::Value v) {
  auto type = mlir::cast<mlir::RankedTensorType>(v.getType());
  return type.getRank() == 0 ? 1 : type.getShape().back();
}

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// The CUDA C++ storage type of a plan element type ("" for others).
std::string cudaType(mlir::Type type);

/// Threads for a block that works on one row of `width` elements, each
/// thread taking a 16-byte vector: a power of two in [32, 1024].
int64_t rowThreads(int64_t width);

/// A name for a generated body: its kind and a hash of its text, so that
/// identical regions share one kernel.
std::string hashedName(llvm::StringRef kind, llvm::StringRef body);

} // namespace cuda

/// Collects one kernel's parameters and the matching launch arguments, then
/// registers its source with the emitter.
class LaunchBuilder {
public:
  LaunchBuilder(CudaEmitter &emitter, CudaStep &step)
      : emitter(emitter), currentStep(step) {}

  /// The step whose launches this builder records (its scratch size and
  /// error flag are the emitter's to set).
  CudaStep &step() { return currentStep; }

  /// A pointer parameter bound to a plan value.
  std::string value(mlir::Value v, bool output, llvm::StringRef name);
  /// A pointer that is null (an absent optional operand).
  std::string null(llvm::StringRef type, llvm::StringRef name);
  /// A pointer into the step's scratch memory.
  std::string scratch(llvm::StringRef type, llvm::StringRef name,
                      int64_t offset);
  /// The device flag a kernel sets on bad data (an out-of-range id).
  std::string errorFlag();
  std::string integer(llvm::StringRef name, int64_t v);
  /// The process's data-parallel rank (a `long long`, set at launch): how
  /// ZeRO-1's kernels find their shard.
  std::string rank(llvm::StringRef name);
  std::string number(llvm::StringRef name, double v);
  /// A double, for constants FP32 cannot hold well enough (AdamW's betas:
  /// 1 - 0.999f is off by 1e-5 relative).
  std::string real(llvm::StringRef name, double v);

  /// Registers the kernel `name` with `body` and records its launch, with
  /// `sharedBytes` of dynamic shared memory. `minBlocksPerSm` > 0 becomes
  /// the second `__launch_bounds__` argument: 1 lets ptxas give each thread
  /// every register the block size allows (the flash kernels: without it,
  /// NVRTC 13.0 holds the head-dim-32 backward to 96 registers and spills).
  void launch(llvm::StringRef name, llvm::StringRef body,
              llvm::ArrayRef<int64_t> grid, int64_t threads,
              int64_t sharedBytes = 0, int64_t minBlocksPerSm = 0);

  /// The next launch runs only on devices of at least this compute
  /// capability (Schema.h's major x 10 + minor).
  void requireComputeCapability(int capability) {
    minComputeCapability = capability;
  }

private:
  static llvm::StringRef argKey(plan::LaunchArgKind kind) {
    return llvm::StringRef(plan::launchArgKey(kind));
  }

  CudaEmitter &emitter;
  CudaStep &currentStep;
  int minComputeCapability = plan::kAnyComputeCapability;
  std::vector<std::string> params;
  llvm::json::Array args;
};

namespace cuda {

/// The one op of a fused region that is not elementwise, and the step
/// values its operands and results stand for.
struct RegionOp {
  mlir::Operation *op;
  const llvm::DenseMap<mlir::Value, mlir::Value> &outer;

  mlir::Value in(unsigned i) const { return outer.lookup(op->getOperand(i)); }
  mlir::Value out(unsigned i) const { return outer.lookup(op->getResult(i)); }
};

// One emitter per kernel family; each records the launches of one step.

// Elementwise.cpp: fills, elementwise regions, split and concat.
mlir::LogicalResult emitFill(mlir::arith::ConstantOp op, LaunchBuilder &k);
/// True for the nn ops whose CUDA code is generated element by element.
bool isElementwise(mlir::Operation *op);
/// The FP32 expressions of an elementwise op's results, from its operands'.
llvm::SmallVector<std::string>
elementExpressions(mlir::Operation *op, llvm::ArrayRef<std::string> in);
mlir::LogicalResult emitElementwiseRegion(tile::FusedOp op, LaunchBuilder &k);
mlir::LogicalResult emitSplitConcat(const RegionOp &r, LaunchBuilder &k);

// RowRegion.cpp: one kernel for a region of row-local ops with one row
// count (tile::rowWiseRows), `rows` rows.
mlir::LogicalResult emitRowRegion(tile::FusedOp op, int64_t rows,
                                  LaunchBuilder &k);

// Norms.cpp: RMSNorm and LayerNorm, their gradients, column sums.
mlir::LogicalResult emitNorm(const RegionOp &r, LaunchBuilder &k);
mlir::LogicalResult emitNormWeightGrad(const RegionOp &r, LaunchBuilder &k);
mlir::LogicalResult emitColumnSum(const RegionOp &r, LaunchBuilder &k);
/// A region of a LayerNorm's weight gradient and the column sum of the same
/// gradient (nn-fuse's norm-param-grads): inputs (dy, x), results (dw, db).
mlir::LogicalResult
emitLayerNormParamGrads(tile::FusedOp fused,
                        nn::LayerNormWeightGradOp weightGrad, LaunchBuilder &k);
/// The weight gradient of a norm-param-grads region, if `fused` is one.
nn::LayerNormWeightGradOp layerNormParamGrads(tile::FusedOp fused);

// Rope.cpp.
mlir::LogicalResult emitRope(nn::RoPEOp op, const RegionOp &r,
                             LaunchBuilder &k);

// Embedding.cpp.
mlir::LogicalResult emitEmbedding(const RegionOp &r, LaunchBuilder &k);
mlir::LogicalResult emitEmbeddingGrad(tile::EmbeddingGradOp op,
                                      LaunchBuilder &k);

// CrossEntropy.cpp.
mlir::LogicalResult emitCrossEntropy(tile::CrossEntropyOp op, LaunchBuilder &k);
mlir::LogicalResult emitCrossEntropyGrad(tile::CrossEntropyGradOp op,
                                         LaunchBuilder &k);
/// The row kernels of linear_cross_entropy; the CUDA backend runs its GEMMs
/// in cuBLASLt between them.
mlir::LogicalResult emitLinearCrossEntropy(tile::LinearCrossEntropyOp op,
                                           LaunchBuilder &k);

// Attention.cpp: the exact kernels and FlashAttention-2 on tensor cores.
mlir::LogicalResult emitRopeTable(tile::RoPETableOp op, LaunchBuilder &k);
mlir::LogicalResult emitAttentionForward(tile::FlashAttentionFwdOp op,
                                         LaunchBuilder &k);
mlir::LogicalResult emitAttentionBackward(tile::FlashAttentionBwdOp op,
                                          LaunchBuilder &k);

// Optimizer.cpp: the global gradient norm, AdamW and gradient accumulation.
mlir::LogicalResult emitGlobalNorm(tile::GlobalNormOp op, LaunchBuilder &k);
mlir::LogicalResult emitAdamW(tile::AdamWOp op, LaunchBuilder &k);
mlir::LogicalResult emitGradAccumulate(tile::GradAccumulateOp op,
                                       LaunchBuilder &k);

} // namespace cuda
} // namespace kiln

#endif // KILN_COMPILER_TRANSLATE_CUDA_EMITTERSUPPORT_H
