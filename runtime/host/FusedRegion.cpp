//===- FusedRegion.cpp - A fused step decoded for the host ----------------===//

#include "runtime/host/FusedRegion.h"

#include "runtime/Numerics.h"
#include "runtime/Storage.h"
#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <algorithm>

namespace kiln::rt::host {

using detail::kMinParallelWork;

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
  // Scratch offsets first, pointers once the buffer has its size.
  std::vector<std::pair<std::size_t, std::size_t>> placed; // local, offset
  std::size_t floats = 0;
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
    }
  }
  std::int64_t largest = 0;
  for (const auto &[index, info] : fused.temporaries) {
    describe(locals[index], info);
    placed.emplace_back(index, floats);
    floats += locals[index].elements;
    if (info.dtype != ElemType::F32 && info.dtype != ElemType::BF16)
      largest = std::max(largest, locals[index].elements);
  }
  scratch.resize(floats);
  narrow.resize(static_cast<std::size_t>(largest));
  for (auto [index, offset] : placed)
    locals[index].data = scratch.data() + offset;
  for (std::size_t i = 0; i < step.inputs.size(); ++i) {
    const ValueInfo &info = plan.values[step.inputs[i]];
    if (info.dtype != ElemType::I32 && info.dtype != ElemType::F32)
      widens.push_back(Widen{info.dtype, arena + info.offset, locals[i].data,
                             locals[i].elements});
  }
  for (std::size_t i = 0; i < step.outputs.size(); ++i) {
    const ValueInfo &info = plan.values[step.outputs[i]];
    stores.push_back(Store{info.dtype, locals[fused.yield[i]].data,
                           arena + info.offset, info.numElements()});
  }
}

void FusedRegion::run() {
  for (const Widen &w : widens)
    widenToFloat(w.dtype, w.source, w.data, w.elements);
  for (const BodyOp &op : body) {
    runOp(op);
    // Each op's results hold what their element type can: the same
    // rounding an unfused kernel's store would apply.
    for (int64_t index : op.results)
      round(locals[index]);
  }
  for (const Store &s : stores)
    narrowFromFloat(s.dtype, s.data, s.target, s.elements);
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
  narrowFromFloat(type, data, narrow.data(), n);
  widenToFloat(type, narrow.data(), data, n);
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
    std::int64_t column = 0;
    for (std::size_t p = 0; p < op.results.size(); ++p) {
      const Local &part = locals[op.results[p]];
      std::int64_t width = part.dim;
      const float *src = x.data;
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
      for (std::int64_t row = 0; row < rows; ++row)
        std::copy_n(src + row * dim + column, width, part.data + row * width);
      column += width;
    }
    return;
  }
  case BodyOpKind::Concat: {
    const Local &whole = locals[op.results[0]];
    std::int64_t total = whole.dim;
    std::int64_t column = 0;
    for (std::size_t p = 0; p < op.operands.size(); ++p) {
      const Local &part = in(p);
      std::int64_t width = part.dim;
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
      for (std::int64_t row = 0; row < rows; ++row)
        std::copy_n(part.data + row * width, width,
                    whole.data + row * total + column);
      column += width;
    }
    return;
  }
  case BodyOpKind::ColumnSum:
    columnSum<float>(x.data, out(0), rows, dim);
    return;
  }
}

} // namespace kiln::rt::host
