//===- Plan.h - The training-step plan --------------------------*- C++ -*-===//
//
// The runtime's view of the plan that `kiln compile` writes: values with
// arena offsets, inputs, parameters and outputs, and the ordered kernel
// steps. Parsing validates everything a backend relies on (ids in range,
// buffers inside the arena, known kernels) so that a corrupt or mismatched
// plan is an error, not a crash.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_PLAN_H
#define KILN_RUNTIME_PLAN_H

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::rt {

/// The plan format version this runtime reads.
constexpr int kPlanVersion = 1;

enum class ElemType { F32, BF16, I32, I64, F8E4M3, F8E5M2 };

std::size_t elemSize(ElemType type);
const char *elemName(ElemType type);

struct TensorInfo {
  ElemType dtype = ElemType::F32;
  std::vector<int64_t> shape;
  /// Element count and bytes; throw Error where they overflow int64 (never
  /// for a parsed plan, whose tensors Plan::parse checked).
  int64_t numElements() const;
  int64_t bytes() const;
};

struct ValueInfo : TensorInfo {
  int64_t offset = 0;
};

/// One op inside a fused step. Operands and results index the step's local
/// values: its inputs first, then the temporaries.
struct BodyOp {
  std::string op;
  std::vector<int64_t> operands;
  std::vector<int64_t> results;
  nlohmann::json attrs;
};

/// An argument of a CUDA kernel launch.
struct CudaArg {
  enum class Kind { Value, Null, Scratch, ErrorFlag, Int, Float, Double };
  Kind kind = Kind::Null;
  int64_t integer = 0; ///< value id, scratch offset or the integer
  double number = 0;
};

struct CudaLaunch {
  std::string kernel;
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  /// Dynamic shared memory, bytes.
  unsigned sharedBytes = 0;
  std::vector<CudaArg> args;
};

struct Step {
  std::string kernel;
  char chunk =
      'F'; ///< F forward, B input gradients, W weight gradients, O optimizer.
  std::vector<int64_t> inputs;
  std::vector<int64_t> outputs;
  nlohmann::json attrs;
  // tile.fused only.
  std::vector<BodyOp> body;
  std::map<int64_t, TensorInfo> temporaries;
  std::vector<int64_t> yield;
  // How the CUDA backend runs it: a library ("cublasLt") or launches.
  std::string cudaLibrary;
  std::vector<CudaLaunch> cudaLaunches;
  bool cudaErrorFlag = false;
};

struct Parameter {
  std::string name;
  std::string init;
  int64_t value = -1;
  int64_t expAvg = -1;
  int64_t expAvgSq = -1;
  int64_t grad = -1;
};

struct Plan {
  nlohmann::json model;
  int64_t arenaBytes = 0;
  int64_t persistentBytes = 0;
  int64_t largestBufferBytes = 0;
  std::vector<ValueInfo> values;
  std::map<std::string, int64_t> inputs;
  std::map<std::string, int64_t> outputs;
  std::vector<Parameter> parameters;
  std::vector<Step> steps;

  // The CUDA kernels (name -> NVRTC source) and precompiled cubins
  // (arch -> name -> cubin), when the plan was compiled for CUDA.
  bool hasCuda = false;
  std::string cudaHeader;
  int64_t cudaScratchBytes = 0;
  std::map<std::string, std::string> cudaKernels;
  std::map<std::string, std::map<std::string, std::vector<std::byte>>>
      cudaCubins;

  /// Parses and validates plan JSON; `source` names it in errors.
  static Plan parse(const std::string &text, const std::string &source);

  /// The value of a named input or output; throws Error if absent.
  int64_t input(const std::string &name) const;
  int64_t output(const std::string &name) const;
  int64_t modelInt(const std::string &key) const;
};

/// Base64 (RFC 4648) for cubins embedded in a plan.
std::string encodeBase64(std::span<const std::byte> bytes);
std::vector<std::byte> decodeBase64(std::string_view text,
                                    const std::string &source);

} // namespace kiln::rt

#endif // KILN_RUNTIME_PLAN_H
