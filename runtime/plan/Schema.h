//===- Schema.h - The plan format of compiler and runtime -------*- C++ -*-===//
//
// The one definition of the plan (docs/plan.md): its version, dtype names,
// step kinds, fused-body ops, the keys of every field and attribute, the
// launch records of the CUDA kernels and the formulas both sides compute
// (the flash kernels' shared memory). The runtime owns the format; the
// compiler's translator includes this header, never the reverse. Standard
// C++ only, header only: no MLIR, no JSON library, no CUDA.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_PLAN_SCHEMA_H
#define KILN_RUNTIME_PLAN_SCHEMA_H

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace kiln::plan {

/// The `"format"` of every plan.
inline constexpr std::string_view kFormat = "kiln-plan";
/// The version the compiler writes and the runtime requires. 2: every
/// attribute explicit (flags written as false, defaults filled in), launch
/// records carry `min_compute_capability`. 3: micro-batches (the model's
/// `micro_batches`, the inputs `loss_scale` and `micro_step`, the
/// `grad_accumulate` kernel), the optimizer chunk last; later additions
/// that older version-3 plans do without: the model's `data_parallel` (1
/// when absent) and `zero` (0 when absent), the `all_reduce`,
/// `reduce_scatter` and `all_gather` steps, and the `shards` attribute of
/// `adamw` and `global_norm` (required: plans are compiled per run).
inline constexpr int kVersion = 3;

//===----------------------------------------------------------------------===//
// Names tied to enums
//===----------------------------------------------------------------------===//

/// Looks `name` up in `names` (indexed by the enum's values).
template <typename Enum, std::size_t N>
constexpr std::optional<Enum>
lookupName(const std::array<std::string_view, N> &names,
           std::string_view name) {
  for (std::size_t i = 0; i < N; ++i)
    if (names[i] == name)
      return static_cast<Enum>(i);
  return std::nullopt;
}

/// The element types of values and temporaries.
enum class ElemType { F32, BF16, I32, I64, F8E4M3, F8E5M2 };
inline constexpr std::array<std::string_view, 6> kDtypeNames = {
    "f32", "bf16", "i32", "i64", "f8e4m3", "f8e5m2"};
inline constexpr std::array<std::size_t, 6> kDtypeBytes = {4, 2, 4, 8, 1, 1};

constexpr std::string_view dtypeName(ElemType type) {
  return kDtypeNames[static_cast<std::size_t>(type)];
}
constexpr std::size_t dtypeBytes(ElemType type) {
  return kDtypeBytes[static_cast<std::size_t>(type)];
}
constexpr std::optional<ElemType> parseDtype(std::string_view name) {
  return lookupName<ElemType>(kDtypeNames, name);
}

/// The kernels a step runs (`"kernel"`).
enum class StepKind {
  Fill,
  Gemm,
  FlashAttentionFwd,
  FlashAttentionBwd,
  CrossEntropy,
  CrossEntropyGrad,
  EmbeddingGrad,
  GlobalNorm,
  AdamW,
  Fused,
  LinearCrossEntropy,
  RopeTable,
  GradAccumulate,
  AllReduce,
  ReduceScatter,
  AllGather,
};
inline constexpr std::array<std::string_view, 16> kStepKindNames = {
    "fill",
    "gemm",
    "flash_attention_fwd",
    "flash_attention_bwd",
    "cross_entropy",
    "cross_entropy_grad",
    "embedding_grad",
    "global_norm",
    "adamw",
    "fused",
    "linear_cross_entropy",
    "rope_table",
    "grad_accumulate",
    "all_reduce",
    "reduce_scatter",
    "all_gather"};

constexpr std::string_view stepKindName(StepKind kind) {
  return kStepKindNames[static_cast<std::size_t>(kind)];
}
constexpr std::optional<StepKind> parseStepKind(std::string_view name) {
  return lookupName<StepKind>(kStepKindNames, name);
}

/// The ops of a fused step's body: nn ops of the same names.
enum class BodyOpKind {
  Add,
  Mul,
  Cast,
  RmsNorm,
  RmsNormGrad,
  RmsNormWeightGrad,
  LayerNorm,
  LayerNormGrad,
  LayerNormWeightGrad,
  Rope,
  Swiglu,
  SwigluGrad,
  Gelu,
  GeluGrad,
  Embedding,
  Split,
  Concat,
  ColumnSum,
};
inline constexpr std::array<std::string_view, 18> kBodyOpNames = {
    "add",
    "mul",
    "cast",
    "rms_norm",
    "rms_norm_grad",
    "rms_norm_weight_grad",
    "layer_norm",
    "layer_norm_grad",
    "layer_norm_weight_grad",
    "rope",
    "swiglu",
    "swiglu_grad",
    "gelu",
    "gelu_grad",
    "embedding",
    "split",
    "concat",
    "column_sum"};

constexpr std::string_view bodyOpName(BodyOpKind kind) {
  return kBodyOpNames[static_cast<std::size_t>(kind)];
}
constexpr std::optional<BodyOpKind> parseBodyOp(std::string_view name) {
  return lookupName<BodyOpKind>(kBodyOpNames, name);
}

/// The chunk a step belongs to: forward, input gradients, weight gradients,
/// optimizer.
inline constexpr std::string_view kChunks = "FBWO";

//===----------------------------------------------------------------------===//
// Keys
//===----------------------------------------------------------------------===//

/// Top-level and structural keys.
/// The name under which every generated kernel includes the device library
/// (the plan's `cuda.header`); the runtime gives NVRTC that header from
/// memory.
inline constexpr const char *kDeviceHeader = "kiln_device.cuh";

namespace key {
inline constexpr const char *kFormat = "format";
inline constexpr const char *kVersion = "version";
inline constexpr const char *kFunction = "function";
inline constexpr const char *kModel = "model";
inline constexpr const char *kArenaBytes = "arena_bytes";
inline constexpr const char *kPersistentBytes = "persistent_bytes";
inline constexpr const char *kLargestBufferBytes = "largest_buffer_bytes";
inline constexpr const char *kValues = "values";
inline constexpr const char *kInputs = "inputs";
inline constexpr const char *kOutputs = "outputs";
inline constexpr const char *kParameters = "parameters";
inline constexpr const char *kSteps = "steps";
inline constexpr const char *kCuda = "cuda";
// Values and tensors.
inline constexpr const char *kId = "id";
inline constexpr const char *kOffset = "offset";
inline constexpr const char *kRowStride = "row_stride";
inline constexpr const char *kDtype = "dtype";
inline constexpr const char *kShape = "shape";
inline constexpr const char *kName = "name";
inline constexpr const char *kValue = "value";
// Parameters.
inline constexpr const char *kExpAvg = "exp_avg";
inline constexpr const char *kExpAvgSq = "exp_avg_sq";
inline constexpr const char *kGrad = "grad";
/// The BF16 copy of a BF16 step's parameter that the optimizer writes as it
/// updates the master (optional).
inline constexpr const char *kComputeCopy = "compute_copy";
inline constexpr const char *kInit = "init";
// Steps.
inline constexpr const char *kKernel = "kernel";
inline constexpr const char *kChunk = "chunk";
inline constexpr const char *kAttrs = "attrs";
inline constexpr const char *kBody = "body";
inline constexpr const char *kTemporaries = "temporaries";
inline constexpr const char *kYield = "yield";
inline constexpr const char *kIndex = "index";
inline constexpr const char *kOp = "op";
inline constexpr const char *kOperands = "operands";
inline constexpr const char *kResults = "results";
// CUDA.
inline constexpr const char *kHeader = "header";
inline constexpr const char *kKernels = "kernels";
inline constexpr const char *kSource = "source";
inline constexpr const char *kCubins = "cubins";
inline constexpr const char *kScratchBytes = "scratch_bytes";
inline constexpr const char *kLibrary = "library";
inline constexpr const char *kLaunches = "launches";
inline constexpr const char *kErrorFlag = "error_flag";
inline constexpr const char *kGrid = "grid";
inline constexpr const char *kBlock = "block";
inline constexpr const char *kArgs = "args";
inline constexpr const char *kSharedBytes = "shared_bytes";
inline constexpr const char *kMinComputeCapability = "min_compute_capability";
} // namespace key

/// Keys of `model` the runtime reads.
namespace model {
/// Sequences of one micro-step (the compiled shape) and their length.
inline constexpr const char *kBatch = "batch";
inline constexpr const char *kSeqLen = "seq_len";
/// Micro-batches per optimizer step: the runtime runs the chunks F, B and W
/// this many times, then O once.
inline constexpr const char *kMicroBatches = "micro_batches";
/// Data-parallel ranks the step was compiled for (1 when absent): the
/// runtime runs it on exactly this many.
inline constexpr const char *kDataParallel = "data_parallel";
/// ZeRO stage (0 when absent): 1 shards the optimizer over data_parallel.
inline constexpr const char *kZero = "zero";
/// How the data fills the rows (stream when absent): stream, documents (the
/// step then takes cu_seqlens) or pad.
inline constexpr const char *kPacking = "packing";
/// The end-of-text token --eot gave, and the config's eos_token_id: the
/// packer's document delimiter (--eot, else 256 for text Kiln tokenized,
/// else eos_token_id).
inline constexpr const char *kEot = "eot";
inline constexpr const char *kEosTokenId = "eos_token_id";
/// The compiler's cost model: the FLOPs of one optimizer step on one rank
/// (GEMMs, attention, the LM head) and the peak rate of the target it sized
/// the tiles for, and that target's name: the metrics' MFU (absent: none).
inline constexpr const char *kFlopsPerStep = "flops_per_step";
inline constexpr const char *kPeakFlops = "peak_flops";
inline constexpr const char *kPeakTarget = "peak_target";
} // namespace model

/// The step's inputs that the runtime sets (`inputs`).
namespace input {
inline constexpr const char *kTokens = "tokens";
inline constexpr const char *kPositions = "positions";
inline constexpr const char *kTargets = "targets";
/// Sequence packing by documents (--packing documents): int32 cumulative
/// document offsets over the flattened [batch, seq] tokens, batch * seq + 1
/// of them (the unused tail repeating the last, batch * seq).
inline constexpr const char *kCuSeqlens = "cu_seqlens";
inline constexpr const char *kLr = "lr";
inline constexpr const char *kStep = "step";
/// The gradient the backward starts from: the micro-batch's counted tokens
/// over the step's (1 with one micro-batch).
inline constexpr const char *kLossScale = "loss_scale";
/// The 0-based micro-batch index (with micro_batches > 1).
inline constexpr const char *kMicroStep = "micro_step";
} // namespace input

/// The step's outputs the runtime reads (`outputs`).
namespace output {
inline constexpr const char *kLoss = "loss";
/// The global gradient norm before clipping (plans since the metrics
/// record it).
inline constexpr const char *kGradNorm = "grad_norm";
} // namespace output

/// Kernel and body-op attributes (`attrs`). Every attribute a kernel reads
/// is required: the compiler writes flags as false and fills in defaults.
namespace attr {
inline constexpr const char *kValue = "value";
inline constexpr const char *kBatch = "batch";
inline constexpr const char *kM = "m";
inline constexpr const char *kN = "n";
inline constexpr const char *kK = "k";
inline constexpr const char *kTransposeA = "transpose_a";
inline constexpr const char *kTransposeB = "transpose_b";
/// gemm: what the GEMM computes after the product (kGemmEpilogues).
inline constexpr const char *kEpilogue = "epilogue";
inline constexpr const char *kNumHeads = "num_heads";
inline constexpr const char *kNumKvHeads = "num_kv_heads";
inline constexpr const char *kCausal = "causal";
inline constexpr const char *kScale = "scale";
inline constexpr const char *kBlockQ = "block_q";
inline constexpr const char *kBlockK = "block_k";
inline constexpr const char *kNumWarps = "num_warps";
inline constexpr const char *kNumStages = "num_stages";
/// flash attention: Q and K are rotated on load by the rope_table that
/// follows the other inputs (and dq, dk rotated back on store).
inline constexpr const char *kRope = "rope";
inline constexpr const char *kIgnoreIndex = "ignore_index";
/// linear_cross_entropy: the tokens of one chunk (the rows of its scratch),
/// and whether BF16 steps keep the logits FP32 (else rounded to BF16).
inline constexpr const char *kChunkRows = "chunk_rows";
inline constexpr const char *kFp32Logits = "fp32_logits";
inline constexpr const char *kBeta1 = "beta1";
inline constexpr const char *kBeta2 = "beta2";
inline constexpr const char *kEpsilon = "epsilon";
inline constexpr const char *kWeightDecay = "weight_decay";
inline constexpr const char *kMaxGradNorm = "max_grad_norm";
inline constexpr const char *kTheta = "theta";
inline constexpr const char *kInverse = "inverse";
inline constexpr const char *kApproximate = "approximate";
/// adamw: the inputs hold each parameter's BF16 compute copy after its
/// moments, and the outputs its update after theirs.
inline constexpr const char *kComputeCopies = "compute_copies";
/// all_reduce: how the ranks' values combine (kReductions), the group's
/// name and size, and whether it runs only in the step's last micro-batch.
inline constexpr const char *kReduction = "reduction";
inline constexpr const char *kGroup = "group";
inline constexpr const char *kGroupSize = "group_size";
inline constexpr const char *kLastMicroStep = "last_micro_step";
/// adamw, global_norm: ZeRO-1's data-parallel ranks sharing the optimizer
/// (1: none); each rank updates, and counts in the norm, its shard of every
/// tensor (shardOf).
inline constexpr const char *kShards = "shards";
} // namespace attr

/// The boolean attributes: the compiler writes each as false where its
/// unit attribute is absent.
inline constexpr std::array<std::string_view, 8> kFlagAttrs = {
    attr::kTransposeA, attr::kTransposeB,    attr::kCausal,
    attr::kInverse,    attr::kComputeCopies, attr::kFp32Logits,
    attr::kRope,       attr::kLastMicroStep};

/// The values of `approximate` (gelu, gelu_grad).
inline constexpr std::string_view kGeluExact = "none";
inline constexpr std::string_view kGeluTanh = "tanh";

/// The values of a gemm's `epilogue`, in GemmEpilogue's order: none; GELU
/// (tanh) of the product plus bias, with the pre-activation as an optional
/// second output; the product times GELU's derivative at the third input;
/// the bias gradient (the sum over k of A stored [k, m], or of B stored
/// [k, n]) as a second output.
enum class GemmEpilogue { None, GeluTanh, DgeluTanh, BgradA, BgradB };
inline constexpr std::array<std::string_view, 5> kGemmEpilogues = {
    "none", "gelu_tanh", "dgelu_tanh", "bgrad_a", "bgrad_b"};

constexpr std::optional<GemmEpilogue> parseGemmEpilogue(std::string_view name) {
  for (std::size_t i = 0; i < kGemmEpilogues.size(); ++i)
    if (kGemmEpilogues[i] == name)
      return static_cast<GemmEpilogue>(i);
  return std::nullopt;
}
constexpr std::string_view gemmEpilogueName(GemmEpilogue epilogue) {
  return kGemmEpilogues[static_cast<std::size_t>(epilogue)];
}

/// The values of an all_reduce's `reduction`.
enum class Reduction { Sum, Avg, Max, Min };
inline constexpr std::array<std::string_view, 4> kReductions = {"sum", "avg",
                                                                "max", "min"};
constexpr std::optional<Reduction> parseReduction(std::string_view name) {
  return lookupName<Reduction>(kReductions, name);
}

/// ZeRO-1's split of a tensor of `elements` among `shards` ranks: each rank
/// `r` owns the `count` elements from `offset` of the flattened tensor,
/// shards of `stride` = ceil(elements / shards) elements, the last ones
/// shorter or empty. Moments hold `stride` elements on every rank.
struct Shard {
  int64_t offset = 0, count = 0, stride = 0;
};
constexpr Shard shardOf(int64_t elements, int64_t shards, int64_t rank) {
  if (shards <= 1) // (every rank holds all of it)
    return Shard{0, elements, elements};
  int64_t stride = (elements + shards - 1) / shards;
  int64_t offset = stride * rank < elements ? stride * rank : elements;
  int64_t end = offset + stride < elements ? offset + stride : elements;
  return Shard{offset, end - offset, stride};
}

/// The CUDA library a GEMM step runs in.
inline constexpr std::string_view kCublasLt = "cublasLt";
/// The library a communication step runs in on the cuda backend.
inline constexpr std::string_view kNccl = "nccl";

//===----------------------------------------------------------------------===//
// Launch records
//===----------------------------------------------------------------------===//

/// What one argument of a CUDA launch is; kLaunchArgKeys names its key.
enum class LaunchArgKind {
  Value,
  Null,
  Scratch,
  ErrorFlag,
  Int,
  Float,
  Double,
  /// The process's rank in the data-parallel group, a long long: ZeRO-1's
  /// kernels find their shard by it (one plan serves every rank).
  Rank
};
inline constexpr std::array<std::string_view, 8> kLaunchArgKeys = {
    "value", "null", "scratch", "error_flag", "i64", "f32", "f64", "rank"};

constexpr std::string_view launchArgKey(LaunchArgKind kind) {
  return kLaunchArgKeys[static_cast<std::size_t>(kind)];
}

/// The most threads of a block (every NVIDIA GPU since compute capability
/// 2.0) and the largest dynamic shared memory a launch may ask for.
inline constexpr int64_t kMaxBlockThreads = 1024;
inline constexpr int64_t kMaxLaunchSharedBytes = int64_t(1) << 20;
/// `min_compute_capability` is major x 10 + minor (80 for 8.0). 0: any GPU.
inline constexpr int kAnyComputeCapability = 0;
/// The flash attention kernels use BF16 tensor-core MMAs (mma.sync
/// m16n8k16 on bf16), which need compute capability 8.0.
inline constexpr int kBf16TensorCoreComputeCapability = 80;

//===----------------------------------------------------------------------===//
// Shared formulas
//===----------------------------------------------------------------------===//

/// Bytes of dynamic shared memory of the flash forward kernel
/// (runtime/cuda/device/FlashAttention.cuh): the BF16 Q tile and `stages` K
/// and V tiles. The device library keeps its own copy (it includes
/// nothing); test/Runtime/cuda/device/DeviceEmulationTest.cpp checks they
/// agree.
constexpr std::int64_t flashForwardSharedBytes(std::int64_t headDim,
                                               std::int64_t blockQ,
                                               std::int64_t blockK,
                                               std::int64_t stages) {
  return (blockQ + 2 * stages * blockK) * headDim * 2;
}

/// Bytes of dynamic shared memory of the flash backward kernel: BF16 K, V,
/// Q, dO and dS tiles, then per query row lse and delta (FP32) and the
/// bounds of the keys it sees (int).
constexpr std::int64_t flashBackwardSharedBytes(std::int64_t headDim,
                                                std::int64_t blockQ,
                                                std::int64_t blockK) {
  return (2 * blockK * headDim + 2 * blockQ * headDim + blockQ * blockK) * 2 +
         blockQ * (4 + 4 + 4 + 4);
}

/// Where the CUDA steps of linear_cross_entropy keep their state in the
/// step's scratch: the count of valid targets, every row's loss, and (BF16
/// operands) the chunk's BF16 logits gradient that the GEMMs read; FP32
/// operands read the gradient from the logits scratch value, in place.
struct LinearCrossEntropyScratch {
  std::int64_t count = 0, rowLoss = 0, dlogits = 0, bytes = 0;
};
constexpr LinearCrossEntropyScratch
linearCrossEntropyScratch(std::int64_t rows, std::int64_t chunkRows,
                          std::int64_t vocab, bool bf16) {
  constexpr std::int64_t kAlign = 256;
  auto align = [](std::int64_t bytes) {
    return (bytes + kAlign - 1) / kAlign * kAlign;
  };
  LinearCrossEntropyScratch s;
  s.count = 0;
  s.rowLoss = kAlign;
  s.dlogits = s.rowLoss + align(rows * 4);
  s.bytes = s.dlogits + (bf16 ? chunkRows * vocab * 2 : 0);
  return s;
}

} // namespace kiln::plan

#endif // KILN_RUNTIME_PLAN_SCHEMA_H
