//===- TileOps.td - tile dialect operations -----------------*- tablegen -*-===//

#ifndef KILN_TILE_OPS
#define KILN_TILE_OPS

include "dialects/tile/TileDialect.td"
include "dialects/nn/NNDialect.td"
include "mlir/IR/RegionKindInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def Tile_GemmOp : Tile_Op<"gemm", [Pure, AttrSizedOperandSegments]> {
  let summary = "Batched GEMM with FP32 accumulation and an epilogue";
  let description = [{
    For each of `batch` problems, `C[m, n] = op(A) op(B) (+ bias[n])`, where
    `A` holds `m x k` elements (`k x m` with `transpose_a`), `B` holds `k x n`
    (`n x k` with `transpose_b`), all row-major and contiguous, consecutive
    problems consecutive in memory. Operand tensors may have any shape with
    the right number of elements: a linear layer's `[batch, seq, in]`
    activations are an `m = batch * seq` by `k = in` matrix.

    `epilogue` (nn-fuse's `gemm-epilogue` group; cuBLASLt's epilogues of
    the same names) computes more in the same kernel, from the FP32
    accumulator before the result is rounded:
    - `gelu_tanh`: `C = gelu(op(A) op(B) + bias)` with the tanh
      approximation (cuBLASLt's GELU), and, as `pre_activation`, the sum it
      applies GELU to (the backward's input; `GELU_AUX_BIAS`).
    - `dgelu_tanh`: `C = (op(A) op(B)) * gelu'(aux)` for the pre-activation
      `aux` ([m, n]): GELU's input gradient (`DGELU`). No bias.
    - `bgrad_a` / `bgrad_b`: also `bias_grad`, the sum over `k` of A (stored
      `[k, m]`, `transpose_a`: `m` sums) or of B (stored `[k, n]`: `n`
      sums), in the result's element type: a linear layer's bias gradient
      from the weight-gradient GEMM that reads the same output gradient
      (`BGRADB` / `BGRADA`, cuBLASLt being column-major). One problem.

    ```mlir
    %y = tile.gemm %x, %w bias(%b) {batch = 1, m = 32, n = 96, k = 64, transpose_b}
        : (tensor<2x16x64xbf16>, tensor<96x64xbf16>, tensor<96xbf16>) -> tensor<2x16x96xbf16>
    %a, %pre = tile.gemm %x, %w bias(%b) {batch = 1, m = 32, n = 96, k = 64, epilogue = "gelu_tanh"}
        : (tensor<2x16x64xf32>, tensor<64x96xf32>, tensor<96xf32>) -> (tensor<2x16x96xf32>, tensor<2x16x96xf32>)
    %dw, %db = tile.gemm %dy, %x {batch = 1, m = 96, n = 64, k = 32, transpose_a, epilogue = "bgrad_a"}
        : (tensor<2x16x96xf32>, tensor<2x16x64xf32>) -> (tensor<96x64xf32>, tensor<96xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$a, NN_FloatTensor:$b,
                       Optional<NN_FloatTensor>:$bias,
                       Optional<NN_FloatTensor>:$aux,
                       I64Attr:$batch, I64Attr:$m, I64Attr:$n, I64Attr:$k,
                       UnitAttr:$transpose_a, UnitAttr:$transpose_b,
                       DefaultValuedStrAttr<StrAttr, "none">:$epilogue);
  // `extras`: gelu_tanh's pre_activation (if any) or a bgrad epilogue's
  // bias_grad.
  let results = (outs NN_FloatTensor:$result,
                      Variadic<NN_FloatTensor>:$extras);
  let assemblyFormat = [{
    $a `,` $b (`bias` `(` $bias^ `)`)? (`aux` `(` $aux^ `)`)? attr-dict `:`
    functional-type(operands, results)
  }];
  let builders = [
    // A plain GEMM (with a bias or without): the one result.
    OpBuilder<(ins "::mlir::Type":$result, "::mlir::Value":$a,
                   "::mlir::Value":$b, "::mlir::Value":$bias,
                   "int64_t":$batch, "int64_t":$m, "int64_t":$n, "int64_t":$k,
                   "bool":$transpose_a, "bool":$transpose_b), [{
      build($_builder, $_state, result, /*extras=*/::mlir::TypeRange(), a, b,
            bias, /*aux=*/::mlir::Value(), batch, m, n, k, transpose_a,
            transpose_b, "none");
    }]>
  ];
  let extraClassDeclaration = [{
    /// The epilogues `epilogue` may name.
    static constexpr ::llvm::StringLiteral kNone = "none";
    static constexpr ::llvm::StringLiteral kGeluTanh = "gelu_tanh";
    static constexpr ::llvm::StringLiteral kDgeluTanh = "dgelu_tanh";
    static constexpr ::llvm::StringLiteral kBgradA = "bgrad_a";
    static constexpr ::llvm::StringLiteral kBgradB = "bgrad_b";
    /// gelu_tanh's pre-activation output, if it writes one.
    ::mlir::Value getPreActivation() {
      return getEpilogue() == kGeluTanh && !getExtras().empty()
                 ? getExtras().front() : ::mlir::Value();
    }
    /// A bgrad epilogue's bias gradient.
    ::mlir::Value getBiasGrad() {
      return (getEpilogue() == kBgradA || getEpilogue() == kBgradB) &&
                     !getExtras().empty()
                 ? getExtras().front() : ::mlir::Value();
    }
    /// The epilogue's rules (part of the verifier).
    ::mlir::LogicalResult verifyEpilogue();
  }];
  let hasVerifier = 1;
}

def Tile_FlashAttentionFwdOp : Tile_Op<"flash_attention_fwd", [Pure, AttrSizedOperandSegments]> {
  let summary = "IO-aware attention forward: output and per-row log-sum-exp";
  let description = [{
    The FlashAttention-2 forward kernel of `nn.attention`: for each block of
    `block_q` queries it streams the keys and values in blocks of `block_k`,
    keeping a running maximum, sum and output accumulator (online softmax),
    so no `seq x seq` score matrix exists anywhere. Key blocks entirely after
    every query of a causal block are skipped; GQA reads the shared K/V
    heads directly; packed documents (`cu_seqlens`) never share a tile.
    Besides the output it returns the log-sum-exp of every query row
    (`[batch, num_heads, seq]`, FP32), all the backward needs to rebuild the
    probabilities. `num_warps` and `num_stages` shape the GPU kernel (warps
    per block, software-pipelining depth of the K/V loads). With `rope` (a
    `tile.rope_table`), Q and K tiles are rotated as they are loaded.

    ```mlir
    %o, %lse = tile.flash_attention_fwd %q, %k, %v {block_k = 64 : i64, block_q = 64 : i64, causal,
        num_heads = 4 : i64, num_kv_heads = 2 : i64, num_stages = 2 : i64, num_warps = 4 : i64}
        : (tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>)
        -> (tensor<2x16x64xbf16>, tensor<2x4x16xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$query, NN_FloatTensor:$key,
                       NN_FloatTensor:$value,
                       Optional<NN_I32Vector>:$cu_seqlens,
                       Optional<NN_F32Tensor>:$rope,
                       I64Attr:$num_heads, I64Attr:$num_kv_heads,
                       UnitAttr:$causal, OptionalAttr<F64Attr>:$scale,
                       I64Attr:$block_q, I64Attr:$block_k,
                       I64Attr:$num_warps, I64Attr:$num_stages);
  let results = (outs NN_FloatTensor:$result, NN_F32Tensor:$lse);
  let assemblyFormat = [{
    $query `,` $key `,` $value (`cu_seqlens` `(` $cu_seqlens^ `)`)?
    (`rope` `(` $rope^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_FlashAttentionBwdOp : Tile_Op<"flash_attention_bwd", [Pure, AttrSizedOperandSegments]> {
  let summary = "IO-aware attention backward from the saved log-sum-exp";
  let description = [{
    The FlashAttention-2 backward kernel: `dq`, `dk`, `dv` from the output
    gradient, the forward operands, and the forward's output and log-sum-exp.
    The probabilities are recomputed tile by tile from the log-sum-exp; each
    key block accumulates its `dk`/`dv` over the query blocks (and GQA query
    heads) that see it, and `dq` over the key blocks, so every gradient
    element has one writer. With `rope`, Q and K are rotated as they are
    loaded and `dq`, `dk` rotated back by the inverse angles as they are
    stored.

    ```mlir
    %dq, %dk, %dv = tile.flash_attention_bwd %do, %q, %k, %v, %o, %lse {block_k = 64 : i64, block_q = 64 : i64,
        causal, num_heads = 4 : i64, num_kv_heads = 2 : i64, num_stages = 2 : i64, num_warps = 4 : i64}
        : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>,
           tensor<2x16x64xbf16>, tensor<2x4x16xf32>)
        -> (tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$query,
                       NN_FloatTensor:$key, NN_FloatTensor:$value,
                       NN_FloatTensor:$output, NN_F32Tensor:$lse,
                       Optional<NN_I32Vector>:$cu_seqlens,
                       Optional<NN_F32Tensor>:$rope,
                       I64Attr:$num_heads, I64Attr:$num_kv_heads,
                       UnitAttr:$causal, OptionalAttr<F64Attr>:$scale,
                       I64Attr:$block_q, I64Attr:$block_k,
                       I64Attr:$num_warps, I64Attr:$num_stages);
  let results = (outs NN_FloatTensor:$query_grad, NN_FloatTensor:$key_grad,
                      NN_FloatTensor:$value_grad);
  let assemblyFormat = [{
    $grad `,` $query `,` $key `,` $value `,` $output `,` $lse
    (`cu_seqlens` `(` $cu_seqlens^ `)`)? (`rope` `(` $rope^ `)`)? attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_CrossEntropyOp : Tile_Op<"cross_entropy", [Pure]> {
  let summary = "Mean cross-entropy loss kernel";
  let description = [{
    The kernel of `nn.cross_entropy`: one pass over each logits row (online
    log-sum-exp), then the mean over non-ignored rows.

    ```mlir
    %l = tile.cross_entropy %logits, %t : (tensor<32x256xbf16>, tensor<32xi32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$logits, NN_IndexTensor:$targets,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs NN_Scalar:$loss);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_CrossEntropyGradOp : Tile_Op<"cross_entropy_grad", [Pure]> {
  let summary = "Gradient of the cross-entropy loss with respect to the logits";
  let description = [{
    The kernel of `nn.cross_entropy_grad`: `grad * (softmax(logits) -
    onehot(targets)) / n` for each of the `n` non-ignored rows, zero for
    ignored rows.

    ```mlir
    %dl = tile.cross_entropy_grad %one, %logits, %t
        : (tensor<f32>, tensor<32x256xbf16>, tensor<32xi32>) -> tensor<32x256xbf16>
    ```
  }];
  let arguments = (ins NN_Scalar:$grad, NN_FloatTensor:$logits,
                       NN_IndexTensor:$targets,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $logits `,` $targets attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_LinearCrossEntropyOp : Tile_Op<"linear_cross_entropy", [Pure]> {
  let summary = "LM head, cross-entropy loss and both of their gradients, over chunks of tokens";
  let description = [{
    `nn-fuse`'s `linear-cross-entropy` group: the LM-head linear
    (`logits = input weight^T`, `weight` `[vocab, hidden]`), the mean
    cross-entropy of the logits against `targets`, its gradient scaled by
    `grad` (the loss's seed gradient), and the two GEMMs that consume the
    logits' gradient (`input_grad = dlogits weight`, `weight_grad =
    dlogits^T input`) as one op that never holds the `[tokens, vocab]`
    logits. For each chunk of `chunk_rows` tokens it computes the chunk's
    logits into `logits_scratch` (`[chunk_rows, vocab]`, FP32, FP32
    accumulation; for BF16 operands the logits are then rounded to BF16,
    as the unfused GEMM stores them, so that fusion does not change the
    step's numerics, unless `fp32_logits` keeps them FP32), each row's
    log-sum-exp and loss, the chunk's logits gradient in place (rounded to
    BF16 for BF16 operands, as the unfused step stores it and as the BF16
    GEMMs read it), the
    chunk's rows of `input_grad`, and adds the chunk's product to
    `weight_grad`, the FP32 accumulator (for a BF16 weight too; `nn-fuse`
    rounds it with a cast where the unfused gradient was BF16). Rows whose target is `ignore_index` add nothing and get zero
    input gradients. `logits_scratch` is a result so that the memory
    planner gives it room; nothing reads it.

    ```mlir
    %loss, %dx, %dw, %scratch = tile.linear_cross_entropy %x, %w, %t, %one {chunk_rows = 16 : i64, ignore_index = -100 : i64}
        : (tensor<2x16x64xbf16>, tensor<256x64xbf16>, tensor<2x16xi32>, tensor<f32>)
        -> (tensor<f32>, tensor<2x16x64xbf16>, tensor<256x64xf32>, tensor<16x256xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, NN_FloatTensor:$weight,
                       NN_IndexTensor:$targets, NN_Scalar:$grad,
                       I64Attr:$chunk_rows,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index,
                       UnitAttr:$fp32_logits);
  let results = (outs NN_Scalar:$loss, NN_FloatTensor:$input_grad,
                      NN_FloatTensor:$weight_grad,
                      NN_F32Tensor:$logits_scratch);
  let assemblyFormat = [{
    $input `,` $weight `,` $targets `,` $grad attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_RoPETableOp : Tile_Op<"rope_table", [Pure]> {
  let summary = "The rotary embedding's cosines and sines, one row per token";
  let description = [{
    The kernel of `nn.rope_table`: `[batch, seq, head_dim]` FP32, cosines in
    the first half of each row and sines in the second, computed in double
    and rounded as `nn.rope` computes them; the attention kernels that
    rotate Q and K on load read it.

    ```mlir
    %t = tile.rope_table {theta = 1.0e4 : f64} : () -> tensor<2x16x16xf32>
    ```
  }];
  let arguments = (ins Optional<NN_IndexTensor>:$positions,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = [{
    (`positions` `(` $positions^ `)`)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_EmbeddingGradOp : Tile_Op<"embedding_grad", [Pure]> {
  let summary = "Scatter-add of row gradients into an embedding table";
  let description = [{
    The kernel of `nn.embedding_grad`: `result[v, :]` is the sum of the rows
    of `grad` (`[ids..., hidden]`) whose id is `v`. It accumulates in the
    result's element type, FP32 for a BF16 table (`nn-lower-to-tile` rounds
    the sum once with a cast).

    ```mlir
    %dt = tile.embedding_grad %dh, %ids : (tensor<2x16x64xbf16>, tensor<2x16xi32>) -> tensor<320x64xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_IndexTensor:$ids);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $ids attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_GlobalNormOp : Tile_Op<"global_norm", [Pure]> {
  let summary = "L2 norm over a list of tensors";
  let description = [{
    The kernel of `nn.global_norm`: the square root of the sum of squares of
    every element of every input, accumulated in FP32.

    ```mlir
    %n = tile.global_norm %g0, %g1 : (tensor<64x64xf32>, tensor<64xf32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins Variadic<NN_FloatTensor>:$inputs,
                       OptionalAttr<I64Attr>:$shards);
  let results = (outs NN_Scalar:$result);
  let assemblyFormat = [{
    $inputs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_AdamWOp : Tile_Op<"adamw", [Pure]> {
  let summary = "Multi-tensor AdamW update kernel, in place on parameters and moments";
  let description = [{
    The kernel of `nn.adamw_update`, for one parameter or for many (`nn-fuse`
    groups the updates of a step that share their hyperparameters into one
    op, one kernel). The operands are the N parameters, their N gradients,
    N first and N second moments, then the learning rate, the step and the
    global gradient norm; the results are the N updated parameters, first
    and second moments, in that order. With `compute_copies`, N BF16 copies
    of the parameters follow the moments among the operands and the results:
    the update rounds each new master into its copy, which the next step's
    BF16 GEMMs read (no cast kernels). The results reuse the buffers of the
    tensors they replace (tile-plan-memory gives them the same offsets), so
    the optimizer needs no extra memory. The runtime relies on that, and the
    verifier checks what makes it safe: the 4N tensors are different values,
    nothing after the update reads the 3N it overwrites, and once memory is
    planned (`kiln.offsets`) each result has the offset of the operand it
    replaces. `shards` as for `nn.adamw_update` (ZeRO-1: each rank updates
    its shard of every parameter, with moments of the shard's size).

    ```mlir
    %p2, %m2, %v2 = tile.adamw %p, %g, %m, %v, %lr, %step, %n
        {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-08 : f64,
         weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64}
        : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>,
           tensor<f32>, tensor<f32>, tensor<f32>)
        -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
    ```
  }];
  // One operand list, the scalars last: the printed form of one parameter
  // is that of a plain update.
  let arguments = (ins Variadic<NN_FloatTensor>:$operands_,
                       F64Attr:$beta1, F64Attr:$beta2, F64Attr:$epsilon,
                       F64Attr:$weight_decay, F64Attr:$max_grad_norm,
                       UnitAttr:$compute_copies, OptionalAttr<I64Attr>:$shards);
  let results = (outs Variadic<NN_FloatTensor>:$updated);
  let assemblyFormat = [{
    $operands_ attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The 4N tensors: params, grads, exp_avgs, exp_avg_sqs.
    ::mlir::OperandRange getTensors() {
      return getOperands_().drop_back(
          std::min<unsigned>(3, getOperands_().size()));
    }
    /// Tensors per parameter: 4, or 5 with its BF16 compute copy.
    unsigned getTensorsPerParam() { return getComputeCopies() ? 5 : 4; }
    ::mlir::Value getLr() { return getOperands_().end()[-3]; }
    ::mlir::Value getStep() { return getOperands_().end()[-2]; }
    ::mlir::Value getGradNorm() { return getOperands_().end()[-1]; }
    /// N: the parameters it updates.
    unsigned getNumParams() {
      return getTensors().size() / getTensorsPerParam();
    }
    ::mlir::Value getParam(unsigned i = 0) { return getTensors()[i]; }
    ::mlir::Value getGrad(unsigned i = 0) {
      return getTensors()[getNumParams() + i];
    }
    ::mlir::Value getExpAvg(unsigned i = 0) {
      return getTensors()[2 * getNumParams() + i];
    }
    ::mlir::Value getExpAvgSq(unsigned i = 0) {
      return getTensors()[3 * getNumParams() + i];
    }
    ::mlir::Value getNewParam(unsigned i = 0) { return getUpdated()[i]; }
    ::mlir::Value getNewExpAvg(unsigned i = 0) {
      return getUpdated()[getNumParams() + i];
    }
    ::mlir::Value getNewExpAvgSq(unsigned i = 0) {
      return getUpdated()[2 * getNumParams() + i];
    }
    /// With compute_copies: the BF16 copy of parameter i, and its update.
    ::mlir::Value getComputeCopy(unsigned i) {
      return getTensors()[4 * getNumParams() + i];
    }
    ::mlir::Value getNewComputeCopy(unsigned i) {
      return getUpdated()[3 * getNumParams() + i];
    }
    /// The operand that result `index` overwrites in place.
    ::mlir::Value getReplaced(unsigned index) {
      unsigned n = getNumParams();
      unsigned kind = index / n, i = index % n;
      return kind == 0   ? getParam(i)
             : kind == 1 ? getExpAvg(i)
             : kind == 2 ? getExpAvgSq(i)
                         : getComputeCopy(i);
    }
  }];
}

def Tile_GradAccumulateOp : Tile_Op<"grad_accumulate", [Pure]> {
  let summary = "Multi-tensor gradient accumulation kernel, in place";
  let description = [{
    The kernel of `nn.grad_accumulate`: N FP32 accumulators, the N gradients
    of one micro-batch and the micro-step index `m` (an FP32 scalar);
    `acc_i = (m == 0 ? 0 : acc_i) + grad_i`. The results reuse the
    accumulators' buffers (tile-plan-memory gives them the same offsets),
    which persist across the micro-steps of an optimizer step; the verifier
    checks what makes that safe: N accumulators of their own, not read after
    the op, and once memory is planned each result at its accumulator's
    offset.

    ```mlir
    %a0 = tile.grad_accumulate %acc0, %g0, %m
        : (tensor<64xf32>, tensor<64xf32>, tensor<f32>) -> tensor<64xf32>
    ```
  }];
  let arguments = (ins Variadic<NN_F32Tensor>:$operands_);
  let results = (outs Variadic<NN_F32Tensor>:$accumulated);
  let assemblyFormat = [{
    $operands_ attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    unsigned getNumGrads() { return getAccumulated().size(); }
    ::mlir::Value getAccumulator(unsigned i) { return getOperands_()[i]; }
    ::mlir::Value getGrad(unsigned i) {
      return getOperands_()[getNumGrads() + i];
    }
    ::mlir::Value getMicroStep() { return getOperands_().back(); }
  }];
}

def Tile_ViewOp : Tile_Op<"view", [Pure]> {
  let summary = "A slice of a tensor read in place: no kernel, no copy";
  let description = [{
    `result` is the part of `source` that starts at index `start` of
    dimension `dim` and keeps the rest of the shape: the elements are those
    of `source`, in its memory. `dim` is the first dimension (the slice is
    contiguous) or the last (each row of the slice is a run of elements, one
    `source` row apart: a row-strided view). `tile-fold-views` turns a
    split copy into views where every consumer reads row-strided operands.

    ```mlir
    %k = tile.view %qkv {dim = 2, start = 768}
        : (tensor<4x64x2304xf32>) -> tensor<4x64x768xf32>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$source, I64Attr:$dim, I64Attr:$start);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $source attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_ConcatOp : Tile_Op<"concat", [Pure]> {
  let summary = "A concatenation its operands are written into: no kernel";
  let description = [{
    `result` is the concatenation of `inputs` along dimension `dim` (the
    first or the last), with no kernel: the memory planner places each
    input inside the result's buffer, so the kernels that produce them write
    there (row-strided for the last dimension). Every input is defined in
    the same block and is an input of no other `tile.concat`.
    `tile-fold-views` makes one from a concat copy whose inputs' producers
    write row-strided results.

    ```mlir
    %dqkv = tile.concat %dq, %dk, %dv {dim = 2}
        : (tensor<4x64x768xf32>, tensor<4x64x768xf32>, tensor<4x64x768xf32>)
        -> tensor<4x64x2304xf32>
    ```
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $inputs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Tile_FusedOp : Tile_Op<"fused", [IsolatedFromAbove,
    SingleBlockImplicitTerminator<"YieldOp">]> {
  let summary = "A region of elementwise and row-wise nn ops run as one kernel";
  let description = [{
    The body's block arguments are the operands; `tile.yield` gives the
    results. Values inside the body never reach memory: on the GPU they live
    in registers and shared memory, on the host in temporaries. The body may
    hold only ops that work row by row or element by element (norms and
    their gradients, RoPE, activations, casts, elementwise arithmetic,
    embedding gathers, splits, concatenations and column sums).
    `nn-lower-to-tile` makes one region per op; `nn-fuse` merges them.

    ```mlir
    %n = tile.fused %h, %g : (tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16> {
    ^bb0(%x: tensor<2x16x64xbf16>, %w: tensor<64xbf16>):
      %y = nn.rms_norm %x, %w : (tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
      tile.yield %y : tensor<2x16x64xbf16>
    }
    ```
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs);
  let results = (outs Variadic<AnyRankedTensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $inputs attr-dict `:` functional-type($inputs, $results) $body
  }];
  let hasVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    OpBuilder<(ins "::mlir::TypeRange":$resultTypes,
                   "::mlir::ValueRange":$inputs)>
  ];
}

def Tile_YieldOp : Tile_Op<"yield", [Pure, Terminator,
    HasParent<"FusedOp">]> {
  let summary = "Returns the results of a tile.fused region";
  let description = [{
    ```mlir
    tile.yield %y : tensor<2x16x64xbf16>
    ```
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$values);
  let builders = [OpBuilder<(ins), [{ /* empty yield */ }]>];
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

#endif // KILN_TILE_OPS
