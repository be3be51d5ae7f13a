//===- HostBackend.cpp - Runs a plan on the CPU ---------------------------===//

#include "runtime/host/HostBackend.h"

#include "runtime/Error.h"
#include "runtime/Numerics.h"
#include "runtime/Storage.h"
#include "runtime/host/FusedRegion.h"
#include "runtime/host/Kernels.h"

#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>

namespace kiln::rt {

namespace {

constexpr std::size_t kArenaAlignment = 256;

/// std::visit over lambdas.
template <typename... Fs> struct Overloaded : Fs... {
  using Fs::operator()...;
};
template <typename... Fs> Overloaded(Fs...) -> Overloaded<Fs...>;

/// A value widened to FP32: a pointer into the arena for f32 values, a copy
/// otherwise.
struct FloatView {
  const float *data = nullptr;
  std::vector<float> storage;
};

/// Where a kernel writes an output: the arena for f32 values, a buffer
/// otherwise.
struct OutputView {
  float *data = nullptr;
  std::vector<float> storage;
  int64_t value = 0;
};

int64_t lastDim(const TensorInfo &info) {
  return info.shape.empty() ? 1 : info.shape.back();
}

void freeArena(std::byte *p) { std::free(p); }

} // namespace

HostBackend::HostBackend(const Plan &plan, Communicator *comm)
    : planRef(plan), comm(comm), arena(nullptr, freeArena) {
  requireRanks(plan.dataParallel, comm);
  // Plan::parse checked every step; the profile groups fused regions by
  // their ops.
  for (const Step &step : plan.steps) {
    std::string key(step.kernel());
    if (const auto *fused = std::get_if<FusedStep>(&step.op))
      for (std::size_t j = 0; j < fused->body.size(); ++j) {
        key += j ? '+' : ':';
        key += fused->body[j].name();
      }
    stepKeys.push_back(key);
  }
  stepSeconds.assign(plan.steps.size(), 0.0);
  stepGemmSeconds.assign(plan.steps.size(), 0.0);
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
  // Each fused body decoded once, against the arena; steps run one at a
  // time, so the regions share one scratch buffer.
  std::size_t floats = 0, narrowBytes = 0;
  for (const Step &step : plan.steps) {
    if (!std::holds_alternative<FusedStep>(step.op)) {
      fusedRegions.push_back(nullptr);
      continue;
    }
    try {
      fusedRegions.push_back(
          std::make_unique<host::FusedRegion>(plan, step, arena.get()));
    } catch (const Error &error) {
      throw Error(fmt::format("step {} (fused): {}", fusedRegions.size(),
                              error.what()));
    }
    floats = std::max(floats, fusedRegions.back()->scratchFloats());
    narrowBytes = std::max(narrowBytes, fusedRegions.back()->narrowBytes());
  }
  fusedScratch.resize(floats);
  fusedNarrow.resize(narrowBytes);
  for (const auto &region : fusedRegions)
    if (region)
      region->attach(fusedScratch.data(), fusedNarrow.data());
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
  if (!info.strided()) {
    widenToFloat(info.dtype, arena.get() + info.offset, data.data(),
                 data.size());
    return data;
  }
  int64_t dim = info.lastDim(), rows = info.numElements() / dim;
  std::size_t pitchBytes = info.pitch() * elemSize(info.dtype);
  for (int64_t r = 0; r < rows; ++r)
    widenToFloat(info.dtype, arena.get() + info.offset + r * pitchBytes,
                 data.data() + r * dim, dim);
  return data;
}

void HostBackend::write(int64_t value, std::span<const float> data) {
  const ValueInfo &info = checkWrite(planRef, value, data.size());
  if (!info.strided()) {
    narrowFromFloat(info.dtype, data.data(), arena.get() + info.offset,
                    data.size());
    return;
  }
  int64_t dim = info.lastDim(), rows = info.numElements() / dim;
  std::size_t pitchBytes = info.pitch() * elemSize(info.dtype);
  for (int64_t r = 0; r < rows; ++r)
    narrowFromFloat(info.dtype, data.data() + r * dim,
                    arena.get() + info.offset + r * pitchBytes, dim);
}

void HostBackend::writeInt32(int64_t value, std::span<const int32_t> data) {
  const ValueInfo &info =
      checkWrite(planRef, value, data.size(), /*int32=*/true);
  std::memcpy(arena.get() + info.offset, data.data(), data.size_bytes());
}

const std::map<std::string, double> &HostBackend::kernelSeconds() const {
  // KILN_PROFILE=steps: one row per step, to find the slow ones.
  const char *profile = std::getenv("KILN_PROFILE");
  bool perStep = profile && std::string_view(profile) == "steps";
  seconds.clear();
  for (std::size_t i = 0; i < stepKeys.size(); ++i) {
    seconds[perStep ? fmt::format("step {:4} {}", i, stepKeys[i])
                    : stepKeys[i]] += stepSeconds[i] - stepGemmSeconds[i];
    // The GEMMs inside another kernel (linear_cross_entropy) are GEMM time.
    if (stepGemmSeconds[i] > 0)
      seconds[perStep ? fmt::format("step {:4} {} gemm", i, stepKeys[i])
                      : "gemm"] += stepGemmSeconds[i];
  }
  return seconds;
}

void HostBackend::runStep(std::size_t index, const Step &step) {
  auto start = std::chrono::steady_clock::now();
  if (fusedRegions[index])
    fusedRegions[index]->run();
  else
    execute(step, stepGemmSeconds[index]);
  stepSeconds[index] +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
}

void HostBackend::execute(const Step &step, double &gemmSeconds) {
  const auto &values = planRef.values;
  // Row-strided values (Plan::parse let only the attention kernels' q, k,
  // v and their gradients be) are read and written in place with their
  // pitch; a narrower dtype goes through a contiguous FP32 copy.
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
  // A collective's f32 tensors, in place.
  auto buffersOf = [&](const std::vector<int64_t> &tensors) {
    std::vector<std::span<float>> buffers;
    for (int64_t id : tensors)
      buffers.emplace_back(f32(id), values[id].numElements());
    return buffers;
  };
  // This rank's ZeRO-1 shard of a tensor (all of it with one shard).
  auto shardOf = [&](const ValueInfo &info, int64_t shards) {
    return plan::shardOf(info.numElements(), shards, comm ? comm->rank() : 0);
  };
  // An output computed in FP32: in place for f32 values (Plan::parse
  // checked that outputs overlap no input), else in a buffer that finish
  // rounds into the value.
  auto output = [&](int64_t id) {
    OutputView o;
    o.value = id;
    const ValueInfo &info = values[id];
    if (info.dtype == ElemType::F32) {
      o.data = reinterpret_cast<float *>(arena.get() + info.offset);
    } else {
      o.storage.resize(info.numElements());
      o.data = o.storage.data();
    }
    return o;
  };
  // The row pitch a kernel sees: the value's, when it reads or writes the
  // arena in place (FP32); 0 (contiguous) for a widened copy.
  auto pitch = [&](int64_t id) -> int64_t {
    const ValueInfo &info = values[id];
    return info.dtype == ElemType::F32 ? info.rowStride : 0;
  };
  auto finish = [&](const OutputView &o) {
    if (!o.storage.empty())
      write(o.value, o.storage);
  };
  auto store = [&](int64_t id, const std::vector<float> &data) {
    write(id, data);
  };
  const auto &in = step.inputs;
  const auto &out = step.outputs;
  // An attention step's cu_seqlens, the input after its `operands` fixed
  // ones (before the rope table), if it has one.
  auto cuSeqlens =
      [&](const FlashAttentionAttrs &f,
          std::size_t operands) -> std::pair<const int32_t *, int64_t> {
    if (in.size() <= operands + (f.rope ? 1 : 0))
      return {nullptr, 0};
    return {ids(in[operands]), values[in[operands]].numElements()};
  };
  // An attention step's rope table (its last input, if `rope`), with the
  // rounding of the rotated Q and K to their type.
  auto ropeOnLoad = [&](const FlashAttentionAttrs &f, std::size_t query) {
    if (!f.rope)
      return host::RopeOnLoad{};
    return host::RopeOnLoad{
        f32(in.back()),
        values[in[query]].dtype == ElemType::BF16 ? &roundToBf16 : nullptr};
  };

  auto kernels = Overloaded{
      [&](const FillStep &fill) {
        std::vector<float> data(values[out[0]].numElements(),
                                static_cast<float>(fill.value));
        store(out[0], data);
      },
      [&](const GemmStep &g) {
        GemmOperands operands = gemmOperands(step, g);
        FloatView a = view(in[0]), b = view(in[1]);
        std::optional<FloatView> bias, aux;
        if (operands.bias >= 0)
          bias = view(operands.bias);
        if (operands.aux >= 0)
          aux = view(operands.aux);
        OutputView c = output(out[0]);
        host::gemm<float>(a.data, b.data, c.data, g.batch, g.m, g.n, g.k,
                          g.transposeA, g.transposeB,
                          bias ? bias->data : nullptr, /*accumulate=*/false);
        // The epilogue, on the FP32 product (cuBLASLt's semantics): the
        // unfused ops' kernels, without rounding between. Its extra output
        // is the pre-activation or the bias gradient.
        int64_t extraId = operands.preActivation >= 0 ? operands.preActivation
                                                      : operands.biasGrad;
        std::optional<OutputView> extra;
        if (extraId >= 0)
          extra = output(extraId);
        host::gemmEpilogue<float>(
            g.epilogue, a.data, b.data, aux ? aux->data : nullptr, c.data,
            extra ? extra->data : nullptr, g.batch, g.m, g.n, g.k);
        if (extra)
          finish(*extra);
        finish(c);
      },
      [&](const FlashForwardStep &f) {
        const ValueInfo &query = values[in[0]];
        int64_t batch = query.shape[0], seq = query.shape[1];
        int64_t headDim = query.shape[2] / f.numHeads;
        // The tiled algorithm with the tile sizes nn-tile-attention chose.
        host::FlashBlocks blocks{f.blockQ, f.blockK};
        auto [cu, numCu] = cuSeqlens(f, 3);
        FloatView q = view(in[0]), k = view(in[1]), v = view(in[2]);
        OutputView o = output(out[0]);
        host::RowStrides strides{pitch(in[0]), pitch(in[1]), pitch(in[2])};
        host::flashAttentionForward<float>(
            q.data, k.data, v.data, o.data, f32(out[1]), batch, seq, f.numHeads,
            f.numKvHeads, headDim, f.scale, f.causal, cu, numCu, blocks,
            strides, ropeOnLoad(f, 0));
        finish(o);
      },
      [&](const FlashBackwardStep &f) {
        const ValueInfo &query = values[in[1]];
        int64_t batch = query.shape[0], seq = query.shape[1];
        int64_t headDim = query.shape[2] / f.numHeads;
        host::FlashBlocks blocks{f.blockQ, f.blockK};
        auto [cu, numCu] = cuSeqlens(f, 6);
        FloatView dout = view(in[0]), q = view(in[1]), k = view(in[2]),
                  v = view(in[3]), o = view(in[4]);
        OutputView dq = output(out[0]), dk = output(out[1]),
                   dv = output(out[2]);
        host::RowStrides strides{pitch(in[1]),  pitch(in[2]),  pitch(in[3]),
                                 pitch(out[0]), pitch(out[1]), pitch(out[2])};
        host::flashAttentionBackward<float>(
            dout.data, q.data, k.data, v.data, o.data, f32(in[5]), dq.data,
            dk.data, dv.data, batch, seq, f.numHeads, f.numKvHeads, headDim,
            f.scale, f.causal, cu, numCu, blocks, strides, ropeOnLoad(f, 1));
        finish(dq);
        finish(dk);
        finish(dv);
      },
      [&](const RopeTableStep &r) {
        const ValueInfo &table = values[out[0]];
        host::ropeTable(in.empty() ? nullptr : ids(in[0]), f32(out[0]),
                        table.shape[0], table.shape[1], table.shape[2],
                        r.theta);
      },
      [&](const CrossEntropyStep &c) {
        FloatView logits = view(in[0]);
        int64_t vocab = lastDim(values[in[0]]);
        double loss = host::crossEntropy<float>(
            logits.data, ids(in[1]), values[in[0]].numElements() / vocab, vocab,
            c.ignoreIndex);
        store(out[0], {static_cast<float>(loss)});
      },
      [&](const CrossEntropyGradStep &c) {
        double dloss = view(in[0]).data[0];
        FloatView logits = view(in[1]);
        int64_t vocab = lastDim(values[in[1]]);
        OutputView dlogits = output(out[0]);
        host::crossEntropyGrad<float>(
            dloss, logits.data, ids(in[2]), dlogits.data,
            values[in[1]].numElements() / vocab, vocab, c.ignoreIndex);
        finish(dlogits);
      },
      [&](const EmbeddingGradStep &) {
        FloatView dy = view(in[0]);
        const ValueInfo &table = values[out[0]];
        OutputView dtable = output(out[0]);
        host::embeddingGrad<float>(dy.data, ids(in[1]), dtable.data,
                                   values[in[1]].numElements(), table.shape[0],
                                   lastDim(table));
        finish(dtable);
      },
      [&](const GlobalNormStep &g) {
        // ZeRO-1: this rank's shards, the squares summed over the ranks.
        double sum = 0;
        for (int64_t id : in) {
          FloatView grad = view(id);
          plan::Shard shard = shardOf(values[id], g.shards);
          sum +=
              host::sumOfSquares<float>(grad.data + shard.offset, shard.count);
        }
        if (g.shards > 1 && comm)
          comm->allReduceSum(std::span<double>(&sum, 1));
        store(out[0], {static_cast<float>(std::sqrt(sum))});
      },
      [&](const AdamWStep &o) {
        // In place: the outputs alias the params, moments and compute
        // copies (Plan checked). Each parameter is updated as its own step
        // would update it, its BF16 compute copy (if any) rounded from the
        // new master.
        std::size_t n = o.numParams(in.size());
        std::size_t scalars = in.size() - 3;
        float lr = *f32(in[scalars]), stepNumber = *f32(in[scalars + 1]),
              norm = *f32(in[scalars + 2]);
        for (std::size_t i = 0; i < n; ++i) {
          // ZeRO-1: this rank's shard of the parameter, with its moments
          // (of the whole gradient; the master whole, or that shard).
          int64_t elements = values[in[i]].numElements();
          plan::Shard shard = shardOf(values[in[n + i]], o.shards);
          bool shardedMaster = elements != values[in[n + i]].numElements();
          host::adamw<float>(f32(in[i]) + (shardedMaster ? 0 : shard.offset),
                             f32(in[n + i]) + shard.offset, f32(in[2 * n + i]),
                             f32(in[3 * n + i]), shard.count, lr, stepNumber,
                             norm, o.beta1, o.beta2, o.epsilon, o.weightDecay,
                             o.maxGradNorm);
          if (o.computeCopies)
            narrowFromFloat(ElemType::BF16, f32(in[i]),
                            arena.get() + values[in[4 * n + i]].offset,
                            elements);
        }
      },
      [&](const GradAccumulateStep &) {
        // In place: the outputs are the accumulators (Plan checked).
        std::size_t n = out.size();
        bool first = *f32(in[2 * n]) == 0.0f;
        for (std::size_t i = 0; i < n; ++i)
          host::accumulateGrad<float>(f32(in[i]), f32(in[n + i]),
                                      values[in[i]].numElements(), first);
      },
      [&](const AllReduceStep &) {
        // In place, f32 (Plan checked); one process reduces nothing.
        if (comm)
          comm->allReduceSum(buffersOf(in));
      },
      [&](const ReduceScatterStep &) {
        if (comm)
          comm->reduceScatterSum(buffersOf(in));
      },
      [&](const AllGatherStep &) {
        if (in.size() == out.size()) { // in place
          if (comm)
            comm->allGatherShards(buffersOf(in));
          return;
        }
        // N shards into N destinations (Plan checked): this rank's shard
        // into its place, then every rank's.
        std::size_t n = out.size();
        // (One gather per element size, in a fixed order on every rank.)
        std::map<std::size_t, std::vector<std::span<std::byte>>> buffers;
        for (std::size_t i = 0; i < n; ++i) {
          const ValueInfo &dest = values[in[n + i]];
          std::size_t elementBytes = plan::dtypeBytes(dest.dtype);
          plan::Shard shard = shardOf(dest, planRef.dataParallel);
          std::byte *base = arena.get() + dest.offset;
          std::memcpy(base + shard.offset * elementBytes,
                      arena.get() + values[in[i]].offset,
                      shard.count * elementBytes);
          buffers[elementBytes].emplace_back(base,
                                             dest.numElements() * elementBytes);
        }
        for (const auto &[elementBytes, group] : buffers)
          if (comm)
            comm->allGatherShards(group, elementBytes);
      },
      [&](const FusedStep &) {
        throw Error("a fused step that was not decoded at load");
      },
      [&](const LinearCrossEntropyStep &l) {
        const ValueInfo &input = values[in[0]];
        int64_t hidden = lastDim(input), vocab = values[in[1]].shape[0];
        FloatView x = view(in[0]), w = view(in[1]);
        double dloss = view(in[3]).data[0];
        // BF16 operands: the logits (unless fp32_logits) and their gradient
        // rounded to BF16, as the unfused step stores them.
        auto roundBf16 = [](float *data, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= (1 << 14))
          for (int64_t i = 0; i < n; ++i)
            data[i] = roundToBf16(data[i]);
        };
        bool bf16 = input.dtype == ElemType::BF16;
        // (An evaluation wants the loss alone: no gradient is computed.)
        std::optional<OutputView> dx, dw;
        if (!evaluating()) {
          dx = output(out[1]);
          dw = output(out[2]);
        }
        double loss = host::linearCrossEntropy<float>(
            x.data, w.data, ids(in[2]), dloss, f32(out[3]),
            dx ? dx->data : nullptr, dw ? dw->data : nullptr,
            input.numElements() / hidden, hidden, vocab, l.chunkRows,
            l.ignoreIndex, bf16 && !l.fp32Logits ? +roundBf16 : nullptr,
            bf16 ? +roundBf16 : nullptr, &gemmSeconds);
        if (dx) {
          finish(*dx);
          finish(*dw);
        }
        store(out[0], {static_cast<float>(loss)});
      }};
  std::visit(kernels, step.op);
}

} // namespace kiln::rt
