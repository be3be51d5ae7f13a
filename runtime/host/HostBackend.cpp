//===- HostBackend.cpp - Runs a plan on the CPU ---------------------------===//

#include "runtime/host/HostBackend.h"

#include "runtime/Error.h"
#include "runtime/Numerics.h"
#include "runtime/Storage.h"
#include "runtime/host/Kernels.h"

#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>

namespace kiln::rt {

namespace {

constexpr std::size_t kArenaAlignment = 256;

/// A value widened to FP32: a pointer into the arena for f32 values, a copy
/// otherwise.
struct FloatView {
  const float *data = nullptr;
  std::vector<float> storage;
};

/// Rounds FP32 data in place to what `type` can hold.
void roundTo(ElemType type, std::vector<float> &data) {
  if (type == ElemType::F32)
    return;
  if (type == ElemType::BF16) {
    for (float &x : data)
      x = roundToBf16(x);
    return;
  }
  std::vector<std::byte> tmp(data.size() * elemSize(type));
  narrowFromFloat(type, data.data(), tmp.data(), data.size());
  widenToFloat(type, tmp.data(), data.data(), data.size());
}

int64_t lastDim(const TensorInfo &info) {
  return info.shape.empty() ? 1 : info.shape.back();
}

double attrDouble(const nlohmann::json &attrs, const char *key,
                  double fallback) {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : it->get<double>();
}

int64_t attrInt(const nlohmann::json &attrs, const char *key) {
  auto it = attrs.find(key);
  if (it == attrs.end())
    throw Error(fmt::format("kernel attribute '{}' is missing", key));
  return it->get<int64_t>();
}

bool attrFlag(const nlohmann::json &attrs, const char *key) {
  auto it = attrs.find(key);
  return it != attrs.end() && it->get<bool>();
}

const std::set<std::string> &hostKernels() {
  static const std::set<std::string> kernels = {"fill",
                                                "gemm",
                                                "flash_attention_fwd",
                                                "flash_attention_bwd",
                                                "cross_entropy",
                                                "cross_entropy_grad",
                                                "embedding_grad",
                                                "global_norm",
                                                "adamw",
                                                "fused"};
  return kernels;
}

const std::set<std::string> &fusedOps() {
  static const std::set<std::string> ops = {"add",
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
  return ops;
}

void freeArena(std::byte *p) { std::free(p); }

} // namespace

HostBackend::HostBackend(const Plan &plan)
    : planRef(plan), arena(nullptr, freeArena) {
  for (std::size_t i = 0; i < plan.steps.size(); ++i) {
    const Step &step = plan.steps[i];
    std::string key = step.kernel;
    for (std::size_t j = 0; j < step.body.size(); ++j)
      key += (j ? "+" : ":") + step.body[j].op;
    stepKeys.push_back(key);
    if (!hostKernels().count(step.kernel))
      throw Error(fmt::format("plan step {}: the host backend has no kernel "
                              "'{}'",
                              i, step.kernel));
    for (const BodyOp &op : step.body)
      if (!fusedOps().count(op.op))
        throw Error(fmt::format("plan step {}: the host backend cannot run "
                                "'{}' inside a fused region",
                                i, op.op));
  }
  std::size_t bytes =
      (static_cast<std::size_t>(plan.arenaBytes) + kArenaAlignment - 1) /
      kArenaAlignment * kArenaAlignment;
  bytes = std::max(bytes, kArenaAlignment);
  auto *memory =
      static_cast<std::byte *>(std::aligned_alloc(kArenaAlignment, bytes));
  if (!memory)
    throw Error(fmt::format("cannot allocate the {}-byte arena of the step",
                            plan.arenaBytes));
  std::memset(memory, 0, bytes);
  arena.reset(memory);
}

HostBackend::~HostBackend() = default;

std::string HostBackend::describe() const {
  return fmt::format("host ({} OpenMP threads)", omp_get_max_threads());
}

std::span<std::byte> HostBackend::bytes(int64_t value) {
  const ValueInfo &info = planRef.values.at(value);
  return {arena.get() + info.offset, static_cast<std::size_t>(info.bytes())};
}

std::vector<float> HostBackend::read(int64_t value) {
  const ValueInfo &info = planRef.values.at(value);
  std::vector<float> data(info.numElements());
  widenToFloat(info.dtype, arena.get() + info.offset, data.data(), data.size());
  return data;
}

void HostBackend::write(int64_t value, std::span<const float> data) {
  const ValueInfo &info = checkWrite(planRef, value, data.size());
  narrowFromFloat(info.dtype, data.data(), arena.get() + info.offset,
                  data.size());
}

void HostBackend::writeInt32(int64_t value, std::span<const int32_t> data) {
  const ValueInfo &info =
      checkWrite(planRef, value, data.size(), /*int32=*/true);
  std::memcpy(arena.get() + info.offset, data.data(), data.size_bytes());
}

void HostBackend::runStep(std::size_t index, const Step &step) {
  auto start = std::chrono::steady_clock::now();
  execute(step);
  seconds[stepKeys[index]] +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
}

void HostBackend::execute(const Step &step) {
  const auto &values = planRef.values;
  auto view = [&](int64_t id) {
    const ValueInfo &info = values[id];
    FloatView v;
    if (info.dtype == ElemType::F32) {
      v.data = reinterpret_cast<const float *>(arena.get() + info.offset);
    } else {
      v.storage = read(id);
      v.data = v.storage.data();
    }
    return v;
  };
  auto ids = [&](int64_t id) {
    const ValueInfo &info = values[id];
    if (info.dtype != ElemType::I32)
      throw Error(fmt::format("expects i32 ids, got {}", elemName(info.dtype)));
    return reinterpret_cast<const int32_t *>(arena.get() + info.offset);
  };
  auto f32 = [&](int64_t id) {
    const ValueInfo &info = values[id];
    if (info.dtype != ElemType::F32)
      throw Error(
          fmt::format("expects an f32 value, got {}", elemName(info.dtype)));
    return reinterpret_cast<float *>(arena.get() + info.offset);
  };
  auto outBuffer = [&](int64_t id) {
    return std::vector<float>(values[id].numElements());
  };
  auto store = [&](int64_t id, const std::vector<float> &data) {
    write(id, data);
  };
  const auto &in = step.inputs;
  const auto &out = step.outputs;
  const nlohmann::json &attrs = step.attrs;

  if (step.kernel == "fill") {
    std::vector<float> data(values[out[0]].numElements(),
                            static_cast<float>(attrDouble(attrs, "value", 0)));
    store(out[0], data);
  } else if (step.kernel == "gemm") {
    FloatView a = view(in[0]), b = view(in[1]);
    std::optional<FloatView> bias;
    if (in.size() > 2)
      bias = view(in[2]);
    std::vector<float> c = outBuffer(out[0]);
    host::gemm<float>(a.data, b.data, c.data(), attrInt(attrs, "batch"),
                      attrInt(attrs, "m"), attrInt(attrs, "n"),
                      attrInt(attrs, "k"), attrFlag(attrs, "transpose_a"),
                      attrFlag(attrs, "transpose_b"),
                      bias ? bias->data : nullptr, /*accumulate=*/false);
    store(out[0], c);
  } else if (step.kernel == "flash_attention_fwd" ||
             step.kernel == "flash_attention_bwd") {
    bool backward = step.kernel == "flash_attention_bwd";
    std::size_t first = backward ? 1 : 0; // the query operand
    const ValueInfo &query = values[in[first]];
    int64_t batch = query.shape[0], seq = query.shape[1];
    int64_t heads = attrInt(attrs, "num_heads");
    int64_t kvHeads = attrInt(attrs, "num_kv_heads");
    int64_t headDim = query.shape[2] / heads;
    double scale = attrDouble(attrs, "scale", 1.0 / std::sqrt(double(headDim)));
    bool causal = attrFlag(attrs, "causal");
    // The tiled algorithm with the tile sizes nn-tile-attention chose.
    host::FlashBlocks blocks{attrInt(attrs, "block_q"),
                             attrInt(attrs, "block_k")};
    std::size_t numOperands = backward ? 6 : 3;
    const int32_t *cu = nullptr;
    int64_t numCu = 0;
    if (in.size() > numOperands) {
      cu = ids(in[numOperands]);
      numCu = values[in[numOperands]].numElements();
    }
    if (!backward) {
      FloatView q = view(in[0]), k = view(in[1]), v = view(in[2]);
      std::vector<float> o = outBuffer(out[0]);
      host::flashAttentionForward<float>(
          q.data, k.data, v.data, o.data(), f32(out[1]), batch, seq, heads,
          kvHeads, headDim, scale, causal, cu, numCu, blocks);
      store(out[0], o);
    } else {
      FloatView dout = view(in[0]), q = view(in[1]), k = view(in[2]),
                v = view(in[3]), o = view(in[4]);
      std::vector<float> dq = outBuffer(out[0]), dk = outBuffer(out[1]),
                         dv = outBuffer(out[2]);
      host::flashAttentionBackward<float>(
          dout.data, q.data, k.data, v.data, o.data, f32(in[5]), dq.data(),
          dk.data(), dv.data(), batch, seq, heads, kvHeads, headDim, scale,
          causal, cu, numCu, blocks);
      store(out[0], dq);
      store(out[1], dk);
      store(out[2], dv);
    }
  } else if (step.kernel == "cross_entropy") {
    FloatView logits = view(in[0]);
    int64_t vocab = lastDim(values[in[0]]);
    double loss = host::crossEntropy<float>(
        logits.data, ids(in[1]), values[in[0]].numElements() / vocab, vocab,
        attrInt(attrs, "ignore_index"));
    store(out[0], {static_cast<float>(loss)});
  } else if (step.kernel == "cross_entropy_grad") {
    double dloss = view(in[0]).data[0];
    FloatView logits = view(in[1]);
    int64_t vocab = lastDim(values[in[1]]);
    std::vector<float> dlogits = outBuffer(out[0]);
    host::crossEntropyGrad<float>(dloss, logits.data, ids(in[2]),
                                  dlogits.data(),
                                  values[in[1]].numElements() / vocab, vocab,
                                  attrInt(attrs, "ignore_index"));
    store(out[0], dlogits);
  } else if (step.kernel == "embedding_grad") {
    FloatView dy = view(in[0]);
    const ValueInfo &table = values[out[0]];
    std::vector<float> dtable = outBuffer(out[0]);
    host::embeddingGrad<float>(dy.data, ids(in[1]), dtable.data(),
                               values[in[1]].numElements(), table.shape[0],
                               lastDim(table));
    store(out[0], dtable);
  } else if (step.kernel == "global_norm") {
    double sum = 0;
    for (int64_t id : in) {
      FloatView g = view(id);
      sum += host::sumOfSquares<float>(g.data, values[id].numElements());
    }
    store(out[0], {static_cast<float>(std::sqrt(sum))});
  } else if (step.kernel == "adamw") {
    // In place: the outputs alias param, exp_avg and exp_avg_sq.
    float *param = f32(in[0]);
    host::adamw<float>(
        param, f32(in[1]), f32(in[2]), f32(in[3]), values[in[0]].numElements(),
        *f32(in[4]), *f32(in[5]), *f32(in[6]), attrDouble(attrs, "beta1", 0.9),
        attrDouble(attrs, "beta2", 0.95), attrDouble(attrs, "epsilon", 1e-8),
        attrDouble(attrs, "weight_decay", 0.0),
        attrDouble(attrs, "max_grad_norm", 0.0));
    // Outputs (param, exp_avg, exp_avg_sq) alias inputs 0, 2 and 3.
    for (auto [o, i] : {std::pair{0, 0}, {1, 2}, {2, 3}})
      if (values[out[o]].offset != values[in[i]].offset)
        throw Error("adamw must update its parameter and moments in place");
  } else if (step.kernel == "fused") {
    runFused(step);
  } else {
    throw Error(fmt::format("no host kernel '{}'", step.kernel));
  }
}

void HostBackend::runFused(const Step &step) {
  // Local values: the step's inputs (from the arena), then temporaries.
  struct Local {
    TensorInfo info;
    std::vector<float> data;      // floating-point values
    const int32_t *ids = nullptr; // i32 values
  };
  std::map<int64_t, Local> locals;
  for (std::size_t i = 0; i < step.inputs.size(); ++i) {
    const ValueInfo &info = planRef.values[step.inputs[i]];
    Local local{info, {}, nullptr};
    if (info.dtype == ElemType::I32)
      local.ids = reinterpret_cast<const int32_t *>(arena.get() + info.offset);
    else
      local.data = read(step.inputs[i]);
    locals[i] = std::move(local);
  }
  auto operand = [&](const BodyOp &op, std::size_t i) -> Local & {
    if (i >= op.operands.size())
      throw Error(
          fmt::format("'{}' expects at least {} operands", op.op, i + 1));
    return locals.at(op.operands[i]);
  };
  auto result = [&](const BodyOp &op, std::size_t i) -> Local & {
    if (i >= op.results.size())
      throw Error(
          fmt::format("'{}' expects at least {} results", op.op, i + 1));
    int64_t index = op.results[i];
    Local &local = locals[index];
    local.info = step.temporaries.at(index);
    local.data.assign(local.info.numElements(), 0.0f);
    return local;
  };

  for (const BodyOp &op : step.body) {
    const nlohmann::json &attrs = op.attrs;
    const std::string &name = op.op;
    Local &x = operand(op, 0);
    int64_t n = x.info.numElements();
    int64_t dim = lastDim(x.info);
    int64_t rows = dim == 0 ? 0 : n / dim;
    double eps = attrDouble(attrs, "epsilon", 1e-6);
    if (name == "add" || name == "mul") {
      Local &y = operand(op, 1);
      Local &r = result(op, 0);
      for (int64_t i = 0; i < n; ++i)
        r.data[i] =
            name == "add" ? x.data[i] + y.data[i] : x.data[i] * y.data[i];
    } else if (name == "cast") {
      result(op, 0).data = x.data;
    } else if (name == "rms_norm") {
      Local &w = operand(op, 1);
      host::rmsNorm<float>(x.data.data(), w.data.data(),
                           result(op, 0).data.data(), rows, dim, eps);
    } else if (name == "rms_norm_grad") {
      Local &in = operand(op, 1), &w = operand(op, 2);
      host::rmsNormGrad<float>(x.data.data(), in.data.data(), w.data.data(),
                               result(op, 0).data.data(), rows, dim, eps);
    } else if (name == "rms_norm_weight_grad") {
      Local &in = operand(op, 1);
      host::rmsNormWeightGrad<float>(x.data.data(), in.data.data(),
                                     result(op, 0).data.data(), rows, dim, eps);
    } else if (name == "layer_norm") {
      Local &w = operand(op, 1);
      const float *bias =
          op.operands.size() > 2 ? operand(op, 2).data.data() : nullptr;
      host::layerNorm<float>(x.data.data(), w.data.data(), bias,
                             result(op, 0).data.data(), rows, dim,
                             attrDouble(attrs, "epsilon", 1e-5));
    } else if (name == "layer_norm_grad") {
      Local &in = operand(op, 1), &w = operand(op, 2);
      host::layerNormGrad<float>(x.data.data(), in.data.data(), w.data.data(),
                                 result(op, 0).data.data(), rows, dim,
                                 attrDouble(attrs, "epsilon", 1e-5));
    } else if (name == "layer_norm_weight_grad") {
      Local &in = operand(op, 1);
      host::layerNormWeightGrad<float>(x.data.data(), in.data.data(),
                                       result(op, 0).data.data(), rows, dim,
                                       attrDouble(attrs, "epsilon", 1e-5));
    } else if (name == "rope") {
      int64_t heads = attrInt(attrs, "num_heads");
      const int32_t *positions =
          op.operands.size() > 1 ? operand(op, 1).ids : nullptr;
      host::rope<float>(x.data.data(), positions, result(op, 0).data.data(),
                        x.info.shape[0], x.info.shape[1], heads, dim / heads,
                        attrDouble(attrs, "theta", 10000.0),
                        attrFlag(attrs, "inverse"));
    } else if (name == "swiglu") {
      Local &up = operand(op, 1);
      host::swiglu<float>(x.data.data(), up.data.data(),
                          result(op, 0).data.data(), n);
    } else if (name == "swiglu_grad") {
      Local &gate = operand(op, 1), &up = operand(op, 2);
      Local &dgate = result(op, 0);
      Local &dup = result(op, 1);
      host::swigluGrad<float>(x.data.data(), gate.data.data(), up.data.data(),
                              dgate.data.data(), dup.data.data(),
                              gate.info.numElements());
    } else if (name == "gelu" || name == "gelu_grad") {
      bool tanhApprox = attrs.value("approximate", "none") == "tanh";
      if (name == "gelu") {
        host::gelu<float>(x.data.data(), result(op, 0).data.data(), n,
                          tanhApprox);
      } else {
        Local &in = operand(op, 1);
        host::geluGrad<float>(x.data.data(), in.data.data(),
                              result(op, 0).data.data(), n, tanhApprox);
      }
    } else if (name == "embedding") {
      Local &ids = operand(op, 1);
      if (!ids.ids)
        throw Error("embedding expects i32 ids");
      host::embedding<float>(x.data.data(), ids.ids, result(op, 0).data.data(),
                             ids.info.numElements(), x.info.shape[0], dim);
    } else if (name == "split") {
      int64_t column = 0;
      for (std::size_t i = 0; i < op.results.size(); ++i) {
        Local &part = result(op, i);
        int64_t width = lastDim(part.info);
        for (int64_t row = 0; row < rows; ++row)
          std::copy_n(x.data.data() + row * dim + column, width,
                      part.data.data() + row * width);
        column += width;
      }
    } else if (name == "concat") {
      Local &r = result(op, 0);
      int64_t total = lastDim(r.info);
      int64_t column = 0;
      for (std::size_t i = 0; i < op.operands.size(); ++i) {
        Local &part = operand(op, i);
        int64_t width = lastDim(part.info);
        for (int64_t row = 0; row < rows; ++row)
          std::copy_n(part.data.data() + row * width, width,
                      r.data.data() + row * total + column);
        column += width;
      }
    } else if (name == "column_sum") {
      host::columnSum<float>(x.data.data(), result(op, 0).data.data(), rows,
                             dim);
    } else {
      throw Error(fmt::format("no host implementation of '{}' in a fused "
                              "region",
                              name));
    }
    // Each op's results hold what their element type can: the same rounding
    // an unfused kernel's store would apply.
    for (int64_t index : op.results)
      roundTo(locals[index].info.dtype, locals[index].data);
  }
  for (std::size_t i = 0; i < step.outputs.size(); ++i)
    write(step.outputs[i], locals.at(step.yield[i]).data);
}

} // namespace kiln::rt
