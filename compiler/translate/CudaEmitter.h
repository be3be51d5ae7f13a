//===- CudaEmitter.h - CUDA C++ for tile kernels ----------------*- C++ -*-===//
//
// Emits, for every step of a memory-planned training step, the CUDA kernels
// that run it and their launches: one NVRTC translation unit per kernel, in
// the style of DeepGEMM's JIT — a generated `extern "C" __global__` wrapper
// that instantiates a template of the runtime's device library
// (runtime/cuda/device/kiln_device.cuh) with compile-time constants, or a
// generated body for elementwise fused regions (the device library's
// 16-byte loads and stores, FP32 arithmetic, rounding on store). GEMMs run
// through cuBLASLt and need no source. One emitter per kernel family, in
// compiler/translate/cuda/ (mirroring runtime/host/ and the device
// library's family headers); CudaEmitter.cpp dispatches to them.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_COMPILER_TRANSLATE_CUDAEMITTER_H
#define KILN_COMPILER_TRANSLATE_CUDAEMITTER_H

#include "runtime/plan/Schema.h"

#include "mlir/IR/Operation.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/JSON.h"

#include <map>
#include <string>

namespace kiln {

/// The CUDA side of one plan step: its launches, or the library that runs
/// it, and the scratch memory its launches share.
struct CudaStep {
  std::string library;        ///< "cublasLt" for GEMMs, empty otherwise
  llvm::json::Array launches; ///< {kernel, grid, block, args}
  int64_t scratchBytes = 0;
  bool usesErrorFlag = false;
};

class CudaEmitter {
public:
  /// `valueIds` maps the step's values to their plan ids.
  explicit CudaEmitter(const llvm::DenseMap<mlir::Value, int64_t> &valueIds)
      : valueIds(valueIds) {}

  /// The launches of one top-level op of the planned function.
  mlir::FailureOr<CudaStep> emit(mlir::Operation *op);

  /// Every kernel emitted so far: name -> complete NVRTC source. Identical
  /// kernels (same kind, dtypes and compile-time constants) are emitted once
  /// and shared by all the steps that launch them.
  const std::map<std::string, std::string> &kernels() const { return sources; }

private:
  friend class LaunchBuilder;
  const llvm::DenseMap<mlir::Value, int64_t> &valueIds;
  std::map<std::string, std::string> sources;
};

/// The header every generated kernel includes; the runtime provides it to
/// NVRTC from memory.
constexpr const char *kDeviceHeader = plan::kDeviceHeader;

} // namespace kiln

#endif // KILN_COMPILER_TRANSLATE_CUDAEMITTER_H
