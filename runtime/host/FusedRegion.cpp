//===- FusedRegion.cpp - A fused step decoded for the host ----------------===//

#include "runtime/host/FusedRegion.h"

#include "runtime/Error.h"
#include "runtime/Numerics.h"
#include "runtime/Storage.h"
#include "runtime/host/KernelSupport.h"
#include "runtime/host/Kernels.h"

#include <algorithm>

#include <omp.h>

namespace kiln::rt::host {

namespace {
/// Elements below which the memory-bound loops here (add, mul, copies,
/// rounding) stay serial: 4 MiB of FP32. Below it a loop takes tens of
/// microseconds, which a parallel region's fork and barrier can exceed, and
/// on a loaded machine a barrier waits for a descheduled thread (10x slower
/// adds measured at 196K elements with 2 threads on 2 busy cores).
constexpr std::int64_t kMinParallelWork = std::int64_t(1) << 20;
} // namespace

namespace {
bool isRowLocal(BodyOpKind kind) {
  switch (kind) {
  case BodyOpKind::RmsNormWeightGrad:
  case BodyOpKind::LayerNormWeightGrad:
  case BodyOpKind::Split:
  case BodyOpKind::Concat:
  case BodyOpKind::ColumnSum:
    return false;
  default:
    return true;
  }
}

/// Whether operand `index` of a row-local op is read row by row (else
/// whole: norm weights and biases, an embedding table).
bool isRowOperand(BodyOpKind kind, std::size_t index) {
  switch (kind) {
  case BodyOpKind::RmsNorm:
  case BodyOpKind::LayerNorm:
    return index == 0;
  case BodyOpKind::RmsNormGrad:
  case BodyOpKind::LayerNormGrad:
    return index < 2;
  case BodyOpKind::Embedding:
    return index == 1;
  default:
    return true;
  }
}
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
    local.rows = local.elements / std::max<std::int64_t>(local.dim, 1);
    local.pitch = local.dim;
  };
  std::vector<const std::byte *> inputBytes;
  bool strided = false;
  for (std::size_t i = 0; i < step.inputs.size(); ++i) {
    const ValueInfo &info = plan.values[step.inputs[i]];
    Local &local = locals[i];
    describe(local, info);
    local.pitch = info.pitch();
    strided |= info.strided();
    std::byte *bytes = arena + info.offset;
    inputBytes.push_back(bytes);
    if (info.dtype == ElemType::I32)
      local.ids = reinterpret_cast<const std::int32_t *>(bytes);
    else if (info.dtype == ElemType::F32)
      local.data = reinterpret_cast<float *>(bytes);
  }
  for (const auto &[index, info] : fused.temporaries)
    describe(locals[index], info);
  // FP32 yields of FP32 temporaries are computed in their outputs.
  for (std::size_t i = 0; i < step.outputs.size(); ++i) {
    const ValueInfo &info = plan.values[step.outputs[i]];
    std::size_t local = fused.yield[i];
    strided |= info.strided();
    if (local >= step.inputs.size() && !locals[local].data &&
        locals[local].info->dtype == ElemType::F32 &&
        info.dtype == ElemType::F32) {
      locals[local].data = reinterpret_cast<float *>(arena + info.offset);
      locals[local].pitch = info.pitch();
    } else {
      stores.push_back(Store{info.dtype, local, arena + info.offset,
                             info.numElements(), info.pitch()});
    }
  }
  planRows(inputBytes);
  if (rowMode)
    return;
  if (strided)
    throw Error("a fused region with row-strided inputs or outputs must run "
                "row by row (row-local ops over one row count), which this "
                "one does not");

  // Op by op: non-FP32 inputs widened whole, temporaries whole in scratch.
  for (std::size_t i = 0; i < step.inputs.size(); ++i) {
    Local &local = locals[i];
    if (local.data || local.ids)
      continue;
    placed.emplace_back(i, floats);
    floats += local.elements;
    widens.push_back(
        Widen{local.info->dtype, inputBytes[i], i, local.elements});
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

void FusedRegion::planRows(const std::vector<const std::byte *> &inputBytes) {
  std::size_t numInputs = inputBytes.size();
  std::vector<int> rowRead(locals.size(), 0), wholeRead(locals.size(), 0),
      tableRead(locals.size(), 0);
  std::int64_t common = -1;
  auto agree = [&](std::size_t index) {
    const Local &local = locals[index];
    std::int64_t r =
        local.info->dtype == ElemType::I32 ? local.elements : local.rows;
    if (common >= 0 && r != common)
      return false;
    common = r;
    return true;
  };
  for (const BodyOp &op : body) {
    if (!isRowLocal(op.kind))
      return;
    for (std::size_t i = 0; i < op.operands.size(); ++i) {
      std::size_t index = op.operands[i];
      if (isRowOperand(op.kind, i)) {
        if (!agree(index))
          return;
        rowRead[index] = 1;
      } else {
        // Read whole: it must exist before the first row.
        if (index >= numInputs)
          return;
        (op.kind == BodyOpKind::Embedding ? tableRead : wholeRead)[index] = 1;
      }
    }
    for (int64_t index : op.results) {
      ElemType type = locals[index].info->dtype;
      if ((type != ElemType::F32 && type != ElemType::BF16) || !agree(index))
        return;
      rowRead[index] = 1;
    }
  }
  for (std::size_t i = 0; i < locals.size(); ++i)
    if (rowRead[i] + wholeRead[i] + tableRead[i] > 1)
      return;
  if (common <= 0)
    return;

  rowMode = true;
  rows = common;
  threads = std::max(1, omp_get_max_threads());
  rowLocals.resize(locals.size());
  for (std::size_t i = 0; i < locals.size(); ++i) {
    Local &local = locals[i];
    RowLocal &place = rowLocals[i];
    place.dtype = local.info->dtype;
    place.raw = i < numInputs ? inputBytes[i] : nullptr;
    if (local.ids) {
      place.place = RowPlace::Ids;
    } else if (tableRead[i]) {
      place.place = RowPlace::Table;
    } else if (wholeRead[i]) {
      place.place = RowPlace::Whole;
      if (!local.data) { // widened once per run
        placed.emplace_back(i, floats);
        floats += local.elements;
        widens.push_back(Widen{place.dtype, place.raw, i, local.elements});
      }
    } else if (local.data) {
      place.place = RowPlace::Arena;
    } else {
      place.place = RowPlace::Buffer;
      place.offset = rowFloats;
      rowFloats += local.dim;
    }
    rowWork = std::max(rowWork, local.elements);
  }
  rowScratch = floats;
  floats += rowFloats * threads;
  // Rotations, one per thread and rope.
  ropeIndex.assign(body.size(), 0);
  std::vector<row::Rope<float>> perThread;
  for (std::size_t k = 0; k < body.size(); ++k)
    if (body[k].kind == BodyOpKind::Rope) {
      const Local &x = locals[body[k].operands[0]];
      ropeIndex[k] = perThread.size();
      perThread.emplace_back(body[k].numHeads, x.dim / body[k].numHeads,
                             body[k].theta, body[k].inverse);
    }
  ropes.assign(threads, perThread);
  rowPointers.assign(threads, std::vector<float *>(locals.size()));
  rowIds.assign(threads, std::vector<const std::int32_t *>(locals.size()));
}

void FusedRegion::attach(float *scratch, std::byte *narrowScratch) {
  narrow = narrowScratch;
  scratchBase = scratch;
  for (auto [index, offset] : placed)
    locals[index].data = scratch + offset;
}

void FusedRegion::run() {
  if (rowMode)
    return runRows();
  for (const Widen &w : widens)
    widenToFloat(w.dtype, w.source, locals[w.local].data, w.elements);
  // nn-fuse's norm-param-grads: a LayerNorm's weight gradient and the
  // column sum of the same gradient, in one pass.
  if (body.size() == 2 && body[0].kind == BodyOpKind::LayerNormWeightGrad &&
      body[1].kind == BodyOpKind::ColumnSum &&
      body[1].operands[0] == body[0].operands[0]) {
    const Local &dy = locals[body[0].operands[0]];
    layerNormParamGrad<float>(dy.data, locals[body[0].operands[1]].data,
                              locals[body[0].results[0]].data,
                              locals[body[1].results[0]].data, dy.rows, dy.dim,
                              body[0].epsilon);
    round(locals[body[0].results[0]]);
    round(locals[body[1].results[0]]);
  } else {
    for (const BodyOp &op : body) {
      runOp(op);
      // Each op's results hold what their element type can: the same
      // rounding an unfused kernel's store would apply.
      for (int64_t index : op.results)
        round(locals[index]);
    }
  }
  for (const Store &s : stores)
    narrowFromFloat(s.dtype, locals[s.local].data, s.target, s.elements);
}

void FusedRegion::runRows() {
  for (const Widen &w : widens)
    widenToFloat(w.dtype, w.source, locals[w.local].data, w.elements);
  // Ids are checked before any row is written: an exception must not leave
  // an OpenMP region.
  for (const BodyOp &op : body)
    if (op.kind == BodyOpKind::Embedding) {
      const std::int32_t *ids = locals[op.operands[1]].ids;
      std::int64_t vocab = locals[op.operands[0]].info->shape[0];
      for (std::int64_t i = 0; i < rows; ++i)
        detail::checkTokenId("token id", ids[i], "position", i, vocab);
    }
#pragma omp parallel num_threads(threads) if (rowWork >=                       \
                                              detail::kMinParallelWork)
  {
    int thread = omp_get_thread_num();
    float *buffer = scratchBase + rowScratch + rowFloats * thread;
    std::vector<float *> &row = rowPointers[thread];
    std::vector<const std::int32_t *> &ids = rowIds[thread];
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::size_t i = 0; i < locals.size(); ++i) {
        const Local &local = locals[i];
        const RowLocal &place = rowLocals[i];
        switch (place.place) {
        case RowPlace::Arena:
          row[i] = local.data + r * local.pitch;
          break;
        case RowPlace::Buffer:
          row[i] = buffer + place.offset;
          if (place.raw) // a rowed input not in FP32
            widenToFloat(place.dtype,
                         place.raw + r * local.pitch * dtypeBytes(place.dtype),
                         row[i], local.dim);
          break;
        case RowPlace::Whole:
          row[i] = local.data;
          break;
        case RowPlace::Table:
          row[i] = nullptr;
          break;
        case RowPlace::Ids:
          ids[i] = local.ids + r;
          break;
        }
      }
      for (std::size_t k = 0; k < body.size(); ++k) {
        const BodyOp &op = body[k];
        runRowOp(op, k, r, row.data(), ids.data(), thread);
        for (int64_t index : op.results)
          if (locals[index].info->dtype == ElemType::BF16) {
            float *data = row[index];
            for (std::int64_t j = 0; j < locals[index].dim; ++j)
              data[j] = roundToBf16(data[j]);
          }
      }
      for (const Store &s : stores) {
        std::int64_t dim = locals[s.local].dim;
        narrowFromFloat(s.dtype, row[s.local],
                        s.target + r * s.pitch * dtypeBytes(s.dtype), dim);
      }
    }
  }
}

void FusedRegion::runRowOp(const BodyOp &op, std::size_t opIndex,
                           std::int64_t r, float *const *row,
                           const std::int32_t *const *ids, int thread) {
  auto in = [&](std::size_t i) { return row[op.operands[i]]; };
  auto out = [&](std::size_t i) { return row[op.results[i]]; };
  std::int64_t dim = locals[op.results[0]].dim;
  switch (op.kind) {
  case BodyOpKind::Add: {
    const float *a = in(0), *b = in(1);
    float *y = out(0);
    for (std::int64_t j = 0; j < dim; ++j)
      y[j] = a[j] + b[j];
    return;
  }
  case BodyOpKind::Mul: {
    const float *a = in(0), *b = in(1);
    float *y = out(0);
    for (std::int64_t j = 0; j < dim; ++j)
      y[j] = a[j] * b[j];
    return;
  }
  case BodyOpKind::Cast:
    std::copy_n(in(0), dim, out(0));
    return;
  case BodyOpKind::RmsNorm:
    row::rmsNorm<float>(in(0), in(1), out(0), dim, op.epsilon);
    return;
  case BodyOpKind::RmsNormGrad:
    row::rmsNormGrad<float>(in(0), in(1), in(2), out(0), dim, op.epsilon);
    return;
  case BodyOpKind::LayerNorm:
    row::layerNorm<float>(in(0), in(1),
                          op.operands.size() > 2 ? in(2) : nullptr, out(0), dim,
                          op.epsilon);
    return;
  case BodyOpKind::LayerNormGrad:
    row::layerNormGrad<float>(in(0), in(1), in(2), out(0), dim, op.epsilon);
    return;
  case BodyOpKind::Rope: {
    const Local &x = locals[op.operands[0]];
    double pos = op.operands.size() > 1
                     ? static_cast<double>(*ids[op.operands[1]])
                     : static_cast<double>(r % x.info->shape[1]);
    ropes[thread][ropeIndex[opIndex]](in(0), pos, out(0));
    return;
  }
  case BodyOpKind::Swiglu: {
    const float *g = in(0), *u = in(1);
    float *y = out(0);
    for (std::int64_t j = 0; j < dim; ++j)
      y[j] = row::swiglu(g[j], u[j]);
    return;
  }
  case BodyOpKind::SwigluGrad: {
    const float *dy = in(0), *g = in(1), *u = in(2);
    float *dg = out(0), *du = out(1);
    for (std::int64_t j = 0; j < dim; ++j) {
      dg[j] = row::swigluGate(dy[j], g[j], u[j]);
      du[j] = row::swigluUp(dy[j], g[j]);
    }
    return;
  }
  case BodyOpKind::Gelu: {
    const float *x = in(0);
    float *y = out(0);
    for (std::int64_t j = 0; j < dim; ++j)
      y[j] = row::gelu(x[j], op.tanhApprox);
    return;
  }
  case BodyOpKind::GeluGrad: {
    const float *dy = in(0), *x = in(1);
    float *dx = out(0);
    for (std::int64_t j = 0; j < dim; ++j)
      dx[j] = dy[j] * row::geluDerivative(x[j], op.tanhApprox);
    return;
  }
  case BodyOpKind::Embedding: {
    const RowLocal &table = rowLocals[op.operands[0]];
    std::int64_t id = *ids[op.operands[1]];
    widenToFloat(table.dtype, table.raw + id * dim * dtypeBytes(table.dtype),
                 out(0), dim);
    return;
  }
  case BodyOpKind::RmsNormWeightGrad:
  case BodyOpKind::LayerNormWeightGrad:
  case BodyOpKind::Split:
  case BodyOpKind::Concat:
  case BodyOpKind::ColumnSum:
    return; // not row-local: planRows never chooses row mode for them
  }
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
  case BodyOpKind::Split:
  case BodyOpKind::Concat: {
    // One parallel region over the rows; each row copies every part (a
    // split or concat of the first dimension: one row, the parts back to
    // back).
    bool split = op.kind == BodyOpKind::Split;
    const Local &whole = split ? x : locals[op.results[0]];
    const std::vector<int64_t> &parts = split ? op.results : op.operands;
    std::int64_t partRows = partitionRows(*whole.info, *locals[parts[0]].info);
    std::int64_t wholeWidth =
        whole.elements / std::max<std::int64_t>(partRows, 1);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
    for (std::int64_t row = 0; row < partRows; ++row) {
      std::int64_t column = 0;
      for (int64_t p : parts) {
        const Local &part = locals[p];
        std::int64_t width = part.elements / partRows;
        float *wholeRow = whole.data + row * wholeWidth + column;
        float *partRow = part.data + row * width;
        if (split)
          std::copy_n(wholeRow, width, partRow);
        else
          std::copy_n(partRow, width, wholeRow);
        column += width;
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
