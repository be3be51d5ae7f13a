//===- FusedRegion.cpp - A fused step decoded for the host ----------------===//

#include "runtime/host/FusedRegion.h"

#include "runtime/Numerics.h"
#include "runtime/Storage.h"
#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <algorithm>

namespace kiln::rt::host {

namespace {
/// Elements below which the memory-bound loops here (add, mul, copies,
/// rounding) stay serial: 4 MiB of FP32. Below it a loop takes tens of
/// microseconds, which a parallel region's fork and barrier can exceed, and
/// on a loaded machine a barrier waits for a descheduled thread (10x slower
/// adds measured at 196K elements with 2 threads on 2 busy cores).
constexpr std::int64_t kMinParallelWork = std::int64_t(1) << 20;
} // namespace

FusedRegion::FusedRegion(const Plan &plan, const Step &step, std::byte *arena)
    : body(std::get<FusedStep>(step.op).body) {
  const FusedStep &fused = std::get<FusedStep>(step.op);
  std::size_t count = step.inputs.size();
  for (const auto &[index, info] : fused.temporaries)
    count = std::max<std::size_t>(count, index + 1);
  locals.resize(count);
  auto describe = [](Local &local, const TensorInfo &info) {
    local.info = &info;
    local.elements = info.numElements();
    local.dim = info.shape.empty() ? 1 : info.shape.back();
    local.rows = local.elements / local.dim;
  };
  for (std::size_t i = 0; i < step.inputs.size(); ++i) {
    const ValueInfo &info = plan.values[step.inputs[i]];
    Local &local = locals[i];
    describe(local, info);
    std::byte *bytes = arena + info.offset;
    if (info.dtype == ElemType::I32) {
      local.ids = reinterpret_cast<const std::int32_t *>(bytes);
    } else if (info.dtype == ElemType::F32) {
      local.data = reinterpret_cast<float *>(bytes);
    } else {
      placed.emplace_back(i, floats);
      floats += local.elements;
      widens.push_back(Widen{info.dtype, bytes, i, local.elements});
    }
  }
  for (const auto &[index, info] : fused.temporaries)
    describe(locals[index], info);
  // FP32 yields of FP32 temporaries are computed in their outputs.
  for (std::size_t i = 0; i < step.outputs.size(); ++i) {
    const ValueInfo &info = plan.values[step.outputs[i]];
    std::size_t local = fused.yield[i];
    if (local >= step.inputs.size() && !locals[local].data &&
        locals[local].info->dtype == ElemType::F32 &&
        info.dtype == ElemType::F32)
      locals[local].data = reinterpret_cast<float *>(arena + info.offset);
    else
      stores.push_back(
          Store{info.dtype, local, arena + info.offset, info.numElements()});
  }
  for (const auto &[index, info] : fused.temporaries) {
    if (locals[index].data)
      continue;
    placed.emplace_back(index, floats);
    floats += locals[index].elements;
    if (info.dtype != ElemType::F32 && info.dtype != ElemType::BF16)
      narrowed = std::max<std::size_t>(narrowed, locals[index].elements);
  }
}

void FusedRegion::attach(float *scratch, std::byte *narrowScratch) {
  narrow = narrowScratch;
  for (auto [index, offset] : placed)
    locals[index].data = scratch + offset;
}

void FusedRegion::run() {
  for (const Widen &w : widens)
    widenToFloat(w.dtype, w.source, locals[w.local].data, w.elements);
  for (const BodyOp &op : body) {
    runOp(op);
    // Each op's results hold what their element type can: the same
    // rounding an unfused kernel's store would apply.
    for (int64_t index : op.results)
      round(locals[index]);
  }
  for (const Store &s : stores)
    narrowFromFloat(s.dtype, locals[s.local].data, s.target, s.elements);
}

void FusedRegion::round(const Local &local) {
  ElemType type = local.info->dtype;
  float *data = local.data;
  std::int64_t n = local.elements;
  if (type == ElemType::F32)
    return;
  if (type == ElemType::BF16) {
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
    for (std::int64_t i = 0; i < n; ++i)
      data[i] = roundToBf16(data[i]);
    return;
  }
  narrowFromFloat(type, data, narrow, n);
  widenToFloat(type, narrow, data, n);
}

void FusedRegion::runOp(const BodyOp &op) {
  auto in = [&](std::size_t i) -> const Local & {
    return locals[op.operands[i]];
  };
  auto out = [&](std::size_t i) -> float * {
    return locals[op.results[i]].data;
  };
  const Local &x = in(0);
  std::int64_t n = x.elements, dim = x.dim, rows = x.rows;
  switch (op.kind) {
  case BodyOpKind::Add: {
    const float *a = x.data, *b = in(1).data;
    float *r = out(0);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
    for (std::int64_t i = 0; i < n; ++i)
      r[i] = a[i] + b[i];
    return;
  }
  case BodyOpKind::Mul: {
    const float *a = x.data, *b = in(1).data;
    float *r = out(0);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
    for (std::int64_t i = 0; i < n; ++i)
      r[i] = a[i] * b[i];
    return;
  }
  case BodyOpKind::Cast: {
    const float *a = x.data;
    float *r = out(0);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
    for (std::int64_t i = 0; i < n; ++i)
      r[i] = a[i];
    return;
  }
  case BodyOpKind::RmsNorm:
    rmsNorm<float>(x.data, in(1).data, out(0), rows, dim, op.epsilon);
    return;
  case BodyOpKind::RmsNormGrad:
    rmsNormGrad<float>(x.data, in(1).data, in(2).data, out(0), rows, dim,
                       op.epsilon);
    return;
  case BodyOpKind::RmsNormWeightGrad:
    rmsNormWeightGrad<float>(x.data, in(1).data, out(0), rows, dim, op.epsilon);
    return;
  case BodyOpKind::LayerNorm:
    layerNorm<float>(x.data, in(1).data,
                     op.operands.size() > 2 ? in(2).data : nullptr, out(0),
                     rows, dim, op.epsilon);
    return;
  case BodyOpKind::LayerNormGrad:
    layerNormGrad<float>(x.data, in(1).data, in(2).data, out(0), rows, dim,
                         op.epsilon);
    return;
  case BodyOpKind::LayerNormWeightGrad:
    layerNormWeightGrad<float>(x.data, in(1).data, out(0), rows, dim,
                               op.epsilon);
    return;
  case BodyOpKind::Rope:
    rope<float>(x.data, op.operands.size() > 1 ? in(1).ids : nullptr, out(0),
                x.info->shape[0], x.info->shape[1], op.numHeads,
                dim / op.numHeads, op.theta, op.inverse);
    return;
  case BodyOpKind::Swiglu:
    swiglu<float>(x.data, in(1).data, out(0), n);
    return;
  case BodyOpKind::SwigluGrad:
    swigluGrad<float>(x.data, in(1).data, in(2).data, out(0), out(1),
                      in(1).elements);
    return;
  case BodyOpKind::Gelu:
    gelu<float>(x.data, out(0), n, op.tanhApprox);
    return;
  case BodyOpKind::GeluGrad:
    geluGrad<float>(x.data, in(1).data, out(0), n, op.tanhApprox);
    return;
  case BodyOpKind::Embedding:
    embedding<float>(x.data, in(1).ids, out(0), in(1).elements,
                     x.info->shape[0], dim);
    return;
  case BodyOpKind::Split: {
    // One parallel region over the rows; each row copies every part.
    const float *src = x.data;
    const std::vector<int64_t> &parts = op.results;
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
    for (std::int64_t row = 0; row < rows; ++row) {
      std::int64_t column = 0;
      for (int64_t p : parts) {
        const Local &part = locals[p];
        std::copy_n(src + row * dim + column, part.dim,
                    part.data + row * part.dim);
        column += part.dim;
      }
    }
    return;
  }
  case BodyOpKind::Concat: {
    const Local &whole = locals[op.results[0]];
    const std::vector<int64_t> &parts = op.operands;
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
    for (std::int64_t row = 0; row < rows; ++row) {
      std::int64_t column = 0;
      for (int64_t p : parts) {
        const Local &part = locals[p];
        std::copy_n(part.data + row * part.dim, part.dim,
                    whole.data + row * whole.dim + column);
        column += part.dim;
      }
    }
    return;
  }
  case BodyOpKind::ColumnSum:
    columnSum<float>(x.data, out(0), rows, dim);
    return;
  }
}

} // namespace kiln::rt::host
