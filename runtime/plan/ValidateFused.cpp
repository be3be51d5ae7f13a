//===- ValidateFused.cpp - Checks of a fused step's body ------------------===//
//
// A fused region's ops against their operands: each op's arity, operand
// dtypes and sizes, and the temporaries it writes (their shape and dtype
// must be what the op produces), locals defined before use, each
// temporary written once, yields defined and sized like the outputs.
//
//===----------------------------------------------------------------------===//

#include "runtime/plan/Validate.h"

#include "runtime/Error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vector>

namespace kiln::rt {

namespace {

int64_t lastDim(const TensorInfo &info) {
  return info.shape.empty() ? 1 : info.shape.back();
}

class BodyChecker {
public:
  BodyChecker(const Plan &plan, const Step &step, const FusedStep &fused,
              const std::string &prefix)
      : plan(plan), step(step), fused(fused), prefix(prefix) {
    for (int64_t id : step.inputs)
      locals.push_back(&plan.values[id]);
    defined.assign(locals.size(), true);
    int64_t end = static_cast<int64_t>(step.inputs.size());
    for (const auto &[index, info] : fused.temporaries)
      end = std::max(end, index + 1);
    locals.resize(end, nullptr);
    defined.resize(end, false);
    for (const auto &[index, info] : fused.temporaries)
      locals[index] = &info;
  }

  void run() {
    for (std::size_t i = 0; i < fused.body.size(); ++i)
      checkOp(i, fused.body[i]);
    if (fused.yield.size() != step.outputs.size())
      fail(fmt::format("yields {} values but has {} outputs",
                       fused.yield.size(), step.outputs.size()));
    for (std::size_t i = 0; i < fused.yield.size(); ++i) {
      int64_t index = fused.yield[i];
      if (!defined[index])
        fail(fmt::format("yield {} is local {}, which no body op defines", i,
                         index));
      const TensorInfo &local = *locals[index];
      const ValueInfo &out = plan.values[step.outputs[i]];
      if (local.dtype == ElemType::I32 || local.dtype == ElemType::I64 ||
          out.dtype == ElemType::I32 || out.dtype == ElemType::I64)
        fail(fmt::format("yield {} (local {}, {}) into output {} ({}): fused "
                         "regions yield floating-point values",
                         i, index, elemName(local.dtype), i,
                         elemName(out.dtype)));
      if (local.numElements() != out.numElements())
        fail(fmt::format("yield {} (local {}) holds {} elements, but output "
                         "{} (value {}) holds {}",
                         i, index, local.numElements(), i, step.outputs[i],
                         out.numElements()));
    }
  }

private:
  [[noreturn]] void fail(const std::string &problem) const {
    throw Error(fmt::format("{}: {}", prefix, problem));
  }

  void checkOp(std::size_t index, const BodyOp &op) {
    at = fmt::format("body op {} ({})", index, op.name());
    this->op = &op;
    for (int64_t operand : op.operands)
      if (!defined[operand])
        failOp(fmt::format("operand local {} is used before any op defines it",
                           operand));
    for (int64_t result : op.results) {
      if (defined[result])
        failOp(fmt::format("result local {} is defined twice", result));
      defined[result] = true;
    }
    const std::size_t kAny = std::numeric_limits<std::size_t>::max();
    auto x = [&]() -> const TensorInfo & { return operand(0); };
    switch (op.kind) {
    case BodyOpKind::Add:
    case BodyOpKind::Mul:
    case BodyOpKind::Swiglu:
      arity(2, 2, 1);
      floats(2);
      sized(operand(1), x().numElements(), "operand 1");
      sized(result(0), x().numElements(), "result 0");
      break;
    case BodyOpKind::Cast:
    case BodyOpKind::Gelu:
      arity(1, 1, 1);
      floats(1);
      sized(result(0), x().numElements(), "result 0");
      break;
    case BodyOpKind::GeluGrad:
      arity(2, 2, 1);
      floats(2);
      sized(operand(1), x().numElements(), "operand 1");
      sized(result(0), x().numElements(), "result 0");
      break;
    case BodyOpKind::SwigluGrad:
      // dy, gate, up -> dgate, dup.
      arity(3, 3, 2);
      floats(3);
      for (std::size_t i = 1; i < 3; ++i)
        sized(operand(i), x().numElements(), fmt::format("operand {}", i));
      for (std::size_t i = 0; i < 2; ++i)
        sized(result(i), x().numElements(), fmt::format("result {}", i));
      break;
    case BodyOpKind::RmsNorm:
    case BodyOpKind::LayerNorm:
      // x, w[, b] -> y.
      arity(2, op.kind == BodyOpKind::LayerNorm ? 3 : 2, 1);
      floats(op.operands.size());
      epsilon();
      for (std::size_t i = 1; i < op.operands.size(); ++i)
        sized(operand(i), lastDim(x()), fmt::format("operand {}", i));
      sized(result(0), x().numElements(), "result 0");
      break;
    case BodyOpKind::RmsNormGrad:
    case BodyOpKind::LayerNormGrad:
      // dy, x, w -> dx.
      arity(3, 3, 1);
      floats(3);
      epsilon();
      sized(operand(1), x().numElements(), "operand 1");
      sized(operand(2), lastDim(x()), "operand 2");
      sized(result(0), x().numElements(), "result 0");
      break;
    case BodyOpKind::RmsNormWeightGrad:
    case BodyOpKind::LayerNormWeightGrad:
      // dy, x -> dw.
      arity(2, 2, 1);
      floats(2);
      epsilon();
      sized(operand(1), x().numElements(), "operand 1");
      sized(result(0), lastDim(x()), "result 0");
      break;
    case BodyOpKind::Rope: {
      // x [batch, seq, heads x head_dim][, positions] -> y.
      arity(1, 2, 1);
      floats(1);
      if (x().shape.size() != 3)
        failOp(fmt::format("operand 0 has rank {}, expected [batch, seq, "
                           "heads x head_dim]",
                           x().shape.size()));
      if (op.numHeads < 1 || lastDim(x()) % op.numHeads != 0 ||
          (lastDim(x()) / op.numHeads) % 2 != 0)
        failOp(fmt::format("field 'num_heads' = {} does not split the last "
                           "dimension {} into heads of even size",
                           op.numHeads, lastDim(x())));
      if (!(op.theta > 0))
        failOp(fmt::format("field 'theta' = {} is not positive", op.theta));
      if (op.operands.size() > 1) {
        ids(1);
        sized(operand(1), x().shape[0] * x().shape[1], "operand 1 (positions)");
      }
      sized(result(0), x().numElements(), "result 0");
      break;
    }
    case BodyOpKind::Embedding: {
      // table [vocab, dim], ids -> y.
      arity(2, 2, 1);
      floats(1);
      ids(1);
      if (x().shape.size() != 2)
        failOp(fmt::format("operand 0 (the table) has rank {}, expected "
                           "[vocab, dim]",
                           x().shape.size()));
      int64_t elements;
      if (__builtin_mul_overflow(operand(1).numElements(), x().shape[1],
                                 &elements))
        failOp("the result's size overflows 64 bits");
      sized(result(0), elements, "result 0");
      break;
    }
    case BodyOpKind::Split:
    case BodyOpKind::Concat: {
      // x -> parts..., or parts... -> x, along the last dimension.
      bool split = op.kind == BodyOpKind::Split;
      arity(1, split ? 1 : kAny, split ? kAny : 1);
      floats(op.operands.size());
      if (split ? op.results.empty() : op.operands.empty())
        failOp("has no parts");
      const TensorInfo &whole = split ? x() : result(0);
      // Along the last dimension, or the first (partitionRows: 1 row).
      int64_t rows = partitionRows(whole, split ? result(0) : operand(0));
      int64_t width = 0;
      std::size_t parts = split ? op.results.size() : op.operands.size();
      for (std::size_t i = 0; i < parts; ++i) {
        const TensorInfo &part = split ? result(i) : operand(i);
        std::string name =
            fmt::format("{} {}", split ? "result" : "operand", i);
        if (partitionRows(whole, part) != rows)
          failOp(rows == 1
                     ? fmt::format("{} does not cut the first "
                                   "dimension as the others do",
                                   name)
                     : fmt::format("{} has {} rows, but the whole has {}", name,
                                   part.numElements() / lastDim(part), rows));
        if (__builtin_add_overflow(width, part.numElements() / rows, &width))
          failOp("the parts' widths overflow 64 bits");
      }
      if (width != whole.numElements() / rows)
        failOp(fmt::format("the parts are {} columns wide together, but the "
                           "whole is {}",
                           width, whole.numElements() / rows));
      break;
    }
    case BodyOpKind::ColumnSum:
      arity(1, 1, 1);
      floats(1);
      sized(result(0), lastDim(x()), "result 0");
      break;
    }
  }

  [[noreturn]] void failOp(const std::string &problem) const {
    fail(fmt::format("{}: {}", at, problem));
  }
  const TensorInfo &operand(std::size_t i) const {
    return *locals[op->operands[i]];
  }
  const TensorInfo &result(std::size_t i) const {
    return *locals[op->results[i]];
  }
  void arity(std::size_t leastOperands, std::size_t mostOperands,
             std::size_t results) const {
    std::size_t n = op->operands.size();
    if (n < leastOperands || n > mostOperands)
      failOp(leastOperands == mostOperands
                 ? fmt::format("takes {} operands, got {}", leastOperands, n)
                 : fmt::format("takes at least {} operands, got {}",
                               leastOperands, n));
    if (results != std::numeric_limits<std::size_t>::max() &&
        op->results.size() != results)
      failOp(
          fmt::format("takes {} results, got {}", results, op->results.size()));
    for (std::size_t i = 0; i < op->results.size(); ++i)
      if (result(i).dtype == ElemType::I32 || result(i).dtype == ElemType::I64)
        failOp(fmt::format("result {} (local {}) is {}, not a floating-point "
                           "type",
                           i, op->results[i], elemName(result(i).dtype)));
  }
  /// The first `count` operands are floating point.
  void floats(std::size_t count) const {
    for (std::size_t i = 0; i < count && i < op->operands.size(); ++i)
      if (operand(i).dtype == ElemType::I32 ||
          operand(i).dtype == ElemType::I64)
        failOp(fmt::format("operand {} (local {}) is {}, not a floating-point "
                           "type",
                           i, op->operands[i], elemName(operand(i).dtype)));
  }
  /// Operand `i` is i32 ids read from the arena (a step input).
  void ids(std::size_t i) const {
    if (operand(i).dtype != ElemType::I32 ||
        op->operands[i] >= static_cast<int64_t>(step.inputs.size()))
      failOp(fmt::format("operand {} (local {}) must be an i32 input of the "
                         "step, got {}",
                         i, op->operands[i], elemName(operand(i).dtype)));
  }
  void sized(const TensorInfo &info, int64_t expected,
             const std::string &name) const {
    if (info.numElements() != expected)
      failOp(fmt::format("{} holds {} elements (shape [{}]), expected {}", name,
                         info.numElements(), fmt::join(info.shape, ", "),
                         expected));
  }
  void epsilon() const {
    if (!(op->epsilon > 0))
      failOp(fmt::format("field 'epsilon' = {} is not positive", op->epsilon));
  }

  const Plan &plan;
  const Step &step;
  const FusedStep &fused;
  const std::string &prefix;
  std::vector<const TensorInfo *> locals;
  std::vector<bool> defined;
  std::string at;
  const BodyOp *op = nullptr;
};

} // namespace

void validateFusedStep(const Plan &plan, const Step &step,
                       const std::string &prefix) {
  BodyChecker(plan, step, std::get<FusedStep>(step.op), prefix).run();
}

} // namespace kiln::rt
