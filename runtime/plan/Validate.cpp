//===- Validate.cpp - Checks of a parsed plan's steps ---------------------===//
//
// Every step against its operands, before anything runs: a plan that
// passes runs on both backends without reading or writing outside its
// buffers, dividing by zero or looping on a size it does not hold. Each
// error names the plan, the step index, the kernel and the field.
//
//===----------------------------------------------------------------------===//

#include "runtime/plan/Validate.h"

#include "runtime/Error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <limits>
#include <set>

namespace kiln::rt {

namespace {

namespace a = plan::attr;

bool overlaps(const ValueInfo &x, const ValueInfo &y);

/// The checks of one step; `fail` throws with the step's prefix.
class StepChecker {
public:
  StepChecker(const Plan &plan, const Step &step, std::size_t index,
              const std::string &source)
      : plan(plan), step(step),
        prefix(fmt::format("{}: step {} ({})", source, index, step.kernel())) {}

  [[noreturn]] void fail(const std::string &problem) const {
    throw Error(fmt::format("{}: {}", prefix, problem));
  }

  const ValueInfo &input(std::size_t i) const {
    return plan.values[step.inputs[i]];
  }
  const ValueInfo &output(std::size_t i) const {
    return plan.values[step.outputs[i]];
  }
  std::string inputName(std::size_t i) const {
    return fmt::format("input {} (value {})", i, step.inputs[i]);
  }
  std::string outputName(std::size_t i) const {
    return fmt::format("output {} (value {})", i, step.outputs[i]);
  }

  void arity(std::size_t leastInputs, std::size_t mostInputs,
             std::size_t outputs) const {
    std::size_t in = step.inputs.size();
    if (in < leastInputs || in > mostInputs)
      fail(leastInputs == mostInputs
               ? fmt::format("takes {} inputs, got {}", leastInputs, in)
               : fmt::format("takes {} to {} inputs, got {}", leastInputs,
                             mostInputs, in));
    if (step.outputs.size() != outputs)
      fail(fmt::format("takes {} outputs, got {}", outputs,
                       step.outputs.size()));
  }
  /// A dimension attribute: at least 1 and at most `most`.
  void positive(const char *field, int64_t value,
                int64_t most = std::numeric_limits<int32_t>::max()) const {
    if (value < 1 || value > most)
      fail(fmt::format("field '{}' = {} is outside [1, {}]", field, value,
                       most));
  }
  void floating(const TensorInfo &info, const std::string &name) const {
    if (info.dtype == ElemType::I32 || info.dtype == ElemType::I64)
      fail(fmt::format("{} is {}, not a floating-point type", name,
                       elemName(info.dtype)));
  }
  void dtype(const TensorInfo &info, ElemType type,
             const std::string &name) const {
    if (info.dtype != type)
      fail(fmt::format("{} is {}, expected {}", name, elemName(info.dtype),
                       elemName(type)));
  }
  /// An optimizer step's ZeRO-1 `shards`: the plan's optimizer shards.
  void checkShards(int64_t shards) const {
    if (shards != plan.optimizerShards())
      fail(fmt::format("field 'shards' = {}, but the plan shards its "
                       "optimizer over {} (data_parallel {}, zero {})",
                       shards, plan.optimizerShards(), plan.dataParallel,
                       plan.zero));
  }
  void elements(const TensorInfo &info, int64_t expected,
                const std::string &name, const std::string &why) const {
    if (info.numElements() != expected)
      fail(fmt::format("{} holds {} elements, but {} is {}", name,
                       info.numElements(), why, expected));
  }
  void sameShape(const TensorInfo &info, const TensorInfo &like,
                 const std::string &name, const std::string &likeName) const {
    if (info.shape != like.shape)
      fail(fmt::format("{} has shape [{}], but {} has [{}]", name,
                       fmt::join(info.shape, ", "), likeName,
                       fmt::join(like.shape, ", ")));
  }

  void gemm(const GemmStep &g) const;
  void linearCrossEntropy(const LinearCrossEntropyStep &l) const;
  void flash(const FlashAttentionAttrs &f, bool backward) const;
  void fused(const FusedStep &f) const;
  void run();

private:
  /// A GEMM operand stored as [batch x rows, cols].
  void matrix(const TensorInfo &info, const std::string &name, int64_t batch,
              const char *rowField, int64_t rows, const char *colField,
              int64_t cols) const;
  /// a * b, failing where it overflows.
  int64_t product(int64_t x, int64_t y) const {
    int64_t r;
    if (__builtin_mul_overflow(x, y, &r))
      fail(fmt::format("the sizes {} x {} overflow 64 bits", x, y));
    return r;
  }

  const Plan &plan;
  const Step &step;
  std::string prefix;
};

int64_t lastDim(const TensorInfo &info) {
  return info.shape.empty() ? 1 : info.shape.back();
}

void StepChecker::matrix(const TensorInfo &info, const std::string &name,
                         int64_t batch, const char *rowField, int64_t rows,
                         const char *colField, int64_t cols) const {
  int64_t width = lastDim(info);
  if (width != cols)
    fail(fmt::format("field '{}' = {} but {} has {} columns", colField, cols,
                     name, width));
  int64_t height = info.numElements() / width;
  if (height == product(batch, rows))
    return;
  if (batch > 1 && height % rows == 0)
    fail(fmt::format("field 'batch' = {} but {} holds {} matrices of {} rows",
                     batch, name, height / rows, rows));
  fail(batch == 1 ? fmt::format("field '{}' = {} but {} has {} rows", rowField,
                                rows, name, height)
                  : fmt::format("field '{}' = {} but {} has {} rows for {} "
                                "batches",
                                rowField, rows, name, height, batch));
}

void StepChecker::gemm(const GemmStep &g) const {
  using plan::GemmEpilogue;
  bool dgelu = g.epilogue == GemmEpilogue::DgeluTanh;
  bool bgrad =
      g.epilogue == GemmEpilogue::BgradA || g.epilogue == GemmEpilogue::BgradB;
  // gelu_tanh may also write the pre-activation; bgrad_* write the bias
  // gradient; dgelu_tanh reads the pre-activation where the bias would be.
  std::size_t outputs =
      bgrad || (g.epilogue == GemmEpilogue::GeluTanh && step.outputs.size() > 1)
          ? 2
          : 1;
  arity(dgelu ? 3 : 2, bgrad ? 2 : 3, outputs);
  positive(a::kBatch, g.batch);
  positive(a::kM, g.m);
  positive(a::kN, g.n);
  positive(a::kK, g.k);
  for (std::size_t i = 0; i < step.inputs.size(); ++i)
    floating(input(i), inputName(i));
  floating(output(0), outputName(0));
  // A is [m, k] ([k, m] transposed), B is [k, n] ([n, k]), C is [m, n].
  if (g.transposeA)
    matrix(input(0), inputName(0), g.batch, a::kK, g.k, a::kM, g.m);
  else
    matrix(input(0), inputName(0), g.batch, a::kM, g.m, a::kK, g.k);
  if (g.transposeB)
    matrix(input(1), inputName(1), g.batch, a::kN, g.n, a::kK, g.k);
  else
    matrix(input(1), inputName(1), g.batch, a::kK, g.k, a::kN, g.n);
  matrix(output(0), outputName(0), g.batch, a::kM, g.m, a::kN, g.n);
  std::string epilogue =
      fmt::format("the {} epilogue's ", plan::gemmEpilogueName(g.epilogue));
  if (dgelu)
    elements(input(2), product(g.batch, product(g.m, g.n)),
             inputName(2) + " (" + epilogue + "pre-activation)",
             "batch x m x n");
  else if (step.inputs.size() > 2)
    elements(input(2), g.n, inputName(2) + " (the bias)", "field 'n'");
  if (outputs < 2)
    return;
  std::string name = outputName(1) + " (" + epilogue +
                     (bgrad ? "bias gradient)" : "pre-activation)");
  floating(output(1), name);
  dtype(output(1), output(0).dtype, name);
  if (!bgrad) {
    elements(output(1), product(g.batch, product(g.m, g.n)), name,
             "batch x m x n");
    return;
  }
  bool fromA = g.epilogue == GemmEpilogue::BgradA;
  if (g.batch != 1)
    fail(fmt::format("field 'batch' = {}, but the {} epilogue takes one "
                     "problem",
                     g.batch, plan::gemmEpilogueName(g.epilogue)));
  if (fromA && !g.transposeA)
    fail("the bgrad_a epilogue sums A over k: it needs transpose_a (A stored "
         "[k, m])");
  if (!fromA && g.transposeB)
    fail("the bgrad_b epilogue sums B over k: it needs B stored [k, n] (no "
         "transpose_b)");
  elements(output(1), fromA ? g.m : g.n, name,
           fromA ? "field 'm'" : "field 'n'");
}

void StepChecker::linearCrossEntropy(const LinearCrossEntropyStep &l) const {
  // input [tokens, hidden], weight [vocab, hidden], targets, dloss -> loss,
  // input_grad, weight_grad, scratch [chunk_rows, vocab] f32.
  arity(4, 4, 4);
  const ValueInfo &x = input(0), &w = input(1);
  std::string xName = inputName(0) + " (input)";
  std::string wName = inputName(1) + " (weight)";
  floating(x, xName);
  floating(w, wName);
  if (w.dtype != x.dtype)
    fail(fmt::format("{} is {}, but {} is {}", wName, elemName(w.dtype), xName,
                     elemName(x.dtype)));
  if (x.shape.size() < 2)
    fail(fmt::format("{} has rank {}, expected [..., hidden]", xName,
                     x.shape.size()));
  if (w.shape.size() != 2)
    fail(fmt::format("{} has rank {}, expected [vocab, hidden]", wName,
                     w.shape.size()));
  int64_t hidden = lastDim(x), vocab = w.shape[0];
  positive("hidden", hidden);
  positive("vocab", vocab);
  if (w.shape[1] != hidden)
    fail(fmt::format("{} has {} columns, but {} has hidden size {}", wName,
                     w.shape[1], xName, hidden));
  int64_t tokens = x.numElements() / hidden;
  positive(a::kChunkRows, l.chunkRows, tokens);
  dtype(input(2), ElemType::I32, inputName(2) + " (targets)");
  elements(input(2), tokens, inputName(2) + " (targets)", "the input's rows");
  floating(input(3), inputName(3) + " (dloss)");
  elements(input(3), 1, inputName(3) + " (dloss)", "a scalar");
  floating(output(0), outputName(0) + " (loss)");
  elements(output(0), 1, outputName(0) + " (loss)", "a scalar");
  sameShape(output(1), x, outputName(1) + " (input_grad)", xName);
  dtype(output(1), x.dtype, outputName(1) + " (input_grad)");
  sameShape(output(2), w, outputName(2) + " (weight_grad)", wName);
  floating(output(2), outputName(2) + " (weight_grad)");
  dtype(output(3), ElemType::F32, outputName(3) + " (scratch)");
  std::vector<int64_t> scratch = {l.chunkRows, vocab};
  if (output(3).shape != scratch)
    fail(fmt::format("{} (scratch) has shape [{}], but field '{}' and the "
                     "vocabulary make [{}]",
                     outputName(3), fmt::join(output(3).shape, ", "),
                     a::kChunkRows, fmt::join(scratch, ", ")));
}

void StepChecker::flash(const FlashAttentionAttrs &f, bool backward) const {
  // Forward: q, k, v[, cu_seqlens][, rope table] -> out, lse; backward:
  // dout, q, k, v, out, lse[, cu_seqlens][, rope table] -> dq, dk, dv.
  std::size_t operands = backward ? 6 : 3;
  std::size_t rope = f.rope ? 1 : 0;
  arity(operands + rope, operands + rope + 1, backward ? 3 : 2);
  positive(a::kNumHeads, f.numHeads);
  positive(a::kNumKvHeads, f.numKvHeads);
  positive(a::kBlockQ, f.blockQ);
  positive(a::kBlockK, f.blockK);
  positive(a::kNumWarps, f.numWarps, 32);
  positive(a::kNumStages, f.numStages, 8);
  if (f.numHeads % f.numKvHeads != 0)
    fail(fmt::format("field 'num_kv_heads' = {} does not divide field "
                     "'num_heads' = {}",
                     f.numKvHeads, f.numHeads));
  if (!(f.scale > 0))
    fail(fmt::format("field 'scale' = {} is not positive", f.scale));
  std::size_t q = backward ? 1 : 0;
  const ValueInfo &query = input(q);
  if (query.shape.size() != 3)
    fail(fmt::format("{} (the query) has rank {}, expected [batch, seq, "
                     "heads x head_dim]",
                     inputName(q), query.shape.size()));
  if (query.shape[2] % f.numHeads != 0)
    fail(fmt::format("field 'num_heads' = {} does not divide the query's "
                     "last dimension {} ({})",
                     f.numHeads, query.shape[2], inputName(q)));
  int64_t batch = query.shape[0], seq = query.shape[1];
  int64_t headDim = query.shape[2] / f.numHeads;
  std::vector<int64_t> kvShape = {batch, seq, product(f.numKvHeads, headDim)};
  for (std::size_t i = 0; i < operands; ++i)
    if (i != operands - 1 || !backward)
      floating(input(i), inputName(i));
  for (std::size_t i : {q + 1, q + 2})
    if (input(i).shape != kvShape)
      fail(fmt::format("{} has shape [{}], but field 'num_kv_heads' = {} and "
                       "head_dim {} make [{}]",
                       inputName(i), fmt::join(input(i).shape, ", "),
                       f.numKvHeads, headDim, fmt::join(kvShape, ", ")));
  int64_t lseElements = product(product(batch, f.numHeads), seq);
  if (backward) {
    sameShape(input(0), query, inputName(0) + " (dout)", inputName(q));
    sameShape(input(4), query, inputName(4) + " (out)", inputName(q));
    dtype(input(5), ElemType::F32, inputName(5) + " (lse)");
    elements(input(5), lseElements, inputName(5) + " (lse)",
             "batch x num_heads x seq");
    sameShape(output(0), query, outputName(0) + " (dq)", inputName(q));
    sameShape(output(1), input(2), outputName(1) + " (dk)", inputName(2));
    sameShape(output(2), input(3), outputName(2) + " (dv)", inputName(3));
    for (std::size_t i = 0; i < 3; ++i)
      floating(output(i), outputName(i));
  } else {
    sameShape(output(0), query, outputName(0) + " (out)", inputName(0));
    floating(output(0), outputName(0));
    dtype(output(1), ElemType::F32, outputName(1) + " (lse)");
    elements(output(1), lseElements, outputName(1) + " (lse)",
             "batch x num_heads x seq");
  }
  if (f.rope) {
    std::size_t t = step.inputs.size() - 1;
    std::string name = inputName(t) + " (rope table)";
    dtype(input(t), ElemType::F32, name);
    std::vector<int64_t> tableShape = {batch, seq, headDim};
    if (input(t).shape != tableShape)
      fail(fmt::format("{} has shape [{}], expected [batch, seq, head_dim] = "
                       "[{}]",
                       name, fmt::join(input(t).shape, ", "),
                       fmt::join(tableShape, ", ")));
    if (headDim % 2 != 0)
      fail(fmt::format("field 'rope' rotates pairs, but head_dim {} is odd",
                       headDim));
  }
  if (step.inputs.size() > operands + rope) {
    const ValueInfo &cu = input(operands);
    dtype(cu, ElemType::I32, inputName(operands) + " (cu_seqlens)");
    if (cu.numElements() < 2)
      fail(fmt::format("{} (cu_seqlens) holds {} offsets, fewer than 2",
                       inputName(operands), cu.numElements()));
  }
}

void StepChecker::run() {
  std::visit(
      [&](const auto &op) {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, FillStep>) {
          arity(0, 0, 1);
          floating(output(0), outputName(0));
        } else if constexpr (std::is_same_v<T, GemmStep>) {
          gemm(op);
        } else if constexpr (std::is_same_v<T, FlashForwardStep>) {
          flash(op, /*backward=*/false);
        } else if constexpr (std::is_same_v<T, FlashBackwardStep>) {
          flash(op, /*backward=*/true);
        } else if constexpr (std::is_same_v<T, CrossEntropyStep> ||
                             std::is_same_v<T, CrossEntropyGradStep>) {
          // [dloss,] logits, targets -> loss or dlogits.
          bool grad = std::is_same_v<T, CrossEntropyGradStep>;
          std::size_t first = grad ? 1 : 0;
          arity(first + 2, first + 2, 1);
          if (grad) {
            floating(input(0), inputName(0) + " (dloss)");
            elements(input(0), 1, inputName(0) + " (dloss)", "a scalar");
          }
          const ValueInfo &logits = input(first);
          floating(logits, inputName(first) + " (logits)");
          dtype(input(first + 1), ElemType::I32,
                inputName(first + 1) + " (targets)");
          elements(input(first + 1), logits.numElements() / lastDim(logits),
                   inputName(first + 1) + " (targets)", "the logits' rows");
          floating(output(0), outputName(0));
          if (grad)
            elements(output(0), logits.numElements(),
                     outputName(0) + " (dlogits)", "the logits' size");
          else
            elements(output(0), 1, outputName(0) + " (loss)", "a scalar");
        } else if constexpr (std::is_same_v<T, RopeTableStep>) {
          // [positions] -> [batch, seq, head_dim] cosines | sines.
          arity(0, 1, 1);
          const ValueInfo &table = output(0);
          dtype(table, ElemType::F32, outputName(0));
          if (table.shape.size() != 3 || table.shape[2] % 2 != 0)
            fail(fmt::format("{} has shape [{}], expected [batch, seq, "
                             "head_dim] with an even head_dim",
                             outputName(0), fmt::join(table.shape, ", ")));
          if (!(op.theta > 0))
            fail(fmt::format("field 'theta' = {} is not positive", op.theta));
          if (!step.inputs.empty()) {
            dtype(input(0), ElemType::I32, inputName(0) + " (positions)");
            elements(input(0), product(table.shape[0], table.shape[1]),
                     inputName(0) + " (positions)", "batch x seq");
          }
        } else if constexpr (std::is_same_v<T, EmbeddingGradStep>) {
          arity(2, 2, 1);
          floating(input(0), inputName(0) + " (dy)");
          dtype(input(1), ElemType::I32, inputName(1) + " (ids)");
          const ValueInfo &table = output(0);
          floating(table, outputName(0));
          if (table.shape.size() != 2)
            fail(fmt::format("{} (the table gradient) has rank {}, expected "
                             "[vocab, dim]",
                             outputName(0), table.shape.size()));
          elements(input(0), product(input(1).numElements(), table.shape[1]),
                   inputName(0) + " (dy)", "ids x the table's dim");
        } else if constexpr (std::is_same_v<T, GlobalNormStep>) {
          arity(1, std::numeric_limits<std::size_t>::max(), 1);
          for (std::size_t i = 0; i < step.inputs.size(); ++i)
            floating(input(i), inputName(i));
          floating(output(0), outputName(0));
          elements(output(0), 1, outputName(0) + " (the norm)", "a scalar");
          checkShards(op.shards);
        } else if constexpr (std::is_same_v<T, AdamWStep>) {
          // N params, N grads, N exp_avgs, N exp_avg_sqs (N BF16 compute
          // copies), lr, step, grad_norm -> N params, exp_avgs, exp_avg_sqs
          // (compute copies) in place.
          checkShards(op.shards);
          std::size_t per = op.computeCopies ? 5 : 4;
          std::size_t in = step.inputs.size();
          if (in < per + 3 || (in - 3) % per != 0)
            fail(op.computeCopies
                     ? fmt::format("takes 5 inputs per parameter (param, "
                                   "grad, exp_avg, exp_avg_sq, compute copy), "
                                   "then lr, step and grad_norm, got {} inputs",
                                   in)
                     : fmt::format("takes 4 inputs per parameter (param, "
                                   "grad, exp_avg, exp_avg_sq), then lr, step "
                                   "and grad_norm, got {} inputs",
                                   in));
          std::size_t n = op.numParams(in);
          if (step.outputs.size() != (per - 1) * n)
            fail(fmt::format("takes {} outputs per parameter ({}), got {}",
                             per - 1, (per - 1) * n, step.outputs.size()));
          static const char *kNames[] = {"param", "grad", "exp_avg",
                                         "exp_avg_sq", "compute copy"};
          auto role = [&](std::size_t i) {
            if (i >= per * n)
              return std::string(i == per * n       ? "lr"
                                 : i == per * n + 1 ? "step"
                                                    : "grad_norm");
            return n == 1 ? std::string(kNames[i / n])
                          : fmt::format("{} #{}", kNames[i / n], i % n);
          };
          for (std::size_t i = 0; i < in; ++i) {
            std::string name = fmt::format("{} ({})", inputName(i), role(i));
            bool copy = i >= 4 * n && i < per * n;
            dtype(input(i), copy ? ElemType::BF16 : ElemType::F32, name);
            // Under ZeRO-1 the moments are this rank's shard's, and so may
            // the master be; the gradient is whole.
            bool moment = i >= 2 * n && i < 4 * n;
            int64_t size = i < per * n ? input(n + i % n).numElements() : 1;
            bool shardedMaster = i < n && op.shards > 1 &&
                                 input(i).numElements() ==
                                     plan::shardOf(size, op.shards, 0).stride;
            if ((moment || shardedMaster) && op.shards > 1)
              elements(input(i), plan::shardOf(size, op.shards, 0).stride, name,
                       fmt::format("the parameter's shard over {} ranks "
                                   "(ceil({} / {}))",
                                   op.shards, size, op.shards));
            else
              elements(input(i), i < per * n ? size : 1, name,
                       i < per * n ? "the parameter's size" : "a scalar");
          }
          if (op.shards > 1 && op.computeCopies)
            fail("a sharded update (shards > 1) writes no compute copies: "
                 "each rank updates only its shard of the master");
          for (std::size_t o = 0; o < (per - 1) * n; ++o) {
            std::size_t i = o < n ? o : o + n;
            if (output(o).offset != input(i).offset ||
                output(o).bytes() != input(i).bytes())
              fail(fmt::format("{} must update {} ({}) in place", outputName(o),
                               inputName(i), role(i)));
          }
          for (auto [field, value] :
               {std::pair{a::kBeta1, op.beta1}, {a::kBeta2, op.beta2}})
            if (!(value >= 0 && value < 1))
              fail(fmt::format("field '{}' = {} is outside [0, 1)", field,
                               value));
          for (auto [field, value] : {std::pair{a::kEpsilon, op.epsilon},
                                      {a::kWeightDecay, op.weightDecay},
                                      {a::kMaxGradNorm, op.maxGradNorm}})
            if (!(value >= 0))
              fail(fmt::format("field '{}' = {} is negative", field, value));
        } else if constexpr (std::is_same_v<T, AllReduceStep> ||
                             std::is_same_v<T, ReduceScatterStep> ||
                             std::is_same_v<T, AllGatherStep>) {
          // N tensors reduced (gathered) in place over a group of the
          // plan's ranks.
          constexpr bool gather = std::is_same_v<T, AllGatherStep>;
          const char *what = gather ? "gathered" : "reduced";
          // (all_gather with 2N inputs: N shards gathered into N
          // destinations, the BF16 compute copies of sharded masters.)
          bool into = gather && !step.outputs.empty() &&
                      step.inputs.size() == 2 * step.outputs.size();
          if (into) {
            std::size_t n = step.outputs.size();
            for (std::size_t i = 0; i < n; ++i) {
              const ValueInfo &dest = input(n + i);
              int64_t stride =
                  plan::shardOf(dest.numElements(), op.groupSize, 0).stride;
              if (input(i).dtype != dest.dtype ||
                  input(i).numElements() != stride)
                fail(fmt::format("{} (shard {}) must be {} {} elements, a "
                                 "rank's shard of {} over {} ranks",
                                 inputName(i), i, elemName(dest.dtype), stride,
                                 inputName(n + i), op.groupSize));
              if (dest.dtype != ElemType::F32 && dest.dtype != ElemType::BF16)
                fail(fmt::format("{} is {}; all_gather takes f32 or bf16",
                                 inputName(n + i), elemName(dest.dtype)));
              if (output(i).offset != dest.offset ||
                  output(i).dtype != dest.dtype ||
                  output(i).numElements() != dest.numElements())
                fail(fmt::format("{} must be {} gathered in place (the same "
                                 "offset, dtype and elements)",
                                 outputName(i), inputName(n + i)));
              if (overlaps(input(i), dest))
                fail(fmt::format("{} overlaps {}", inputName(i),
                                 inputName(n + i)));
            }
          } else if (step.inputs.empty() ||
                     step.outputs.size() != step.inputs.size()) {
            fail(fmt::format("takes N >= 1 inputs and as many outputs (the "
                             "same tensors, {} in place){}, got {} and {}",
                             what,
                             gather ? ", or N shards and N destinations" : "",
                             step.inputs.size(), step.outputs.size()));
          }
          for (std::size_t i = 0; !into && i < step.inputs.size(); ++i) {
            if (input(i).dtype != ElemType::F32)
              fail(fmt::format("{} is {}; {} takes f32 ({})", inputName(i),
                               elemName(input(i).dtype), step.kernel(),
                               gather ? "FP32 parameters" : "FP32 gradients"));
            if (output(i).offset != input(i).offset ||
                output(i).dtype != input(i).dtype ||
                output(i).numElements() != input(i).numElements())
              fail(fmt::format("{} must be {} {} in place (the same "
                               "offset, dtype and elements)",
                               outputName(i), inputName(i), what));
          }
          if (!std::is_same_v<T, AllReduceStep> && plan.zero != 1)
            fail(fmt::format("{} shards over the ranks, but the plan's model "
                             "has zero {} (ZeRO-1 is zero 1)",
                             step.kernel(), plan.zero));
          if (op.groupSize != plan.dataParallel)
            fail(fmt::format("group '{}' has {} ranks, but the plan is "
                             "compiled for data_parallel {}",
                             op.group, op.groupSize, plan.dataParallel));
          if (op.group != "dp")
            fail(fmt::format("group '{}' is not one the runtime forms (dp)",
                             op.group));
        } else if constexpr (std::is_same_v<T, GradAccumulateStep>) {
          // N accumulators, N gradients, micro_step -> N accumulators in
          // place.
          std::size_t in = step.inputs.size();
          if (in < 3 || in % 2 != 1)
            fail(fmt::format("takes N accumulators, N gradients and the "
                             "micro-step index (2N + 1 inputs, N >= 1), got "
                             "{} inputs",
                             in));
          std::size_t n = (in - 1) / 2;
          if (step.outputs.size() != n)
            fail(fmt::format("takes {} outputs (the accumulators), got {}", n,
                             step.outputs.size()));
          for (std::size_t i = 0; i < in; ++i)
            dtype(input(i), ElemType::F32, inputName(i));
          elements(input(in - 1), 1, inputName(in - 1) + " (micro_step)",
                   "a scalar");
          for (std::size_t i = 0; i < n; ++i) {
            elements(input(n + i), input(i).numElements(),
                     inputName(n + i) + " (gradient)",
                     "its accumulator's size");
            dtype(output(i), ElemType::F32, outputName(i));
            if (output(i).offset != input(i).offset ||
                output(i).bytes() != input(i).bytes())
              fail(fmt::format("{} must update {} (accumulator) in place",
                               outputName(i), inputName(i)));
          }
        } else if constexpr (std::is_same_v<T, FusedStep>) {
          fused(op);
        } else if constexpr (std::is_same_v<T, LinearCrossEntropyStep>) {
          linearCrossEntropy(op);
        }
      },
      step.op);
}

/// Whether two values share bytes. Row-strided views of one packed tensor
/// (the same pitch) interleave without sharing any when their runs fall in
/// disjoint columns of the pitch.
bool overlaps(const ValueInfo &x, const ValueInfo &y) {
  int64_t xEnd = x.offset + x.extentBytes(), yEnd = y.offset + y.extentBytes();
  if (x.offset >= yEnd || y.offset >= xEnd)
    return false;
  if (!x.strided() && !y.strided())
    return true;
  int64_t pitch = x.pitch() * static_cast<int64_t>(elemSize(x.dtype));
  if (pitch != y.pitch() * static_cast<int64_t>(elemSize(y.dtype)))
    return true; // conservatively
  int64_t xRun = x.lastDim() * static_cast<int64_t>(elemSize(x.dtype));
  int64_t yRun = y.lastDim() * static_cast<int64_t>(elemSize(y.dtype));
  // y's runs start `shift` bytes after x's in every pitch: disjoint when
  // they fall between the end of x's run and the start of x's next.
  int64_t shift = ((y.offset - x.offset) % pitch + pitch) % pitch;
  return !(xRun <= shift && shift + yRun <= pitch);
}

/// Whether a step's kernel reads input `i` (or writes output `i`) correctly
/// when its rows are strided: the attention kernels' query, key and value
/// and their gradients, and a fused region's row operands (the host checks
/// at load that the region runs row by row; the CUDA row kernels take each
/// operand's pitch).
bool acceptsRowStride(const Step &step, std::size_t i, bool output) {
  switch (step.kind()) {
  case StepKind::FlashAttentionFwd:
    return !output && i < 3;
  case StepKind::FlashAttentionBwd:
    return output ? i < 3 : i >= 1 && i <= 3;
  case StepKind::Fused:
    return true;
  default:
    return false;
  }
}

} // namespace

void StepChecker::fused(const FusedStep &) const {
  validateFusedStep(plan, step, prefix);
}

void validateSteps(const Plan &plan, const std::string &source) {
  // What the runtime reads and writes whole is contiguous.
  auto contiguous = [&](int64_t id, const std::string &what) {
    if (plan.values[id].strided())
      throw Error(fmt::format("{}: {} (value {}) is row-strided (row_stride "
                              "{}); it must be contiguous",
                              source, what, id, plan.values[id].rowStride));
  };
  for (const auto &[name, id] : plan.inputs)
    contiguous(id, fmt::format("input '{}'", name));
  for (const auto &[name, id] : plan.outputs)
    contiguous(id, fmt::format("output '{}'", name));
  for (const Parameter &param : plan.parameters)
    for (auto [what, id] : {std::pair{"value", param.value},
                            {"grad", param.grad},
                            {"exp_avg", param.expAvg},
                            {"exp_avg_sq", param.expAvgSq},
                            {"compute_copy", param.computeCopy}})
      if (id >= 0)
        contiguous(id, fmt::format("parameter '{}': {}", param.name, what));
  // A gradient that shares bytes with its parameter or moments would be
  // overwritten by the update it feeds.
  for (const Parameter &param : plan.parameters) {
    const ValueInfo &grad = plan.values[param.grad];
    for (auto [name, id] : {std::pair{"value", param.value},
                            {"exp_avg", param.expAvg},
                            {"exp_avg_sq", param.expAvgSq}})
      if (id == param.grad || overlaps(grad, plan.values[id]))
        throw Error(fmt::format("{}: parameter '{}': grad (value {}) aliases "
                                "its {} (value {})",
                                source, param.name, param.grad, name, id));
    if (param.computeCopy >= 0) {
      const ValueInfo &copy = plan.values[param.computeCopy];
      if (copy.dtype != ElemType::BF16 ||
          copy.numElements() != grad.numElements())
        throw Error(fmt::format("{}: parameter '{}': compute_copy (value {}) "
                                "must be bf16 with the parameter's {} "
                                "elements",
                                source, param.name, param.computeCopy,
                                grad.numElements()));
      for (auto [name, id] : {std::pair{"value", param.value},
                              {"grad", param.grad},
                              {"exp_avg", param.expAvg},
                              {"exp_avg_sq", param.expAvgSq}})
        if (overlaps(copy, plan.values[id]))
          throw Error(fmt::format("{}: parameter '{}': compute_copy (value "
                                  "{}) overlaps its {} (value {})",
                                  source, param.name, param.computeCopy, name,
                                  id));
      if (copy.offset + copy.extentBytes() > plan.persistentBytes)
        throw Error(fmt::format("{}: parameter '{}': compute_copy (value {}) "
                                "lies outside the persistent region [0, {})",
                                source, param.name, param.computeCopy,
                                plan.persistentBytes));
    }
    // The whole tensor is the gradient's; under ZeRO-1 a master read only
    // through its compute copy may be this rank's shard.
    int64_t size = grad.numElements();
    int64_t moments = plan::shardOf(size, plan.optimizerShards(), 0).stride;
    if (plan.values[param.value].numElements() != size &&
        !(plan.shardedMaster(param) && param.computeCopy >= 0 &&
          plan.optimizerShards() > 1 &&
          plan.values[param.value].numElements() == moments))
      throw Error(fmt::format(
          "{}: parameter '{}': its value holds {} elements; its grad's {}{}",
          source, param.name, plan.values[param.value].numElements(), size,
          plan.optimizerShards() > 1
              ? fmt::format(", or (a sharded master, with a compute copy) "
                            "{}",
                            moments)
              : std::string()));
    if (plan.values[param.expAvg].numElements() != moments ||
        plan.values[param.expAvgSq].numElements() != moments)
      throw Error(fmt::format(
          "{}: parameter '{}': its moments do not hold {} elements ({})",
          source, param.name, moments,
          plan.optimizerShards() > 1
              ? fmt::format("its shard over {} ranks under ZeRO-1",
                            plan.optimizerShards())
              : std::string("as many as its value")));
  }
  // What no step but the optimizer may write: the persistent region
  // (inputs, parameters, optimizer state).
  for (std::size_t index = 0; index < plan.steps.size(); ++index) {
    const Step &step = plan.steps[index];
    StepChecker check(plan, step, index, source);
    check.run();
    // The steps that update persistent state in place.
    bool optimizer = step.kind() == StepKind::AdamW ||
                     step.kind() == StepKind::GradAccumulate ||
                     step.kind() == StepKind::AllReduce ||
                     step.kind() == StepKind::ReduceScatter ||
                     step.kind() == StepKind::AllGather;
    for (std::size_t i = 0; i < step.inputs.size(); ++i)
      if (check.input(i).strided() && !acceptsRowStride(step, i, false))
        check.fail(fmt::format("{} is row-strided (row_stride {}), which "
                               "this kernel does not read",
                               check.inputName(i), check.input(i).rowStride));
    for (std::size_t o = 0; o < step.outputs.size(); ++o)
      if (check.output(o).strided() && !acceptsRowStride(step, o, true))
        check.fail(fmt::format("{} is row-strided (row_stride {}), which "
                               "this kernel does not write",
                               check.outputName(o), check.output(o).rowStride));
    for (std::size_t o = 0; o < step.outputs.size(); ++o) {
      const ValueInfo &out = check.output(o);
      if (!optimizer && out.offset < plan.persistentBytes)
        check.fail(fmt::format("{} at offset {} lies in the persistent region "
                               "[0, {}) of inputs, parameters and optimizer "
                               "state, which only adamw, grad_accumulate "
                               "and the collectives update",
                               check.outputName(o), out.offset,
                               plan.persistentBytes));
      for (std::size_t p = 0; p < o; ++p)
        if (overlaps(out, check.output(p)))
          check.fail(fmt::format("{} overlaps {}", check.outputName(o),
                                 check.outputName(p)));
      if (!optimizer)
        for (std::size_t i = 0; i < step.inputs.size(); ++i)
          if (overlaps(out, check.input(i)))
            check.fail(fmt::format("{} overlaps {}", check.outputName(o),
                                   check.inputName(i)));
    }
    if (step.kind() == StepKind::GradAccumulate) {
      // Each accumulator is a parameter's gradient, in the persistent
      // region, and no gradient it adds is another's accumulator.
      std::size_t n = step.outputs.size();
      for (std::size_t o = 0; o < n; ++o) {
        // (The grad the optimizer reads may be a later all_reduce's
        // result, in the same place.)
        bool found = false;
        for (const Parameter &param : plan.parameters)
          found |= plan.values[param.grad].offset == check.output(o).offset;
        if (!found)
          check.fail(
              fmt::format("{} is no parameter's grad", check.outputName(o)));
        if (check.output(o).offset + check.output(o).extentBytes() >
            plan.persistentBytes)
          check.fail(fmt::format("{} lies outside the persistent region "
                                 "[0, {}): an accumulator must outlive the "
                                 "micro-step",
                                 check.outputName(o), plan.persistentBytes));
        for (std::size_t i = n; i < 2 * n; ++i)
          if (overlaps(check.output(o), check.input(i)))
            check.fail(fmt::format("{} overlaps {} (a gradient)",
                                   check.outputName(o), check.inputName(i)));
      }
    }
    if (step.kind() == StepKind::AdamW) {
      // Each parameter it updates must be one, with its own state.
      const auto &adamw = std::get<AdamWStep>(step.op);
      std::size_t n = adamw.numParams(step.inputs.size());
      for (std::size_t i = 0; i < n; ++i) {
        bool found = false;
        for (const Parameter &param : plan.parameters)
          found |= param.value == step.inputs[i] &&
                   param.grad == step.inputs[n + i] &&
                   param.expAvg == step.inputs[2 * n + i] &&
                   param.expAvgSq == step.inputs[3 * n + i] &&
                   (adamw.computeCopies
                        ? param.computeCopy == step.inputs[4 * n + i]
                        : param.computeCopy < 0 || plan.shardedMaster(param));
        if (!found)
          check.fail(
              n == 1
                  ? fmt::format("{} is not a parameter updated with its "
                                "own gradient and moments (inputs 1-3)",
                                check.inputName(0))
                  : fmt::format("{} is not a parameter updated with its "
                                "own gradient and moments (inputs {}, {} "
                                "and {}){}",
                                check.inputName(i), n + i, 2 * n + i, 3 * n + i,
                                adamw.computeCopies
                                    ? fmt::format(" and compute copy "
                                                  "(input {})",
                                                  4 * n + i)
                                    : ""));
      }
    }
  }
}

void checkTrainable(const Plan &plan, const std::string &source) {
  if (plan.steps.empty())
    throw Error(fmt::format("{}: plan: 'steps' is empty; a training step "
                            "needs at least one kernel",
                            source));
  auto loss = plan.outputs.find("loss");
  if (loss == plan.outputs.end())
    throw Error(fmt::format("{}: plan: no output 'loss'", source));
  const ValueInfo &value = plan.values[loss->second];
  std::string where =
      fmt::format("{}: output 'loss' (value {})", source, loss->second);
  if (value.dtype != ElemType::F32 || value.numElements() != 1)
    throw Error(fmt::format("{} must be one f32 element, got {} of {} "
                            "elements",
                            where, elemName(value.dtype), value.numElements()));
  for (const Parameter &param : plan.parameters)
    for (int64_t id : {param.value, param.expAvg, param.expAvgSq, param.grad})
      if (overlaps(value, plan.values[id]))
        throw Error(fmt::format("{} aliases parameter '{}' (value {})", where,
                                param.name, id));
  bool written = false;
  for (const Step &step : plan.steps)
    for (int64_t id : step.outputs)
      written |= id == loss->second;
  if (!written)
    throw Error(fmt::format("{} is written by no step", where));

  // What the trainer sets per micro-step: the scalars it writes.
  auto scalarInput = [&](const char *name, const char *why) {
    auto input = plan.inputs.find(name);
    if (input == plan.inputs.end())
      throw Error(
          fmt::format("{}: plan: no input '{}' ({})", source, name, why));
    const ValueInfo &info = plan.values[input->second];
    if (info.dtype != ElemType::F32 || info.numElements() != 1)
      throw Error(fmt::format("{}: input '{}' (value {}) must be one f32 "
                              "element, got {} of {} elements",
                              source, name, input->second, elemName(info.dtype),
                              info.numElements()));
  };
  scalarInput(plan::input::kLossScale, "the gradient the backward starts "
                                       "from");
  bool accumulates = false;
  for (const Step &step : plan.steps)
    accumulates |= step.kind() == StepKind::GradAccumulate;
  if (plan.microBatches > 1) {
    scalarInput(plan::input::kMicroStep, "the micro-batch index");
    if (!accumulates)
      throw Error(fmt::format("{}: plan: micro_batches is {} but no "
                              "grad_accumulate step sums the micro-batches' "
                              "gradients",
                              source, plan.microBatches));
  }
  // Data parallelism: the optimizer reads every gradient summed over the
  // ranks.
  if (plan.dataParallel > 1) {
    // (ZeRO-1: reduce-scattered, and every parameter gathered after its
    // update.)
    StepKind reduction =
        plan.zero == 1 ? StepKind::ReduceScatter : StepKind::AllReduce;
    std::set<int64_t> reduced, gathered;
    for (const Step &step : plan.steps) {
      if (step.kind() == reduction)
        reduced.insert(step.outputs.begin(), step.outputs.end());
      // (The gather writes in place: its outputs are new values at the
      // parameters' offsets, or at their compute copies'.)
      if (step.kind() == StepKind::AllGather)
        for (int64_t id : step.outputs)
          gathered.insert(plan.values[id].offset);
    }
    for (const Parameter &param : plan.parameters) {
      if (!reduced.count(param.grad))
        throw Error(fmt::format("{}: plan: data_parallel is {} but no "
                                "{} step reduces the gradient of "
                                "parameter '{}'",
                                source, plan.dataParallel,
                                plan::stepKindName(reduction), param.name));
      int64_t whole =
          plan.shardedMaster(param) ? param.computeCopy : param.value;
      if (plan.zero == 1 && whole >= 0 &&
          !gathered.count(plan.values[whole].offset))
        throw Error(fmt::format("{}: plan: zero is 1 but no all_gather step "
                                "gathers parameter '{}' after its update",
                                source, param.name));
    }
  }
  // The runtime runs F, B and W once per micro-batch and O once after:
  // the optimizer must come last.
  for (std::size_t i = 1; i < plan.steps.size(); ++i)
    if (plan.steps[i - 1].chunk == 'O' && plan.steps[i].chunk != 'O')
      throw Error(fmt::format("{}: step {} ({}): chunk '{}' after the "
                              "optimizer chunk 'O' (step {}); the optimizer's "
                              "steps must come last",
                              source, i, plan.steps[i].kernel(),
                              plan.steps[i].chunk, i - 1));
}

} // namespace kiln::rt
