//===- CudaEmitter.cpp - CUDA C++ for tile kernels ------------------------===//

#include "compiler/translate/CudaEmitter.h"
#include "compiler/translate/Plan.h"

#include "dialects/nn/NNOps.h"
#include "dialects/tile/TileOps.h"
#include "passes/CostModel.h"
#include "runtime/plan/Schema.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/xxhash.h"

#include <cmath>

using namespace mlir;
using namespace kiln;
namespace json = llvm::json;
using llvm::formatv;

namespace {

/// Threads of the generic elementwise and grid-stride kernels.
constexpr int64_t kElementwiseThreads = 256;
/// Elements per thread of vectorised elementwise kernels: 16 bytes of BF16.
constexpr int64_t kVectorWidth = 8;
/// Blocks of each partial sum of squares in the gradient norm.
constexpr int64_t kNormPartials = 64;
/// The largest grid.x used by grid-stride kernels.
constexpr int64_t kMaxGrid = 65535 * 16;
/// Two-stage column reductions (kiln_device.cuh, "Column reductions"): row
/// chunks of about this many rows, at most kMaxColumnChunks of them.
constexpr int64_t kColumnChunkRows = 64;
constexpr int64_t kMaxColumnChunks = 256;
/// The embedding gradient's vocabulary ranges: at least this many ids each
/// (each block scans every id of the batch), and at most 65535 ranges
/// (grid.y).
constexpr int64_t kEmbeddingGradIdsPerRange = 64;

Type elementType(Value v) {
  return cast<RankedTensorType>(v.getType()).getElementType();
}

int64_t numElements(Value v) {
  return cast<RankedTensorType>(v.getType()).getNumElements();
}

int64_t lastDim(Value v) {
  auto type = cast<RankedTensorType>(v.getType());
  return type.getRank() == 0 ? 1 : type.getShape().back();
}

std::string cudaType(Type type) {
  if (type.isF32())
    return "float";
  if (type.isBF16())
    return "__nv_bfloat16";
  if (type.isInteger(32))
    return "int";
  if (type.isInteger(64))
    return "long long";
  return "";
}

/// Threads for a block that works on one row of `width` elements, each
/// thread taking a 16-byte vector: a power of two in [32, 1024].
int64_t rowThreads(int64_t width) {
  int64_t threads = 32;
  while (threads < 1024 && threads * kVectorWidth < width)
    threads *= 2;
  return threads;
}

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Helpers every generated elementwise kernel carries: 16-byte loads and
/// stores of 8 elements, widened to FP32 and rounded back on store.
constexpr const char *kVectorHelpers = R"cuda(
template <int V>
__device__ __forceinline__ void kilnLoad(const float *p, float *v) {
  if constexpr (V == 8) {
    float4 a = reinterpret_cast<const float4 *>(p)[0];
    float4 b = reinterpret_cast<const float4 *>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e)
      v[e] = p[e];
  }
}
template <int V>
__device__ __forceinline__ void kilnLoad(const __nv_bfloat16 *p, float *v) {
  if constexpr (V == 8) {
    uint4 raw = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *pairs = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float2 f = __bfloat1622float2(pairs[e]);
      v[2 * e] = f.x;
      v[2 * e + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e)
      v[e] = __bfloat162float(p[e]);
  }
}
template <int V>
__device__ __forceinline__ void kilnStore(float *p, const float *v) {
  if constexpr (V == 8) {
    reinterpret_cast<float4 *>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4 *>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e)
      p[e] = v[e];
  }
}
template <int V>
__device__ __forceinline__ void kilnStore(__nv_bfloat16 *p, const float *v) {
  if constexpr (V == 8) {
    uint4 raw;
    __nv_bfloat162 *pairs = reinterpret_cast<__nv_bfloat162 *>(&raw);
#pragma unroll
    for (int e = 0; e < 4; ++e)
      pairs[e] = __floats2bfloat162_rn(v[2 * e], v[2 * e + 1]);
    *reinterpret_cast<uint4 *>(p) = raw;
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e)
      p[e] = __float2bfloat16_rn(v[e]);
  }
}
__device__ __forceinline__ float kilnRoundBf16(float x) {
  return __bfloat162float(__float2bfloat16_rn(x));
}
)cuda";

} // namespace

namespace kiln {

/// Collects one kernel's parameters and the matching launch arguments, then
/// registers its source with the emitter.
class LaunchBuilder {
public:
  LaunchBuilder(CudaEmitter &emitter, CudaStep &step)
      : emitter(emitter), step(step) {}

  /// A pointer parameter bound to a plan value.
  std::string value(Value v, bool output, StringRef name) {
    params.push_back(formatv("{0}{1} *__restrict__ {2}", output ? "" : "const ",
                             cudaType(elementType(v)), name)
                         .str());
    args.push_back(json::Object{
        {argKey(plan::LaunchArgKind::Value), emitter.valueIds.lookup(v)}});
    return name.str();
  }
  /// A pointer that is null (an absent optional operand).
  std::string null(StringRef type, StringRef name) {
    params.push_back(formatv("const {0} *{1}", type, name).str());
    args.push_back(json::Object{{argKey(plan::LaunchArgKind::Null), true}});
    return name.str();
  }
  /// A pointer into the step's scratch memory.
  std::string scratch(StringRef type, StringRef name, int64_t offset) {
    params.push_back(formatv("{0} *{1}", type, name).str());
    args.push_back(
        json::Object{{argKey(plan::LaunchArgKind::Scratch), offset}});
    return name.str();
  }
  /// The device flag a kernel sets on bad data (an out-of-range id).
  std::string errorFlag() {
    params.push_back("int *error");
    args.push_back(
        json::Object{{argKey(plan::LaunchArgKind::ErrorFlag), true}});
    step.usesErrorFlag = true;
    return "error";
  }
  std::string integer(StringRef name, int64_t v) {
    params.push_back(formatv("long long {0}", name).str());
    args.push_back(json::Object{{argKey(plan::LaunchArgKind::Int), v}});
    return name.str();
  }
  std::string number(StringRef name, double v) {
    params.push_back(formatv("float {0}", name).str());
    args.push_back(json::Object{{argKey(plan::LaunchArgKind::Float), v}});
    return name.str();
  }
  /// A double, for constants FP32 cannot hold well enough (AdamW's betas:
  /// 1 - 0.999f is off by 1e-5 relative).
  std::string real(StringRef name, double v) {
    params.push_back(formatv("double {0}", name).str());
    args.push_back(json::Object{{argKey(plan::LaunchArgKind::Double), v}});
    return name.str();
  }

  /// Registers the kernel `name` with `body` and records its launch, with
  /// `sharedBytes` of dynamic shared memory. `minBlocksPerSm` > 0 becomes
  /// the second `__launch_bounds__` argument: 1 lets ptxas give each thread
  /// every register the block size allows (the flash kernels: without it,
  /// NVRTC 13.0 holds the head-dim-32 backward to 96 registers and spills).
  void launch(StringRef name, StringRef body, ArrayRef<int64_t> grid,
              int64_t threads, StringRef prelude = "", int64_t sharedBytes = 0,
              int64_t minBlocksPerSm = 0) {
    std::string bounds = std::to_string(threads);
    if (minBlocksPerSm > 0)
      bounds += ", " + std::to_string(minBlocksPerSm);
    std::string source =
        formatv("// Generated by Kiln; compiled at run time by NVRTC.\n"
                "#include \"{0}\"\n{1}\n"
                "extern \"C\" __global__ void __launch_bounds__({2})\n"
                "{3}({4}) {{\n{5}}\n",
                kDeviceHeader, prelude, bounds, name, llvm::join(params, ", "),
                body)
            .str();
    emitter.sources.emplace(name.str(), std::move(source));
    json::Array gridJson;
    for (int64_t g : grid)
      gridJson.push_back(g);
    while (gridJson.size() < 3)
      gridJson.push_back(1);
    json::Object launch{
        {plan::key::kKernel, name.str()},
        {plan::key::kGrid, std::move(gridJson)},
        {plan::key::kBlock, json::Array{threads, 1, 1}},
        {plan::key::kArgs, std::move(args)},
        {plan::key::kMinComputeCapability, minComputeCapability}};
    if (sharedBytes > 0)
      launch[plan::key::kSharedBytes] = sharedBytes;
    minComputeCapability = plan::kAnyComputeCapability;
    step.launches.push_back(std::move(launch));
    params.clear();
    args = json::Array();
  }

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
  CudaStep &step;
  int minComputeCapability = plan::kAnyComputeCapability;
  std::vector<std::string> params;
  json::Array args;
};

} // namespace kiln

namespace {

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

/// True for the nn ops whose CUDA code is generated element by element.
bool isElementwise(Operation *op) {
  return isa<nn::AddOp, nn::MulOp, nn::CastOp, nn::SwiGLUOp, nn::SwiGLUGradOp,
             nn::GeluOp, nn::GeluGradOp>(op);
}

/// The FP32 expressions of an elementwise op's results, from its operands'.
SmallVector<std::string> elementExpressions(Operation *op,
                                            ArrayRef<std::string> in) {
  auto tanhFlag = [](nn::GeluApproximation a) {
    return a == nn::GeluApproximation::tanh ? "true" : "false";
  };
  return llvm::TypeSwitch<Operation *, SmallVector<std::string>>(op)
      .Case([&](nn::AddOp) {
        return SmallVector<std::string>{in[0] + " + " + in[1]};
      })
      .Case([&](nn::MulOp) {
        return SmallVector<std::string>{in[0] + " * " + in[1]};
      })
      .Case([&](nn::CastOp) { return SmallVector<std::string>{in[0]}; })
      .Case([&](nn::SwiGLUOp) {
        return SmallVector<std::string>{
            formatv("kiln::dev::silu({0}) * {1}", in[0], in[1]).str()};
      })
      .Case([&](nn::SwiGLUGradOp) {
        return SmallVector<std::string>{
            formatv("kiln::dev::swigluGate({0}, {1}, {2})", in[0], in[1], in[2])
                .str(),
            formatv("kiln::dev::swigluUp({0}, {1})", in[0], in[1]).str()};
      })
      .Case([&](nn::GeluOp gelu) {
        return SmallVector<std::string>{formatv("kiln::dev::gelu({0}, {1})",
                                                in[0],
                                                tanhFlag(gelu.getApproximate()))
                                            .str()};
      })
      .Case([&](nn::GeluGradOp grad) {
        return SmallVector<std::string>{
            formatv("kiln::dev::geluGrad({0}, {1}, {2})", in[0], in[1],
                    tanhFlag(grad.getApproximate()))
                .str()};
      })
      .Default([](Operation *) { return SmallVector<std::string>{}; });
}

/// Whether attention on `query` with `headDim` runs the tensor-core
/// FlashAttention kernels: BF16 storage and a head dim they take.
bool usesFlashKernel(Value query, int64_t headDim) {
  return elementType(query).isBF16() && hasFlashKernel(headDim);
}

/// The tile sizes of an attention op, fitted to the tensor-core kernels.
template <typename AttentionOp>
AttentionTiles flashTiles(AttentionOp op, int64_t headDim, bool backward) {
  return fitFlashKernelTiles({static_cast<int64_t>(op.getBlockQ()),
                              static_cast<int64_t>(op.getBlockK()),
                              static_cast<int64_t>(op.getNumWarps()),
                              static_cast<int64_t>(op.getNumStages())},
                             headDim, backward);
}

/// A name for a generated body: its kind and a hash of its text, so that
/// identical regions share one kernel.
std::string hashedName(StringRef kind, StringRef body) {
  return formatv("kiln_{0}_{1:x16}", kind, llvm::xxh3_64bits(body)).str();
}

} // namespace

FailureOr<CudaStep> CudaEmitter::emit(Operation *op) {
  CudaStep step;
  LaunchBuilder k(*this, step);

  // arith.constant splat: a fill.
  if (auto constant = dyn_cast<arith::ConstantOp>(op)) {
    Value out = constant.getResult();
    auto splat = dyn_cast<SplatElementsAttr>(constant.getValue());
    if (!splat)
      return op->emitOpError("cuda: only splat constants are supported");
    std::string t = cudaType(elementType(out));
    k.value(out, true, "out");
    k.integer("n", numElements(out));
    k.number("value", splat.getSplatValue<APFloat>().convertToDouble());
    k.launch(
        "kiln_fill_" + planDtypeName(elementType(out)),
        formatv("  kiln::dev::fill<{0}>(out, n, value);\n", t).str(),
        {std::min(kMaxGrid, ceilDiv(numElements(out), kElementwiseThreads))},
        kElementwiseThreads);
    return step;
  }

  if (isa<tile::GemmOp>(op)) {
    step.library = std::string(plan::kCublasLt);
    return step;
  }

  if (auto attention = dyn_cast<tile::FlashAttentionFwdOp>(op)) {
    Value q = attention.getQuery();
    auto shape = cast<RankedTensorType>(q.getType()).getShape();
    int64_t heads = attention.getNumHeads();
    int64_t headDim = shape[2] / heads;
    double scale = attention.getScale()
                       ? attention.getScale()->convertToDouble()
                       : 1.0 / std::sqrt(double(headDim));
    std::string t = cudaType(elementType(q));
    k.value(q, false, "q");
    k.value(attention.getKey(), false, "k");
    k.value(attention.getValue(), false, "v");
    k.value(attention.getResult(), true, "out");
    k.value(attention.getLse(), true, "lse");
    k.integer("batch", shape[0]);
    k.integer("seq", shape[1]);
    k.integer("heads", heads);
    k.integer("kvHeads", attention.getNumKvHeads());
    k.number("scale", scale);
    k.integer("causal", attention.getCausal());
    Value cu = attention.getCuSeqlens();
    cu ? k.value(cu, false, "cuSeqlens") : k.null("int", "cuSeqlens");
    k.integer("numCuSeqlens", cu ? numElements(cu) : 0);
    std::string args = "(q, k, v, out, lse, (int)batch, (int)seq, (int)heads, "
                       "(int)kvHeads, scale, causal != 0, cuSeqlens, "
                       "(int)numCuSeqlens);\n";
    if (usesFlashKernel(q, headDim)) {
      // FlashAttention-2 on tensor cores with the op's tile sizes.
      AttentionTiles tiles = flashTiles(attention, headDim, /*backward=*/false);
      k.requireComputeCapability(plan::kBf16TensorCoreComputeCapability);
      k.launch(formatv("kiln_flash_attention_fwd_d{0}_q{1}_k{2}_s{3}", headDim,
                       tiles.blockQ, tiles.blockK, tiles.numStages)
                   .str(),
               formatv("  kiln::dev::flashAttentionForward<{0}, {1}, {2}, "
                       "{3}>{4}",
                       headDim, tiles.blockQ, tiles.blockK, tiles.numStages,
                       args)
                   .str(),
               {ceilDiv(shape[1], tiles.blockQ), heads, shape[0]},
               tiles.numWarps * 32, "",
               flashKernelSharedBytes(tiles, headDim, /*backward=*/false),
               /*minBlocksPerSm=*/1);
      return step;
    }
    // Exact per-row kernels for FP32 storage and other head dims.
    constexpr int64_t threads = 128;
    k.launch(formatv("kiln_attention_fwd_{0}_d{1}",
                     planDtypeName(elementType(q)), headDim)
                 .str(),
             formatv("  kiln::dev::attentionForward<{0}, {1}, {2}>{3}", t,
                     headDim, threads, args)
                 .str(),
             {shape[1], heads, shape[0]}, threads);
    return step;
  }

  if (auto grad = dyn_cast<tile::FlashAttentionBwdOp>(op)) {
    Value q = grad.getQuery();
    auto shape = cast<RankedTensorType>(q.getType()).getShape();
    int64_t heads = grad.getNumHeads(), kvHeads = grad.getNumKvHeads();
    int64_t headDim = shape[2] / heads;
    double scale = grad.getScale() ? grad.getScale()->convertToDouble()
                                   : 1.0 / std::sqrt(double(headDim));
    std::string t = cudaType(elementType(q));
    std::string tag = planDtypeName(elementType(q));
    const bool flash = usesFlashKernel(q, headDim);
    // Scratch: delta = rowsum(dout * out), then (flash) the FP32 dq
    // accumulator at a 256-byte boundary.
    int64_t rows = shape[0] * heads * shape[1];
    const int64_t accumOffset = ceilDiv(rows * 4, 256) * 256;
    step.scratchBytes = flash ? accumOffset + numElements(q) * 4 : rows * 4;
    constexpr int64_t threads = 128;

    k.value(grad.getGrad(), false, "dout");
    k.value(grad.getOutput(), false, "out");
    k.scratch("float", "delta", 0);
    k.integer("batch", shape[0]);
    k.integer("seq", shape[1]);
    k.integer("heads", heads);
    k.integer("headDim", headDim);
    if (flash)
      k.scratch("float", "dqAccum", accumOffset);
    k.launch("kiln_attention_bwd_delta_" + tag,
             formatv("  kiln::dev::attentionBackwardPreprocess<{0}, 32>(dout, "
                     "out, delta, (int)batch, (int)seq, (int)heads, "
                     "(int)headDim, {1});\n",
                     t, flash ? "dqAccum" : "nullptr")
                 .str(),
             {shape[1], heads, shape[0]}, 32);

    // The parameters of the main kernels: dq (or, flash, its accumulator)
    // unless keyValue, dk and dv if keyValue.
    auto common = [&](bool keyValue) {
      k.value(grad.getGrad(), false, "dout");
      k.value(q, false, "q");
      k.value(grad.getKey(), false, "k");
      k.value(grad.getValue(), false, "v");
      k.value(grad.getLse(), false, "lse");
      k.scratch("const float", "delta", 0);
      if (flash)
        k.scratch("float", "dqAccum", accumOffset);
      if (keyValue) {
        k.value(grad.getKeyGrad(), true, "dk");
        k.value(grad.getValueGrad(), true, "dv");
      } else {
        k.value(grad.getQueryGrad(), true, "dq");
      }
      k.integer("batch", shape[0]);
      k.integer("seq", shape[1]);
      k.integer("heads", heads);
      k.integer("kvHeads", kvHeads);
      k.number("scale", scale);
      k.integer("causal", grad.getCausal());
      Value cu = grad.getCuSeqlens();
      cu ? k.value(cu, false, "cuSeqlens") : k.null("int", "cuSeqlens");
      k.integer("numCuSeqlens", cu ? numElements(cu) : 0);
    };
    std::string tail = "(int)batch, (int)seq, (int)heads, (int)kvHeads, "
                       "scale, causal != 0, cuSeqlens, (int)numCuSeqlens);\n";
    if (flash) {
      AttentionTiles tiles = flashTiles(grad, headDim, /*backward=*/true);
      common(/*keyValue=*/true);
      k.requireComputeCapability(plan::kBf16TensorCoreComputeCapability);
      k.launch(formatv("kiln_flash_attention_bwd_d{0}_q{1}_k{2}", headDim,
                       tiles.blockQ, tiles.blockK)
                   .str(),
               formatv("  kiln::dev::flashAttentionBackward<{0}, {1}, {2}>("
                       "dout, q, k, v, lse, delta, dqAccum, dk, dv, {3}",
                       headDim, tiles.blockQ, tiles.blockK, tail)
                   .str(),
               {ceilDiv(shape[1], tiles.blockK), kvHeads, shape[0]},
               tiles.numWarps * 32, "",
               flashKernelSharedBytes(tiles, headDim, /*backward=*/true),
               /*minBlocksPerSm=*/1);
      k.scratch("const float", "dqAccum", accumOffset);
      k.value(grad.getQueryGrad(), true, "dq");
      k.integer("n", numElements(q));
      k.number("scale", scale);
      k.launch(
          "kiln_flash_attention_bwd_dq_" + tag,
          formatv("  kiln::dev::flashAttentionFinishDq<{0}>(dqAccum, dq, "
                  "n, scale);\n",
                  t)
              .str(),
          {std::min(kMaxGrid, ceilDiv(numElements(q), kElementwiseThreads))},
          kElementwiseThreads);
      return step;
    }
    common(/*keyValue=*/false);
    k.launch(formatv("kiln_attention_bwd_q_{0}_d{1}", tag, headDim).str(),
             formatv("  kiln::dev::attentionBackwardQuery<{0}, {1}, {2}>("
                     "dout, q, k, v, lse, delta, dq, {3}",
                     t, headDim, threads, tail)
                 .str(),
             {shape[1], heads, shape[0]}, threads);
    common(/*keyValue=*/true);
    k.launch(formatv("kiln_attention_bwd_kv_{0}_d{1}", tag, headDim).str(),
             formatv("  kiln::dev::attentionBackwardKeyValue<{0}, {1}, {2}>("
                     "dout, q, k, v, lse, delta, dk, dv, {3}",
                     t, headDim, threads, tail)
                 .str(),
             {shape[1], kvHeads, shape[0]}, threads);
    return step;
  }

  if (auto loss = dyn_cast<tile::CrossEntropyOp>(op)) {
    Value logits = loss.getLogits();
    int64_t vocab = lastDim(logits), rows = numElements(logits) / vocab;
    std::string t = cudaType(elementType(logits));
    step.scratchBytes = rows * 4;
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
    k.scratch("const float", "rowLoss", 0);
    k.value(loss.getTargets(), false, "targets");
    k.value(loss.getLoss(), true, "loss");
    k.integer("rows", rows);
    k.integer("ignoreIndex", loss.getIgnoreIndex());
    k.launch("kiln_cross_entropy_reduce",
             "  kiln::dev::crossEntropyReduce<1024>(rowLoss, targets, loss, "
             "rows, ignoreIndex);\n",
             {1}, 1024);
    return step;
  }

  if (auto grad = dyn_cast<tile::CrossEntropyGradOp>(op)) {
    Value logits = grad.getLogits();
    int64_t vocab = lastDim(logits), rows = numElements(logits) / vocab;
    std::string t = cudaType(elementType(logits));
    step.scratchBytes = 4;
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
    return step;
  }

  if (auto grad = dyn_cast<tile::EmbeddingGradOp>(op)) {
    Value dy = grad.getGrad(), table = grad.getResult();
    if (!elementType(table).isF32())
      return op->emitOpError("cuda: the embedding gradient accumulates in an "
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
    return step;
  }

  if (auto norm = dyn_cast<tile::GlobalNormOp>(op)) {
    int64_t count = norm.getInputs().size() * kNormPartials;
    step.scratchBytes = count * 4;
    for (auto [index, input] : llvm::enumerate(norm.getInputs())) {
      k.value(input, false, "x");
      k.integer("n", numElements(input));
      k.scratch("float", "partials", index * kNormPartials * 4);
      k.launch("kiln_squared_norm_" + planDtypeName(elementType(input)),
               formatv("  kiln::dev::squaredNormPartial<{0}, 256>(x, n, "
                       "partials);\n",
                       cudaType(elementType(input)))
                   .str(),
               {kNormPartials}, 256);
    }
    k.scratch("const float", "partials", 0);
    k.integer("count", count);
    k.value(norm.getResult(), true, "out");
    k.launch("kiln_finish_norm",
             "  kiln::dev::finishNorm<1024>(partials, (int)count, out);\n", {1},
             1024);
    return step;
  }

  if (auto adamw = dyn_cast<tile::AdamWOp>(op)) {
    int64_t n = numElements(adamw.getParam());
    // In place: the kernel writes param and moments through their inputs'
    // pointers, which the plan gives the results' offsets.
    k.value(adamw.getNewParam(), true, "param");
    k.value(adamw.getGrad(), false, "grad");
    k.value(adamw.getNewExpAvg(), true, "expAvg");
    k.value(adamw.getNewExpAvgSq(), true, "expAvgSq");
    k.integer("n", n);
    k.value(adamw.getLr(), false, "lr");
    k.value(adamw.getStep(), false, "step");
    k.value(adamw.getGradNorm(), false, "gradNorm");
    k.real("beta1", adamw.getBeta1().convertToDouble());
    k.real("beta2", adamw.getBeta2().convertToDouble());
    k.real("eps", adamw.getEpsilon().convertToDouble());
    k.real("weightDecay", adamw.getWeightDecay().convertToDouble());
    k.real("maxGradNorm", adamw.getMaxGradNorm().convertToDouble());
    k.launch("kiln_adamw",
             "  kiln::dev::adamw(param, grad, expAvg, expAvgSq, n, lr, step, "
             "gradNorm, beta1, beta2, eps, weightDecay, maxGradNorm);\n",
             {std::min(kMaxGrid, ceilDiv(n, kElementwiseThreads))},
             kElementwiseThreads);
    return step;
  }

  auto fused = dyn_cast<tile::FusedOp>(op);
  if (!fused)
    return op->emitOpError("cuda: no CUDA kernel for this op");
  Block &body = fused.getBody().front();
  auto yield = cast<tile::YieldOp>(body.getTerminator());
  // Body values to the step's operands and results.
  llvm::DenseMap<Value, Value> outer;
  for (auto [arg, input] :
       llvm::zip_equal(body.getArguments(), fused.getInputs()))
    outer[arg] = input;
  for (auto [inner, result] :
       llvm::zip_equal(yield.getValues(), fused.getResults()))
    outer[inner] = result;

  // Regions of elementwise ops: one generated kernel.
  if (llvm::all_of(body.without_terminator(),
                   [](Operation &inner) { return isElementwise(&inner); })) {
    int64_t n = numElements(fused.getResult(0));
    for (Operation &inner : body.without_terminator())
      for (Value v :
           llvm::concat<Value>(inner.getOperands(), inner.getResults()))
        if (numElements(v) != n)
          return inner.emitOpError(
              "cuda: an elementwise region needs one element count");
    int64_t width = n % kVectorWidth == 0 ? kVectorWidth : 1;
    llvm::DenseMap<Value, std::string> names;
    std::string text;
    llvm::raw_string_ostream os(text);
    os << formatv("  constexpr int V = {0};\n", width);
    os << "  long long stride = (long long)gridDim.x * blockDim.x * V;\n";
    os << "  for (long long base = ((long long)blockIdx.x * blockDim.x + "
          "threadIdx.x) * V; base < n; base += stride) {\n";
    for (auto [index, arg] : llvm::enumerate(body.getArguments())) {
      std::string name = formatv("a{0}", index).str();
      names[arg] = name;
      os << formatv("    float {0}[V];\n    kilnLoad<V>(in{1} + base, {0});\n",
                    name, index);
    }
    int temp = 0;
    for (Operation &inner : body.without_terminator()) {
      SmallVector<std::string> operands;
      for (Value operand : inner.getOperands())
        operands.push_back(names.lookup(operand) + "[e]");
      SmallVector<std::string> exprs = elementExpressions(&inner, operands);
      for (auto [result, expr] : llvm::zip_equal(inner.getResults(), exprs)) {
        std::string name = formatv("t{0}", temp++).str();
        names[result] = name;
        bool round = elementType(result).isBF16();
        os << formatv("    float {0}[V];\n#pragma unroll\n    for (int e = 0; "
                      "e < V; ++e)\n      {0}[e] = {1};\n",
                      name, round ? "kilnRoundBf16(" + expr + ")" : expr);
      }
    }
    for (auto [index, v] : llvm::enumerate(yield.getValues()))
      os << formatv("    kilnStore<V>(out{0} + base, {1});\n", index,
                    names.lookup(v));
    os << "  }\n";
    std::string signature = text;
    for (Value v : llvm::concat<Value>(fused.getInputs(), fused.getResults()))
      signature += " " + planDtypeName(elementType(v));
    std::string name = hashedName("ew", signature);
    for (auto [index, input] : llvm::enumerate(fused.getInputs()))
      k.value(input, false, formatv("in{0}", index).str());
    for (auto [index, result] : llvm::enumerate(fused.getResults()))
      k.value(result, true, formatv("out{0}", index).str());
    k.integer("n", n);
    k.launch(name, text,
             {std::min(kMaxGrid, ceilDiv(n / width, kElementwiseThreads))},
             kElementwiseThreads, kVectorHelpers);
    return step;
  }

  // Row-wise and data-movement ops: one op per region for now.
  if (!llvm::hasSingleElement(body.without_terminator()))
    return op->emitOpError("cuda: a fused region that mixes row-wise ops "
                           "with others has no CUDA kernel yet");
  Operation &inner = body.front();
  auto in = [&](unsigned i) { return outer.lookup(inner.getOperand(i)); };
  auto out = [&](unsigned i) { return outer.lookup(inner.getResult(i)); };
  if (llvm::any_of(inner.getOperands(),
                   [&](Value v) { return !outer.lookup(v); }) ||
      llvm::any_of(inner.getResults(),
                   [&](Value v) { return !outer.lookup(v); }))
    return op->emitOpError("cuda: the region must yield its op's results");

  Value x = in(0);
  std::string t = cudaType(elementType(x));
  std::string tag = planDtypeName(elementType(x));
  int64_t dim = lastDim(x), rows = numElements(x) / std::max<int64_t>(dim, 1);
  int64_t threads = rowThreads(dim);
  auto rowGrid = SmallVector<int64_t>{std::min(rows, kMaxGrid)};
  auto epsilonOf = [](Operation *o) {
    return cast<FloatAttr>(o->getAttr("epsilon")).getValueAsDouble();
  };

  if (isa<nn::RMSNormOp, nn::RMSNormGradOp, nn::LayerNormOp,
          nn::LayerNormGradOp>(inner)) {
    bool isGrad = isa<nn::RMSNormGradOp, nn::LayerNormGradOp>(inner);
    bool isLayer = isa<nn::LayerNormOp, nn::LayerNormGradOp>(inner);
    std::string fn =
        std::string(isLayer ? "layerNorm" : "rmsNorm") + (isGrad ? "Grad" : "");
    SmallVector<std::string> call;
    if (isGrad) {
      call = {k.value(in(0), false, "dy"), k.value(in(1), false, "x"),
              k.value(in(2), false, "w")};
    } else {
      call = {k.value(in(0), false, "x"), k.value(in(1), false, "w")};
      if (isLayer)
        call.push_back(inner.getNumOperands() > 2 ? k.value(in(2), false, "b")
                                                  : k.null(t, "b"));
    }
    call.push_back(k.value(out(0), true, isGrad ? "dx" : "y"));
    k.integer("rows", rows);
    k.integer("dim", dim);
    k.number("eps", epsilonOf(&inner));
    k.launch(formatv("kiln_{0}_{1}_t{2}", fn, tag, threads).str(),
             formatv("  kiln::dev::{0}<{1}, {2}>({3}, rows, (int)dim, eps);\n",
                     fn, t, threads, llvm::join(call, ", "))
                 .str(),
             rowGrid, threads);
    return step;
  }

  if (isa<nn::RMSNormWeightGradOp, nn::LayerNormWeightGradOp>(inner)) {
    bool isLayer = isa<nn::LayerNormWeightGradOp>(inner);
    Value dy = in(0), input = in(1);
    dim = lastDim(input);
    rows = numElements(input) / dim;
    threads = rowThreads(dim);
    int64_t statsBytes = rows * 4 * (isLayer ? 2 : 1);
    int64_t chunks = columnChunks(rows);
    step.scratchBytes = statsBytes + chunks * dim * 4;
    k.value(input, false, "x");
    std::string stats = isLayer ? k.scratch("float", "mean", 0) + ", " +
                                      k.scratch("float", "rstd", rows * 4)
                                : k.scratch("float", "rstd", 0);
    k.integer("rows", rows);
    k.integer("dim", dim);
    k.number("eps", epsilonOf(&inner));
    std::string statsFn = isLayer ? "layerRowStats" : "rmsRowStats";
    k.launch(formatv("kiln_{0}_{1}_t{2}", statsFn, tag, threads).str(),
             formatv("  kiln::dev::{0}<{1}, {2}>(x, {3}, rows, (int)dim, "
                     "eps);\n",
                     statsFn, t, threads, stats)
                 .str(),
             {std::min(rows, kMaxGrid)}, threads);
    k.value(dy, false, "dy");
    k.value(input, false, "x");
    std::string constStats =
        isLayer ? k.scratch("const float", "mean", 0) + ", " +
                      k.scratch("const float", "rstd", rows * 4)
                : k.scratch("const float", "rstd", 0);
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
    finishColumns(k, statsBytes, chunks, out(0), dim, tag, t);
    return step;
  }

  if (isa<nn::ColumnSumOp>(inner)) {
    int64_t chunks = columnChunks(rows);
    step.scratchBytes = chunks * dim * 4;
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
    finishColumns(k, 0, chunks, out(0), dim, tag, t);
    return step;
  }

  if (auto rope = dyn_cast<nn::RoPEOp>(inner)) {
    auto shape = cast<RankedTensorType>(x.getType()).getShape();
    int64_t heads = rope.getNumHeads();
    threads = rowThreads(dim / 2);
    k.value(x, false, "x");
    rope.getPositions() ? k.value(in(1), false, "positions")
                        : k.null("int", "positions");
    k.value(out(0), true, "y");
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
    return step;
  }

  if (isa<nn::EmbeddingOp>(inner)) {
    Value ids = in(1);
    k.value(x, false, "table");
    k.value(ids, false, "ids");
    k.value(out(0), true, "y");
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
    return step;
  }

  if (isa<nn::SplitOp, nn::ConcatOp>(inner)) {
    // Index remapping along the last dimension: element `i` of the whole
    // goes to (or comes from) the part whose column range holds it.
    bool split = isa<nn::SplitOp>(inner);
    Value whole = split ? x : out(0);
    ValueRange partsInner =
        split ? ValueRange(inner.getResults()) : inner.getOperands();
    int64_t width = lastDim(whole);
    std::string text;
    llvm::raw_string_ostream os(text);
    os << "  long long stride = (long long)gridDim.x * blockDim.x;\n"
          "  for (long long i = (long long)blockIdx.x * blockDim.x + "
          "threadIdx.x; i < n; i += stride) {\n"
       << formatv("    long long row = i / {0}, col = i % {0};\n", width);
    int64_t offset = 0;
    for (auto [index, part] : llvm::enumerate(partsInner)) {
      int64_t w = lastDim(part);
      os << formatv("    {0}if (col < {1}) ", index ? "else " : "", offset + w)
         << (split ? formatv("part{0}[row * {1} + col - {2}] = whole[i];\n",
                             index, w, offset)
                   : formatv("whole[i] = part{0}[row * {1} + col - {2}];\n",
                             index, w, offset))
                .str();
      offset += w;
    }
    os << "  }\n";
    if (split) {
      k.value(x, false, "whole");
      for (unsigned i = 0; i < inner.getNumResults(); ++i)
        k.value(out(i), true, formatv("part{0}", i).str());
    } else {
      for (unsigned i = 0; i < inner.getNumOperands(); ++i)
        k.value(in(i), false, formatv("part{0}", i).str());
      k.value(out(0), true, "whole");
    }
    int64_t n = numElements(whole);
    k.integer("n", n);
    k.launch(hashedName(split ? "split_" + tag : "concat_" + tag, text), text,
             {std::min(kMaxGrid, ceilDiv(n, kElementwiseThreads))},
             kElementwiseThreads);
    return step;
  }

  return inner.emitOpError("cuda: no CUDA kernel for this op");
}
