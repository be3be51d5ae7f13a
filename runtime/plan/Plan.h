//===- Plan.h - The training-step plan --------------------------*- C++ -*-===//
//
// The runtime's view of the plan that `kiln compile` writes: values with
// arena offsets, inputs, parameters and outputs, and the ordered kernel
// steps. Parsing validates everything a backend relies on (ids in range,
// buffers inside the arena, known kernels) so that a corrupt or mismatched
// plan is an error, not a crash. Its format is runtime/plan/Schema.h.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_PLAN_PLAN_H
#define KILN_RUNTIME_PLAN_PLAN_H

#include "runtime/plan/Schema.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kiln::rt {

/// The plan format version this runtime reads.
constexpr int kPlanVersion = plan::kVersion;

using plan::BodyOpKind;
using plan::ElemType;
using plan::StepKind;

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

/// The rows a split or concat body op copies part by part: the whole's rows
/// (runs of its last dimension) when it partitions the last dimension, 1
/// when it partitions the first (a packed weight: each part is one run of
/// its elements, back to back). The parts agree with the whole in every
/// other dimension (the verifier's rule), so `part`, any one of them, tells
/// which.
int64_t partitionRows(const TensorInfo &whole, const TensorInfo &part);

struct ValueInfo : TensorInfo {
  int64_t offset = 0;
  /// Elements between the starts of consecutive rows (runs of the last
  /// dimension), when that is more than the last dimension: a row-strided
  /// view into a packed tensor (docs/plan.md). 0 when rows are contiguous.
  int64_t rowStride = 0;

  bool strided() const { return rowStride != 0; }
  /// The last dimension (1 for a scalar).
  int64_t lastDim() const { return shape.empty() ? 1 : shape.back(); }
  /// Elements between row starts: rowStride, else the last dimension.
  int64_t pitch() const { return strided() ? rowStride : lastDim(); }
  /// Bytes from the first element to just past the last: bytes() unless
  /// strided. Throws Error where they overflow int64.
  int64_t extentBytes() const;
};

/// One op inside a fused step. Operands and results index the step's local
/// values: its inputs first, then the temporaries. Only the attributes of
/// its kind are set (each required in the plan).
struct BodyOp {
  BodyOpKind kind = BodyOpKind::Add;
  std::vector<int64_t> operands;
  std::vector<int64_t> results;
  double epsilon = 0;      ///< rms_norm*, layer_norm*
  int64_t numHeads = 0;    ///< rope
  double theta = 0;        ///< rope
  bool inverse = false;    ///< rope
  bool tanhApprox = false; ///< gelu, gelu_grad
  std::string_view name() const { return plan::bodyOpName(kind); }
};

/// An argument of a CUDA kernel launch.
struct CudaArg {
  using Kind = plan::LaunchArgKind;
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
  /// major x 10 + minor; the runtime refuses a device below it.
  int minComputeCapability = plan::kAnyComputeCapability;
  std::vector<CudaArg> args;
};

/// How the CUDA backend runs a step: a library ("cublasLt") or launches.
struct CudaStep {
  std::string library;
  std::vector<CudaLaunch> launches;
  bool errorFlag = false;
};

// The typed steps, one per StepKind (in its order). Inputs and outputs are
// those of docs/plan.md; Plan::parse checked each against its attributes.
struct FillStep {
  double value = 0;
};
struct GemmStep {
  int64_t batch = 0, m = 0, n = 0, k = 0;
  bool transposeA = false, transposeB = false;
  /// What follows the product (docs/plan.md): its extra inputs and outputs.
  plan::GemmEpilogue epilogue = plan::GemmEpilogue::None;
};
struct FlashAttentionAttrs {
  int64_t numHeads = 0, numKvHeads = 0;
  bool causal = false;
  double scale = 0;
  int64_t blockQ = 0, blockK = 0, numWarps = 0, numStages = 0;
  /// Q and K rotated by a rope_table input (the last), dq and dk back.
  bool rope = false;
};
struct FlashForwardStep : FlashAttentionAttrs {};
struct FlashBackwardStep : FlashAttentionAttrs {};
struct CrossEntropyStep {
  int64_t ignoreIndex = 0;
};
struct CrossEntropyGradStep {
  int64_t ignoreIndex = 0;
};
struct EmbeddingGradStep {};
struct RopeTableStep {
  double theta = 0;
};
/// ZeRO-1 (`shards` > 1): the norm of this rank's shards of the inputs,
/// the squares summed over the data-parallel ranks.
struct GlobalNormStep {
  int64_t shards = 1;
};
/// Inputs: N accumulators, N gradients, the micro-step index; outputs: the
/// N accumulators, in place.
struct GradAccumulateStep {};
/// Inputs: N tensors; outputs: the same N, in place, each the `reduction`
/// of the ranks' values over the `groupSize` ranks of `group`. With
/// `lastMicroStep` it runs only in the step's last micro-batch.
struct AllReduceStep {
  plan::Reduction reduction = plan::Reduction::Sum;
  std::string group;
  int64_t groupSize = 1;
  bool lastMicroStep = false;
};
/// As all_reduce, but only this rank's shard of each tensor (plan::shardOf
/// over `groupSize` ranks) holds the reduction; the rest keeps its value.
struct ReduceScatterStep : AllReduceStep {};
/// Inputs: N tensors; outputs: the same N, in place, shard r of each from
/// rank r of `group`.
struct AllGatherStep {
  std::string group;
  int64_t groupSize = 1;
};
struct AdamWStep {
  double beta1 = 0, beta2 = 0, epsilon = 0, weightDecay = 0, maxGradNorm = 0;
  /// Inputs: N params, grads, exp_avgs, exp_avg_sqs (and compute copies),
  /// then lr, step, grad_norm; outputs: the N params, moments (and copies).
  bool computeCopies = false;
  /// ZeRO-1: only this rank's shard of each parameter is updated, and the
  /// moments hold that shard's elements (plan::shardOf).
  int64_t shards = 1;
  /// N: the parameters the step updates.
  std::size_t numParams(std::size_t inputs) const {
    return inputs < 3 ? 0 : (inputs - 3) / (computeCopies ? 5 : 4);
  }
};
struct FusedStep {
  std::vector<BodyOp> body;
  std::map<int64_t, TensorInfo> temporaries;
  std::vector<int64_t> yield;
};
/// Inputs: input [tokens, hidden], weight [vocab, hidden], targets, dloss;
/// outputs: loss, input_grad, weight_grad, logits scratch [chunk_rows,
/// vocab] f32.
struct LinearCrossEntropyStep {
  int64_t chunkRows = 0;
  int64_t ignoreIndex = 0;
  /// BF16 operands: the logits stay FP32 (else rounded to BF16).
  bool fp32Logits = false;
};

using StepOp =
    std::variant<FillStep, GemmStep, FlashForwardStep, FlashBackwardStep,
                 CrossEntropyStep, CrossEntropyGradStep, EmbeddingGradStep,
                 GlobalNormStep, AdamWStep, FusedStep, LinearCrossEntropyStep,
                 RopeTableStep, GradAccumulateStep, AllReduceStep,
                 ReduceScatterStep, AllGatherStep>;

struct Step {
  StepOp op;
  char chunk =
      'F'; ///< F forward, B input gradients, W weight gradients, O optimizer.
  std::vector<int64_t> inputs;
  std::vector<int64_t> outputs;
  CudaStep cuda;

  StepKind kind() const { return static_cast<StepKind>(op.index()); }
  /// The kernel's name in the plan ("gemm").
  std::string_view kernel() const { return plan::stepKindName(kind()); }
  /// Whether it runs only in the last micro-batch of a step (under
  /// gradient accumulation: the reduction of the sums).
  bool runsInLastMicroStepOnly() const {
    if (const auto *reduce = std::get_if<AllReduceStep>(&op))
      return reduce->lastMicroStep;
    const auto *scatter = std::get_if<ReduceScatterStep>(&op);
    return scatter && scatter->lastMicroStep;
  }
};

/// The value ids of a gemm step's optional operands (docs/plan.md), -1
/// where absent: its bias; dgelu_tanh's pre-activation input (`aux`);
/// gelu_tanh's pre-activation output; a bgrad epilogue's bias gradient.
struct GemmOperands {
  int64_t bias = -1, aux = -1, preActivation = -1, biasGrad = -1;
};
/// Those of `step`, a gemm step with attributes `gemm`.
GemmOperands gemmOperands(const Step &step, const GemmStep &gemm);

struct Parameter {
  std::string name;
  std::string init;
  int64_t value = -1;
  int64_t expAvg = -1;
  int64_t expAvgSq = -1;
  int64_t grad = -1;
  /// The BF16 copy the optimizer keeps of a BF16 step's parameter, or -1.
  int64_t computeCopy = -1;
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
  /// Micro-batches per optimizer step (`model.micro_batches`).
  int64_t microBatches = 1;
  /// Data-parallel ranks it was compiled for (`model.data_parallel`).
  int64_t dataParallel = 1;
  /// ZeRO stage (`model.zero`): 1 shards the optimizer state over the
  /// data-parallel ranks (each parameter's moments hold the elements of
  /// plan::shardOf(n, dataParallel, rank)).
  int64_t zero = 0;
  /// The ranks sharing the optimizer: data_parallel under ZeRO-1, else 1.
  int64_t optimizerShards() const { return zero == 1 ? dataParallel : 1; }
  /// Whether `param`'s value is only this rank's ZeRO-1 shard of its master
  /// (the step reads its BF16 compute copy, whole): fewer elements than its
  /// gradient, which is always whole.
  bool shardedMaster(const Parameter &param) const {
    return values[param.value].numElements() !=
           values[param.grad].numElements();
  }

  // The CUDA kernels (name -> NVRTC source) and precompiled cubins
  // (arch -> name -> cubin), when the plan was compiled for CUDA.
  bool hasCuda = false;
  std::string cudaHeader;
  int64_t cudaScratchBytes = 0;
  std::map<std::string, std::string> cudaKernels;
  std::map<std::string, std::map<std::string, std::vector<std::byte>>>
      cudaCubins;

  /// Parses plan JSON into typed steps and validates every step against
  /// its operands (shapes, dtypes, attributes, arities, aliasing, launch
  /// records); `source` names it in errors, with the step, kernel and field.
  static Plan parse(const std::string &text, const std::string &source);
  /// parse, then checks that the plan is a training step that can run: a
  /// non-empty program with an f32 loss output that aliases no parameter.
  static Plan load(const std::string &text, const std::string &source);

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

#endif // KILN_RUNTIME_PLAN_PLAN_H
