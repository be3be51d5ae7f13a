//===- Plan.cpp - The training-step plan ----------------------------------===//

#include "runtime/plan/Plan.h"

#include "runtime/Error.h"
#include "runtime/plan/Validate.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <span>

namespace kiln::rt {

std::size_t elemSize(ElemType type) { return plan::dtypeBytes(type); }

// The names are string literals, so their data is NUL-terminated.
const char *elemName(ElemType type) { return plan::dtypeName(type).data(); }

namespace {

/// The element count of `shape` and its bytes at `elementBytes` each;
/// false where either overflows int64.
bool checkedSizes(const std::vector<int64_t> &shape, int64_t elementBytes,
                  int64_t &elements, int64_t &bytes) {
  elements = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(elements, d, &elements))
      return false;
  return !__builtin_mul_overflow(elements, elementBytes, &bytes);
}

std::string shapeText(const std::vector<int64_t> &shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

} // namespace

int64_t TensorInfo::numElements() const {
  int64_t elements, bytes;
  if (!checkedSizes(shape, 1, elements, bytes))
    throw Error(fmt::format("a tensor of shape {} has more than 2^63 elements",
                            shapeText(shape)));
  return elements;
}

int64_t TensorInfo::bytes() const {
  int64_t elements, bytes;
  if (!checkedSizes(shape, static_cast<int64_t>(elemSize(dtype)), elements,
                    bytes))
    throw Error(fmt::format("a {} tensor of shape {} takes more than 2^63 "
                            "bytes",
                            elemName(dtype), shapeText(shape)));
  return bytes;
}

int64_t partitionRows(const TensorInfo &whole, const TensorInfo &part) {
  bool firstDim = whole.shape.size() >= 2 && part.shape.size() >= 2 &&
                  part.shape[0] != whole.shape[0];
  if (firstDim || whole.shape.empty())
    return 1;
  return whole.numElements() / std::max<int64_t>(whole.shape.back(), 1);
}

int64_t ValueInfo::extentBytes() const {
  if (!strided())
    return bytes();
  int64_t rows = numElements() / std::max<int64_t>(lastDim(), 1), elements,
          extent;
  if (rows == 0)
    return 0;
  if (__builtin_mul_overflow(rows - 1, rowStride, &elements) ||
      __builtin_add_overflow(elements, lastDim(), &elements) ||
      __builtin_mul_overflow(elements, static_cast<int64_t>(elemSize(dtype)),
                             &extent))
    throw Error(fmt::format("a row-strided {} tensor of shape {} spans more "
                            "than 2^63 bytes",
                            elemName(dtype), shapeText(shape)));
  return extent;
}

namespace {

using nlohmann::json;

/// Typed access to plan JSON that names what is wrong and where.
class Reader {
public:
  explicit Reader(std::string source) : source(std::move(source)) {}

  [[noreturn]] void fail(const std::string &where,
                         const std::string &problem) const {
    throw Error(fmt::format("{}: {}: {}", source, where, problem));
  }

  const json &field(const json &object, const char *key,
                    const std::string &where) const {
    if (!object.is_object() || !object.contains(key))
      fail(where, fmt::format("missing '{}'", key));
    return object.at(key);
  }

  int64_t integer(const json &object, const char *key,
                  const std::string &where) const {
    const json &value = field(object, key, where);
    if (!value.is_number_integer())
      fail(where, fmt::format("'{}' must be an integer", key));
    return value.get<int64_t>();
  }

  /// An optional integer in [0, `most`]; `fallback` when absent.
  int64_t size(const json &object, const char *key, int64_t fallback,
               int64_t most, const std::string &where) const {
    if (!object.is_object() || !object.contains(key))
      return fallback;
    int64_t value = integer(object, key, where);
    if (value < 0 || value > most)
      fail(where, fmt::format("'{}' is {}, outside [0, {}]", key, value, most));
    return value;
  }

  std::string string(const json &object, const char *key,
                     const std::string &where) const {
    const json &value = field(object, key, where);
    if (!value.is_string())
      fail(where, fmt::format("'{}' must be a string", key));
    return value.get<std::string>();
  }

  std::vector<int64_t> integers(const json &object, const char *key,
                                const std::string &where) const {
    const json &value = field(object, key, where);
    if (!value.is_array())
      fail(where, fmt::format("'{}' must be an array", key));
    std::vector<int64_t> result;
    for (const json &item : value) {
      if (!item.is_number_integer())
        fail(where, fmt::format("'{}' must hold integers", key));
      result.push_back(item.get<int64_t>());
    }
    return result;
  }

  /// A required attribute of `attrs`, by type.
  const json &attribute(const json &attrs, const char *key,
                        const std::string &where) const {
    if (!attrs.is_object() || !attrs.contains(key))
      fail(where, fmt::format("missing required attribute '{}'", key));
    return attrs.at(key);
  }
  int64_t intAttr(const json &attrs, const char *key,
                  const std::string &where) const {
    const json &value = attribute(attrs, key, where);
    if (!value.is_number_integer())
      fail(where, fmt::format("attribute '{}' must be an integer, got {}", key,
                              value.dump()));
    return value.get<int64_t>();
  }
  double numberAttr(const json &attrs, const char *key,
                    const std::string &where) const {
    const json &value = attribute(attrs, key, where);
    if (!value.is_number() || !std::isfinite(value.get<double>()))
      fail(where, fmt::format("attribute '{}' must be a finite number, got {}",
                              key, value.dump()));
    return value.get<double>();
  }
  bool flagAttr(const json &attrs, const char *key,
                const std::string &where) const {
    const json &value = attribute(attrs, key, where);
    if (!value.is_boolean())
      fail(where, fmt::format("attribute '{}' must be true or false, got {}",
                              key, value.dump()));
    return value.get<bool>();
  }
  std::string stringAttr(const json &attrs, const char *key,
                         const std::string &where) const {
    const json &value = attribute(attrs, key, where);
    if (!value.is_string())
      fail(where, fmt::format("attribute '{}' must be a string, got {}", key,
                              value.dump()));
    return value.get<std::string>();
  }

  TensorInfo tensor(const json &object, const std::string &where) const {
    TensorInfo info;
    std::string dtype = string(object, "dtype", where);
    std::optional<ElemType> type = plan::parseDtype(dtype);
    if (!type)
      fail(where, fmt::format("unknown dtype '{}'", dtype));
    info.dtype = *type;
    info.shape = integers(object, "shape", where);
    for (int64_t d : info.shape)
      if (d < 0)
        fail(where, "negative dimension");
    int64_t elements, bytes;
    if (!checkedSizes(info.shape, static_cast<int64_t>(elemSize(info.dtype)),
                      elements, bytes))
      fail(where, fmt::format("a {} tensor of shape {} takes more than 2^63 "
                              "bytes",
                              dtype, shapeText(info.shape)));
    // The compiler writes no empty tensor, and the kernels divide by their
    // dimensions.
    if (elements == 0)
      fail(where, fmt::format("a {} tensor of shape {} is empty", dtype,
                              shapeText(info.shape)));
    return info;
  }

private:
  std::string source;
};

} // namespace

std::string encodeBase64(std::span<const std::byte> bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t chunk = std::to_integer<uint32_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size())
      chunk |= std::to_integer<uint32_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size())
      chunk |= std::to_integer<uint32_t>(bytes[i + 2]);
    out += kAlphabet[(chunk >> 18) & 63];
    out += kAlphabet[(chunk >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(chunk >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[chunk & 63] : '=';
  }
  return out;
}

std::vector<std::byte> decodeBase64(std::string_view text,
                                    const std::string &source) {
  auto value = [&](char c) -> uint32_t {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    if (c == '+')
      return 62;
    if (c == '/')
      return 63;
    throw Error(
        fmt::format("{}: malformed base64 in a precompiled cubin", source));
  };
  if (text.size() % 4 != 0)
    throw Error(
        fmt::format("{}: malformed base64 in a precompiled cubin", source));
  std::vector<std::byte> out;
  for (std::size_t i = 0; i < text.size(); i += 4) {
    uint32_t chunk = value(text[i]) << 18 | value(text[i + 1]) << 12;
    out.push_back(std::byte(chunk >> 16));
    if (text[i + 2] != '=') {
      chunk |= value(text[i + 2]) << 6;
      out.push_back(std::byte((chunk >> 8) & 0xff));
      if (text[i + 3] != '=') {
        chunk |= value(text[i + 3]);
        out.push_back(std::byte(chunk & 0xff));
      }
    }
  }
  return out;
}

namespace {

/// The attributes of a non-fused kernel, each required.
StepOp parseKernel(const Reader &reader, StepKind kind, const json &attrs,
                   const std::string &where) {
  namespace a = plan::attr;
  auto flash = [&](FlashAttentionAttrs &f) {
    f.numHeads = reader.intAttr(attrs, a::kNumHeads, where);
    f.numKvHeads = reader.intAttr(attrs, a::kNumKvHeads, where);
    f.causal = reader.flagAttr(attrs, a::kCausal, where);
    f.scale = reader.numberAttr(attrs, a::kScale, where);
    f.blockQ = reader.intAttr(attrs, a::kBlockQ, where);
    f.blockK = reader.intAttr(attrs, a::kBlockK, where);
    f.numWarps = reader.intAttr(attrs, a::kNumWarps, where);
    f.numStages = reader.intAttr(attrs, a::kNumStages, where);
    f.rope = reader.flagAttr(attrs, a::kRope, where);
  };
  switch (kind) {
  case StepKind::Fill:
    return FillStep{reader.numberAttr(attrs, a::kValue, where)};
  case StepKind::Gemm: {
    std::string epilogue = reader.stringAttr(attrs, a::kEpilogue, where);
    std::optional<plan::GemmEpilogue> parsed =
        plan::parseGemmEpilogue(epilogue);
    if (!parsed)
      reader.fail(where,
                  fmt::format("attribute 'epilogue' must be one of {}, "
                              "got '{}'",
                              fmt::join(plan::kGemmEpilogues, ", "), epilogue));
    return GemmStep{reader.intAttr(attrs, a::kBatch, where),
                    reader.intAttr(attrs, a::kM, where),
                    reader.intAttr(attrs, a::kN, where),
                    reader.intAttr(attrs, a::kK, where),
                    reader.flagAttr(attrs, a::kTransposeA, where),
                    reader.flagAttr(attrs, a::kTransposeB, where),
                    *parsed};
  }
  case StepKind::FlashAttentionFwd: {
    FlashForwardStep step;
    flash(step);
    return step;
  }
  case StepKind::FlashAttentionBwd: {
    FlashBackwardStep step;
    flash(step);
    return step;
  }
  case StepKind::CrossEntropy:
    return CrossEntropyStep{reader.intAttr(attrs, a::kIgnoreIndex, where)};
  case StepKind::CrossEntropyGrad:
    return CrossEntropyGradStep{reader.intAttr(attrs, a::kIgnoreIndex, where)};
  case StepKind::EmbeddingGrad:
    return EmbeddingGradStep{};
  case StepKind::GlobalNorm:
    return GlobalNormStep{reader.intAttr(attrs, a::kShards, where)};
  case StepKind::AdamW:
    return AdamWStep{reader.numberAttr(attrs, a::kBeta1, where),
                     reader.numberAttr(attrs, a::kBeta2, where),
                     reader.numberAttr(attrs, a::kEpsilon, where),
                     reader.numberAttr(attrs, a::kWeightDecay, where),
                     reader.numberAttr(attrs, a::kMaxGradNorm, where),
                     reader.flagAttr(attrs, a::kComputeCopies, where),
                     reader.intAttr(attrs, a::kShards, where)};
  case StepKind::LinearCrossEntropy:
    return LinearCrossEntropyStep{
        reader.intAttr(attrs, a::kChunkRows, where),
        reader.intAttr(attrs, a::kIgnoreIndex, where),
        reader.flagAttr(attrs, a::kFp32Logits, where)};
  case StepKind::RopeTable:
    return RopeTableStep{reader.numberAttr(attrs, a::kTheta, where)};
  case StepKind::GradAccumulate:
    return GradAccumulateStep{};
  case StepKind::AllReduce:
  case StepKind::ReduceScatter: {
    std::string reduction = reader.stringAttr(attrs, a::kReduction, where);
    std::optional<plan::Reduction> parsed = plan::parseReduction(reduction);
    if (!parsed)
      reader.fail(where,
                  fmt::format("attribute 'reduction' must be one of {}, "
                              "got '{}'",
                              fmt::join(plan::kReductions, ", "), reduction));
    AllReduceStep reduce{*parsed, reader.stringAttr(attrs, a::kGroup, where),
                         reader.intAttr(attrs, a::kGroupSize, where),
                         reader.flagAttr(attrs, a::kLastMicroStep, where)};
    if (kind == StepKind::ReduceScatter)
      return ReduceScatterStep{reduce};
    return reduce;
  }
  case StepKind::AllGather:
    return AllGatherStep{reader.stringAttr(attrs, a::kGroup, where),
                         reader.intAttr(attrs, a::kGroupSize, where)};
  case StepKind::Fused:
    break;
  }
  reader.fail(where, "not a kernel with attributes");
}

/// A fused step's body, temporaries and yield; indices are checked against
/// the locals here, shapes against the ops in validateSteps.
FusedStep parseFused(const Reader &reader, const json &entry,
                     std::size_t numInputs, const std::string &where) {
  namespace k = plan::key;
  namespace a = plan::attr;
  FusedStep fused;
  // Local values: the step's inputs, then its temporaries.
  int64_t inputs = static_cast<int64_t>(numInputs);
  int64_t locals = inputs;
  const json &temporaries = reader.field(entry, k::kTemporaries, where);
  if (!temporaries.is_array())
    reader.fail(where, "'temporaries' must be an array");
  int64_t end = locals + static_cast<int64_t>(temporaries.size());
  for (const json &temp : temporaries) {
    int64_t index = reader.integer(temp, k::kIndex, where);
    if (index < inputs || index >= end)
      reader.fail(where, fmt::format("temporary {} is not one of the "
                                     "local values [{}, {}) after the "
                                     "inputs",
                                     index, inputs, end));
    if (fused.temporaries.count(index))
      reader.fail(where, fmt::format("temporary {} is declared twice", index));
    fused.temporaries[index] = reader.tensor(temp, where);
    locals = std::max(locals, index + 1);
  }
  const json &body = reader.field(entry, k::kBody, where);
  if (!body.is_array())
    reader.fail(where, "'body' must be an array");
  for (const json &op : body) {
    BodyOp b;
    std::string name = reader.string(op, k::kOp, where);
    std::string at =
        fmt::format("{}: body op {} ({})", where, fused.body.size(), name);
    std::optional<BodyOpKind> kind = plan::parseBodyOp(name);
    if (!kind)
      reader.fail(at, fmt::format("unknown body op '{}' (known: {})", name,
                                  fmt::join(plan::kBodyOpNames, ", ")));
    b.kind = *kind;
    b.operands = reader.integers(op, k::kOperands, at);
    b.results = reader.integers(op, k::kResults, at);
    for (int64_t index : b.operands)
      if (index < 0 || index >= locals)
        reader.fail(at, fmt::format("operand {} is not a local value (the "
                                    "step has {})",
                                    index, locals));
    for (int64_t index : b.results)
      if (!fused.temporaries.count(index))
        reader.fail(
            at, fmt::format("result {} of '{}' has no temporary", index, name));
    const json &attrs = reader.field(op, k::kAttrs, at);
    switch (b.kind) {
    case BodyOpKind::RmsNorm:
    case BodyOpKind::RmsNormGrad:
    case BodyOpKind::RmsNormWeightGrad:
    case BodyOpKind::LayerNorm:
    case BodyOpKind::LayerNormGrad:
    case BodyOpKind::LayerNormWeightGrad:
      b.epsilon = reader.numberAttr(attrs, a::kEpsilon, at);
      break;
    case BodyOpKind::Rope:
      b.numHeads = reader.intAttr(attrs, a::kNumHeads, at);
      b.theta = reader.numberAttr(attrs, a::kTheta, at);
      b.inverse = reader.flagAttr(attrs, a::kInverse, at);
      break;
    case BodyOpKind::Gelu:
    case BodyOpKind::GeluGrad: {
      std::string approximate = reader.stringAttr(attrs, a::kApproximate, at);
      if (approximate != plan::kGeluExact && approximate != plan::kGeluTanh)
        reader.fail(at, fmt::format("attribute 'approximate' must be '{}' or "
                                    "'{}', got '{}'",
                                    plan::kGeluExact, plan::kGeluTanh,
                                    approximate));
      b.tanhApprox = approximate == plan::kGeluTanh;
      break;
    }
    default:
      break;
    }
    fused.body.push_back(std::move(b));
  }
  fused.yield = reader.integers(entry, k::kYield, where);
  for (int64_t index : fused.yield)
    if (index < 0 || index >= locals)
      reader.fail(where, fmt::format("yields local value {}, but the step "
                                     "has {}",
                                     index, locals));
  return fused;
}

/// How the CUDA backend runs a step (`cuda`).
CudaStep
parseCuda(const Reader &reader, const json &cuda, const std::string &where,
          const std::function<int64_t(int64_t, const std::string &)> &checkId) {
  namespace k = plan::key;
  CudaStep step;
  if (cuda.contains(k::kLibrary)) {
    step.library = reader.string(cuda, k::kLibrary, where);
    if (step.library != plan::kCublasLt && step.library != plan::kNccl)
      reader.fail(where,
                  fmt::format("unknown CUDA library '{}'", step.library));
  }
  step.errorFlag = cuda.value(k::kErrorFlag, false);
  const json &launches = reader.field(cuda, k::kLaunches, where);
  if (!launches.is_array())
    reader.fail(where, "'launches' must be an array");
  for (const json &launch : launches) {
    CudaLaunch l;
    l.kernel = reader.string(launch, k::kKernel, where);
    std::string at = fmt::format("{}: launch of {}", where, l.kernel);
    std::vector<int64_t> grid = reader.integers(launch, k::kGrid, at);
    std::vector<int64_t> block = reader.integers(launch, k::kBlock, at);
    if (grid.size() != 3 || block.size() != 3)
      reader.fail(at, "a launch needs 3 grid and 3 block sizes");
    for (int i = 0; i < 3; ++i) {
      if (grid[i] <= 0 || block[i] <= 0 || grid[i] > 0x7fffffff ||
          block[i] > plan::kMaxBlockThreads)
        reader.fail(at,
                    fmt::format("launch geometry out of range: grid "
                                "[{}], block [{}]",
                                fmt::join(grid, ", "), fmt::join(block, ", ")));
      l.grid[i] = static_cast<unsigned>(grid[i]);
      l.block[i] = static_cast<unsigned>(block[i]);
    }
    if (block[0] * block[1] * block[2] > plan::kMaxBlockThreads)
      reader.fail(at, fmt::format("a block of {} threads is more than {}",
                                  block[0] * block[1] * block[2],
                                  plan::kMaxBlockThreads));
    l.sharedBytes = static_cast<unsigned>(reader.size(
        launch, k::kSharedBytes, 0, plan::kMaxLaunchSharedBytes, at));
    l.minComputeCapability = static_cast<int>(
        reader.size(launch, k::kMinComputeCapability, -1, 1000, at));
    if (l.minComputeCapability < 0)
      reader.fail(at, fmt::format("missing '{}'", k::kMinComputeCapability));
    const json &args = reader.field(launch, k::kArgs, at);
    if (!args.is_array())
      reader.fail(at, "'args' must be an array");
    for (const json &arg : args) {
      CudaArg c;
      using Kind = CudaArg::Kind;
      std::string name;
      if (arg.is_object() && arg.size() == 1)
        name = arg.begin().key();
      if (name == plan::launchArgKey(Kind::Value)) {
        c.kind = Kind::Value;
        c.integer = checkId(reader.integer(arg, name.c_str(), at), at);
      } else if (name == plan::launchArgKey(Kind::Scratch)) {
        c.kind = Kind::Scratch;
        c.integer = reader.integer(arg, name.c_str(), at);
      } else if (name == plan::launchArgKey(Kind::ErrorFlag)) {
        c.kind = Kind::ErrorFlag;
      } else if (name == plan::launchArgKey(Kind::Int)) {
        c.kind = Kind::Int;
        c.integer = reader.integer(arg, name.c_str(), at);
      } else if (name == plan::launchArgKey(Kind::Float) ||
                 name == plan::launchArgKey(Kind::Double)) {
        c.kind = name == plan::launchArgKey(Kind::Float) ? Kind::Float
                                                         : Kind::Double;
        if (!arg.begin()->is_number())
          reader.fail(at,
                      fmt::format("argument {} must be a number", arg.dump()));
        c.number = arg.begin()->get<double>();
      } else if (name == plan::launchArgKey(Kind::Null)) {
        c.kind = Kind::Null;
      } else if (name == plan::launchArgKey(Kind::Rank)) {
        c.kind = Kind::Rank;
      } else {
        reader.fail(at, "unknown launch argument " + arg.dump());
      }
      l.args.push_back(c);
    }
    step.launches.push_back(std::move(l));
  }
  return step;
}

/// One step: its kernel, chunk, operands, typed attributes and launches.
Step parseStep(
    const Reader &reader, const json &entry, std::size_t index,
    const std::function<int64_t(int64_t, const std::string &)> &checkId) {
  namespace k = plan::key;
  Step step;
  std::string where = fmt::format("step {}", index);
  std::string kernel = reader.string(entry, k::kKernel, where);
  std::optional<StepKind> kind = plan::parseStepKind(kernel);
  if (!kind)
    reader.fail(where, fmt::format("unknown kernel '{}' (known: {})", kernel,
                                   fmt::join(plan::kStepKindNames, ", ")));
  where += " (" + kernel + ")";
  std::string chunk = reader.string(entry, k::kChunk, where);
  if (chunk.size() != 1 || plan::kChunks.find(chunk[0]) == std::string::npos)
    reader.fail(where, fmt::format("unknown chunk '{}' (one of {})", chunk,
                                   fmt::join(plan::kChunks, ", ")));
  step.chunk = chunk[0];
  step.inputs = reader.integers(entry, k::kInputs, where);
  step.outputs = reader.integers(entry, k::kOutputs, where);
  for (std::size_t i = 0; i < step.inputs.size(); ++i)
    checkId(step.inputs[i], fmt::format("{}: input {}", where, i));
  for (std::size_t i = 0; i < step.outputs.size(); ++i)
    checkId(step.outputs[i], fmt::format("{}: output {}", where, i));
  if (*kind == StepKind::Fused)
    step.op = parseFused(reader, entry, step.inputs.size(), where);
  else
    step.op = parseKernel(reader, *kind, reader.field(entry, k::kAttrs, where),
                          where);
  if (entry.contains(k::kCuda)) {
    step.cuda = parseCuda(reader, entry.at(k::kCuda), where, checkId);
    // cuBLASLt runs the GEMMs (linear_cross_entropy's between its
    // launches), NCCL the collectives; launches run the rest.
    std::string_view library;
    bool collective = *kind == StepKind::AllReduce ||
                      *kind == StepKind::ReduceScatter ||
                      *kind == StepKind::AllGather;
    if (*kind == StepKind::Gemm || *kind == StepKind::LinearCrossEntropy)
      library = plan::kCublasLt;
    else if (collective)
      library = plan::kNccl;
    if (step.cuda.library != library)
      reader.fail(where,
                  library.empty()
                      ? fmt::format("only gemm and linear_cross_entropy "
                                    "steps run in cuBLASLt and the "
                                    "collectives in NCCL; a {} does not run "
                                    "in '{}'",
                                    kernel, step.cuda.library)
                      : fmt::format("a {} runs in '{}', but its 'cuda' "
                                    "names {}",
                                    kernel, library,
                                    step.cuda.library.empty()
                                        ? "no library"
                                        : "'" + step.cuda.library + "'"));
    if (collective && !step.cuda.launches.empty())
      reader.fail(
          where,
          fmt::format("a {} step runs in NCCL and has no launches", kernel));
    // The CUDA backend runs the GEMMs between launches 0 and 1 and 1 and
    // 2, setting launch 1's last argument to the chunk's index.
    const auto &launches = step.cuda.launches;
    if (*kind == StepKind::LinearCrossEntropy &&
        (launches.size() != 3 || launches[1].args.empty() ||
         launches[1].args.back().kind != CudaArg::Kind::Int))
      reader.fail(where, "a linear_cross_entropy's 'cuda' must have 3 "
                         "launches (count, rows, reduce), the rows kernel's "
                         "last argument an i64 (the chunk index)");
  }
  return step;
}

/// Plan::parse's work. Reader checks every field it reads; nlohmann's own
/// type errors (a mistyped optional field) reach Plan::parse as exceptions.
Plan parsePlan(const std::string &text, const std::string &source) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  Reader reader(source);
  if (root.is_discarded())
    reader.fail("plan", "not valid JSON");
  if (!root.is_object() || root.value("format", "") != "kiln-plan")
    reader.fail("plan", "not a Kiln plan (no \"format\": \"kiln-plan\")");
  int64_t version = reader.integer(root, "version", "plan");
  if (version != kPlanVersion)
    reader.fail("plan", fmt::format("format version {} is not the version "
                                    "this runtime reads ({}); recompile",
                                    version, kPlanVersion));
  Plan plan;
  plan.model = root.value("model", json::object());
  constexpr int64_t kMaxBytes = std::numeric_limits<int64_t>::max();
  plan.arenaBytes = reader.size(root, "arena_bytes", -1, kMaxBytes, "plan");
  if (plan.arenaBytes < 0)
    reader.fail("plan", "missing 'arena_bytes'");
  plan.persistentBytes =
      reader.size(root, "persistent_bytes", -1, plan.arenaBytes, "plan");
  if (plan.persistentBytes < 0)
    reader.fail("plan", "missing 'persistent_bytes'");
  plan.largestBufferBytes =
      reader.size(root, "largest_buffer_bytes", 0, plan.arenaBytes, "plan");

  const json &values = reader.field(root, "values", "plan");
  for (const json &v : values) {
    int64_t id = reader.integer(v, "id", "values");
    std::string where = fmt::format("value {}", id);
    if (id != static_cast<int64_t>(plan.values.size()))
      reader.fail(where, "values must be numbered 0, 1, 2, ... in order");
    ValueInfo info;
    static_cast<TensorInfo &>(info) = reader.tensor(v, where);
    info.offset = reader.integer(v, "offset", where);
    if (v.contains(plan::key::kRowStride)) {
      info.rowStride = reader.integer(v, plan::key::kRowStride, where);
      if (info.shape.empty() || info.rowStride <= info.lastDim())
        reader.fail(where,
                    fmt::format("'{}' = {} must exceed the last dimension "
                                "({}) of a tensor of rank 1 or more; "
                                "contiguous rows have none",
                                plan::key::kRowStride, info.rowStride,
                                info.lastDim()));
    }
    int64_t end;
    if (info.offset < 0 ||
        __builtin_add_overflow(info.offset, info.extentBytes(), &end) ||
        end > plan.arenaBytes)
      reader.fail(where, fmt::format("buffer of {} bytes at offset {} lies "
                                     "outside the arena ({} bytes)",
                                     info.extentBytes(), info.offset,
                                     plan.arenaBytes));
    plan.values.push_back(std::move(info));
  }
  auto checkId = [&](int64_t id, const std::string &where) -> int64_t {
    if (id < 0 || id >= static_cast<int64_t>(plan.values.size()))
      reader.fail(where, fmt::format("refers to value {}, but the plan has "
                                     "{} values",
                                     id, plan.values.size()));
    return id;
  };

  for (const char *kind : {"inputs", "outputs"})
    for (const json &entry : reader.field(root, kind, "plan")) {
      std::string name = reader.string(entry, "name", kind);
      int64_t id = checkId(reader.integer(entry, "value", kind),
                           fmt::format("{} '{}'", kind, name));
      (std::string(kind) == "inputs" ? plan.inputs : plan.outputs)[name] = id;
    }

  // The trainer sizes its batches by the model's batch x seq_len: they must
  // be positive, and their product the element count of the tokens.
  if (plan.model.contains("batch") || plan.model.contains("seq_len")) {
    int64_t batch = reader.integer(plan.model, "batch", "model");
    int64_t seqLen = reader.integer(plan.model, "seq_len", "model");
    int64_t tokens;
    if (batch <= 0 || seqLen <= 0 ||
        __builtin_mul_overflow(batch, seqLen, &tokens))
      reader.fail("model", fmt::format("batch ({}) x seq_len ({}) is not a "
                                       "positive 64-bit size",
                                       batch, seqLen));
    if (auto input = plan.inputs.find("tokens"); input != plan.inputs.end())
      if (int64_t held = plan.values[input->second].numElements();
          held != tokens)
        reader.fail("model", fmt::format("batch ({}) x seq_len ({}) is {} "
                                         "tokens, but input 'tokens' holds "
                                         "{}",
                                         batch, seqLen, tokens, held));
    plan.microBatches =
        reader.integer(plan.model, plan::model::kMicroBatches, "model");
    int64_t sequences;
    if (plan.microBatches < 1 ||
        __builtin_mul_overflow(batch, plan.microBatches, &sequences))
      reader.fail("model", fmt::format("micro_batches ({}) must be at least "
                                       "1, and micro_batches x batch a "
                                       "64-bit size",
                                       plan.microBatches));
    if (plan.model.contains(plan::model::kDataParallel)) {
      plan.dataParallel =
          reader.integer(plan.model, plan::model::kDataParallel, "model");
      if (plan.dataParallel < 1)
        reader.fail("model",
                    fmt::format("data_parallel ({}) must be at least 1",
                                plan.dataParallel));
    }
    if (plan.model.contains(plan::model::kZero)) {
      plan.zero = reader.integer(plan.model, plan::model::kZero, "model");
      if (plan.zero != 0 && plan.zero != 1)
        reader.fail("model", fmt::format("zero ({}) must be 0 or 1 (the "
                                         "ZeRO stage)",
                                         plan.zero));
    }
  }

  for (const json &entry : reader.field(root, "parameters", "plan")) {
    Parameter param;
    param.name = reader.string(entry, "name", "parameters");
    std::string where = fmt::format("parameter '{}'", param.name);
    param.init = entry.value("init", "zeros");
    param.value = checkId(reader.integer(entry, "value", where), where);
    param.expAvg = checkId(reader.integer(entry, "exp_avg", where), where);
    param.expAvgSq = checkId(reader.integer(entry, "exp_avg_sq", where), where);
    param.grad = checkId(reader.integer(entry, "grad", where), where);
    if (entry.contains(plan::key::kComputeCopy))
      param.computeCopy =
          checkId(reader.integer(entry, plan::key::kComputeCopy, where), where);
    if (plan.values[param.value].dtype != ElemType::F32)
      reader.fail(where, "master weights must be f32");
    plan.parameters.push_back(std::move(param));
  }

  for (const json &entry : reader.field(root, "steps", "plan"))
    plan.steps.push_back(parseStep(reader, entry, plan.steps.size(), checkId));

  if (root.contains("cuda")) {
    const json &cuda = root.at("cuda");
    plan.hasCuda = true;
    plan.cudaHeader = cuda.value("header", "kiln_device.cuh");
    plan.cudaScratchBytes =
        reader.size(cuda, "scratch_bytes", 0, kMaxBytes, "cuda");
    for (const json &kernel : reader.field(cuda, "kernels", "cuda"))
      plan.cudaKernels[reader.string(kernel, "name", "cuda kernels")] =
          reader.string(kernel, "source", "cuda kernels");
    if (cuda.contains("cubins"))
      for (const auto &[arch, kernels] : cuda.at("cubins").items())
        for (const auto &[name, encoded] : kernels.items())
          plan.cudaCubins[arch][name] =
              decodeBase64(encoded.get<std::string>(), source);
    for (std::size_t index = 0; index < plan.steps.size(); ++index)
      for (const CudaLaunch &launch : plan.steps[index].cuda.launches) {
        if (!plan.cudaKernels.count(launch.kernel))
          reader.fail("cuda", fmt::format("step {} ({}) launches '{}', which "
                                          "the plan has no source for",
                                          index, plan.steps[index].kernel(),
                                          launch.kernel));
        for (const CudaArg &arg : launch.args)
          if (arg.kind == CudaArg::Kind::Scratch &&
              (arg.integer < 0 || arg.integer > plan.cudaScratchBytes))
            reader.fail("cuda", fmt::format("'{}' takes scratch offset {}, "
                                            "outside the {}-byte scratch "
                                            "buffer",
                                            launch.kernel, arg.integer,
                                            plan.cudaScratchBytes));
      }
  }
  validateSteps(plan, source);
  return plan;
}

} // namespace

Plan Plan::load(const std::string &text, const std::string &source) {
  Plan plan = parse(text, source);
  checkTrainable(plan, source);
  return plan;
}

Plan Plan::parse(const std::string &text, const std::string &source) {
  try {
    return parsePlan(text, source);
  } catch (const json::exception &e) {
    // "[json.exception.type_error.302] type must be string, but is number"
    std::string_view message = e.what();
    if (std::size_t close = message.find("] "); close != message.npos)
      message.remove_prefix(close + 2);
    throw Error(fmt::format("{}: malformed plan: {}", source, message));
  }
}

GemmOperands gemmOperands(const Step &step, const GemmStep &gemm) {
  using plan::GemmEpilogue;
  GemmOperands operands;
  if (step.inputs.size() > 2) {
    if (gemm.epilogue == GemmEpilogue::DgeluTanh)
      operands.aux = step.inputs[2];
    else
      operands.bias = step.inputs[2];
  }
  if (step.outputs.size() > 1) {
    if (gemm.epilogue == GemmEpilogue::GeluTanh)
      operands.preActivation = step.outputs[1];
    else
      operands.biasGrad = step.outputs[1];
  }
  return operands;
}

int64_t Plan::input(const std::string &name) const {
  auto it = inputs.find(name);
  if (it == inputs.end())
    throw Error(fmt::format("the plan has no input '{}'", name));
  return it->second;
}

int64_t Plan::output(const std::string &name) const {
  auto it = outputs.find(name);
  if (it == outputs.end())
    throw Error(fmt::format("the plan has no output '{}'", name));
  return it->second;
}

int64_t Plan::modelInt(const std::string &key) const {
  if (!model.contains(key) || !model[key].is_number_integer())
    throw Error(fmt::format("the plan's model description has no '{}'", key));
  return model[key].get<int64_t>();
}

} // namespace kiln::rt
