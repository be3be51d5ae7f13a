//===- Plan.cpp - The training-step plan ----------------------------------===//

#include "runtime/Plan.h"

#include "runtime/Error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <limits>
#include <span>

namespace kiln::rt {

std::size_t elemSize(ElemType type) {
  switch (type) {
  case ElemType::F32:
  case ElemType::I32:
    return 4;
  case ElemType::BF16:
    return 2;
  case ElemType::I64:
    return 8;
  case ElemType::F8E4M3:
  case ElemType::F8E5M2:
    return 1;
  }
  return 0;
}

const char *elemName(ElemType type) {
  switch (type) {
  case ElemType::F32:
    return "f32";
  case ElemType::BF16:
    return "bf16";
  case ElemType::I32:
    return "i32";
  case ElemType::I64:
    return "i64";
  case ElemType::F8E4M3:
    return "f8e4m3";
  case ElemType::F8E5M2:
    return "f8e5m2";
  }
  return "?";
}

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

  TensorInfo tensor(const json &object, const std::string &where) const {
    TensorInfo info;
    std::string dtype = string(object, "dtype", where);
    static const std::map<std::string, ElemType> kTypes = {
        {"f32", ElemType::F32},       {"bf16", ElemType::BF16},
        {"i32", ElemType::I32},       {"i64", ElemType::I64},
        {"f8e4m3", ElemType::F8E4M3}, {"f8e5m2", ElemType::F8E5M2}};
    auto it = kTypes.find(dtype);
    if (it == kTypes.end())
      fail(where, fmt::format("unknown dtype '{}'", dtype));
    info.dtype = it->second;
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
    int64_t end;
    if (info.offset < 0 ||
        __builtin_add_overflow(info.offset, info.bytes(), &end) ||
        end > plan.arenaBytes)
      reader.fail(where,
                  fmt::format("buffer of {} bytes at offset {} lies "
                              "outside the arena ({} bytes)",
                              info.bytes(), info.offset, plan.arenaBytes));
    plan.values.push_back(std::move(info));
  }
  auto checkId = [&](int64_t id, const std::string &where) {
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
    if (plan.values[param.value].dtype != ElemType::F32)
      reader.fail(where, "master weights must be f32");
    plan.parameters.push_back(std::move(param));
  }

  for (const json &entry : reader.field(root, "steps", "plan")) {
    Step step;
    std::string where = fmt::format("step {}", plan.steps.size());
    step.kernel = reader.string(entry, "kernel", where);
    where += " (" + step.kernel + ")";
    std::string chunk = entry.value("chunk", "F");
    if (chunk.size() != 1 ||
        std::string("FBWO").find(chunk[0]) == std::string::npos)
      reader.fail(where, fmt::format("unknown chunk '{}'", chunk));
    step.chunk = chunk[0];
    step.inputs = reader.integers(entry, "inputs", where);
    step.outputs = reader.integers(entry, "outputs", where);
    for (int64_t id : step.inputs)
      checkId(id, where);
    for (int64_t id : step.outputs)
      checkId(id, where);
    step.attrs = entry.value("attrs", json::object());
    if (step.kernel == "fused") {
      // Local values: the step's inputs, then its temporaries.
      int64_t locals = static_cast<int64_t>(step.inputs.size());
      const json &temporaries = reader.field(entry, "temporaries", where);
      int64_t end = locals + static_cast<int64_t>(temporaries.size());
      for (const json &temp : temporaries) {
        int64_t index = reader.integer(temp, "index", where);
        if (index < static_cast<int64_t>(step.inputs.size()) || index >= end)
          reader.fail(where, fmt::format("temporary {} is not one of the "
                                         "local values [{}, {}) after the "
                                         "inputs",
                                         index, step.inputs.size(), end));
        step.temporaries[index] = reader.tensor(temp, where);
        locals = std::max(locals, index + 1);
      }
      auto checkLocal = [&](int64_t index) {
        if (index < 0 || index >= locals)
          reader.fail(where, fmt::format("refers to local value {}", index));
      };
      for (const json &op : reader.field(entry, "body", where)) {
        BodyOp body;
        body.op = reader.string(op, "op", where);
        body.operands = reader.integers(op, "operands", where);
        body.results = reader.integers(op, "results", where);
        body.attrs = op.value("attrs", json::object());
        for (int64_t index : body.operands)
          checkLocal(index);
        for (int64_t index : body.results)
          if (!step.temporaries.count(index))
            reader.fail(where, fmt::format("result {} of '{}' has no "
                                           "temporary",
                                           index, body.op));
        step.body.push_back(std::move(body));
      }
      step.yield = reader.integers(entry, "yield", where);
      if (step.yield.size() != step.outputs.size())
        reader.fail(where, "yields a different number of values than it "
                           "has outputs");
      for (int64_t index : step.yield)
        checkLocal(index);
    }
    if (entry.contains("cuda")) {
      const json &cuda = entry.at("cuda");
      step.cudaLibrary = cuda.value("library", "");
      step.cudaErrorFlag = cuda.value("error_flag", false);
      for (const json &launch : reader.field(cuda, "launches", where)) {
        CudaLaunch l;
        l.kernel = reader.string(launch, "kernel", where);
        std::vector<int64_t> grid = reader.integers(launch, "grid", where);
        std::vector<int64_t> block = reader.integers(launch, "block", where);
        if (grid.size() != 3 || block.size() != 3)
          reader.fail(where, "a launch needs 3 grid and 3 block sizes");
        for (int i = 0; i < 3; ++i) {
          if (grid[i] <= 0 || block[i] <= 0 || grid[i] > 0x7fffffff ||
              block[i] > 1024)
            reader.fail(where, "launch geometry out of range");
          l.grid[i] = static_cast<unsigned>(grid[i]);
          l.block[i] = static_cast<unsigned>(block[i]);
        }
        int64_t shared = launch.value("shared_bytes", int64_t(0));
        if (shared < 0 || shared > (1 << 20))
          reader.fail(where, "shared_bytes out of range");
        l.sharedBytes = static_cast<unsigned>(shared);
        for (const json &arg : reader.field(launch, "args", where)) {
          CudaArg a;
          if (arg.contains("value")) {
            a.kind = CudaArg::Kind::Value;
            a.integer = checkId(reader.integer(arg, "value", where), where);
          } else if (arg.contains("scratch")) {
            a.kind = CudaArg::Kind::Scratch;
            a.integer = reader.integer(arg, "scratch", where);
          } else if (arg.contains("error_flag")) {
            a.kind = CudaArg::Kind::ErrorFlag;
          } else if (arg.contains("i64")) {
            a.kind = CudaArg::Kind::Int;
            a.integer = reader.integer(arg, "i64", where);
          } else if (arg.contains("f32")) {
            a.kind = CudaArg::Kind::Float;
            a.number = arg.at("f32").get<double>();
          } else if (arg.contains("f64")) {
            a.kind = CudaArg::Kind::Double;
            a.number = arg.at("f64").get<double>();
          } else if (arg.contains("null")) {
            a.kind = CudaArg::Kind::Null;
          } else {
            reader.fail(where, "unknown launch argument " + arg.dump());
          }
          l.args.push_back(a);
        }
        step.cudaLaunches.push_back(std::move(l));
      }
    }
    plan.steps.push_back(std::move(step));
  }

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
    for (const Step &step : plan.steps)
      for (const CudaLaunch &launch : step.cudaLaunches) {
        if (!plan.cudaKernels.count(launch.kernel))
          reader.fail("cuda", "a step launches '" + launch.kernel +
                                  "', which the plan has no source for");
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
  return plan;
}

} // namespace

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
