//===- NNOps.td - nn dialect operations ---------------------*- tablegen -*-===//
//
// The forward ops of Llama, Mistral, Qwen2 and GPT-2. Every op verifies the
// shapes and element types of its operands and names them when they are
// wrong; dynamic dimensions are checked once they are known.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_NN_OPS
#define KILN_NN_OPS

include "dialects/nn/NNDialect.td"
include "dialects/nn/NNInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Embedding and GEMMs
//===----------------------------------------------------------------------===//

def NN_EmbeddingOp : NN_Op<"embedding", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Looks up rows of an embedding table by token id";
  let description = [{
    Gathers row `ids[...]` of `table` (`[vocab, hidden]`) for every id. The
    result has the shape of `ids` followed by `hidden`, in the table's element
    type. Ids outside `[0, vocab)` are an error at run time.

    ```mlir
    %h = nn.embedding %wte, %tokens
        : (tensor<32000x4096xbf16>, tensor<8x2048xi32>) -> tensor<8x2048x4096xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$table, NN_IndexTensor:$ids);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $table `,` $ids attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_LinearOp : NN_Op<"linear", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Applies a linear layer: x * W^T + b";
  let description = [{
    Multiplies the last dimension of `input` (`[..., in]`) by `weight`, which
    is stored `[out, in]` as in PyTorch's `nn.Linear` and Hugging Face
    checkpoints, and adds the optional `bias` (`[out]`). Accumulation is FP32
    whatever the element type. Input, weight, bias and result share one
    element type.

    ```mlir
    %q = nn.linear %x, %wq, %bq
        : (tensor<8x2048x896xbf16>, tensor<896x896xbf16>, tensor<896xbf16>)
        -> tensor<8x2048x896xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, NN_FloatTensor:$weight,
                       Optional<NN_FloatTensor>:$bias,
                       UnitAttr:$transpose_weight);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_MatmulOp : NN_Op<"matmul", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Batched matrix product with optional transposes";
  let description = [{
    Computes `op(lhs) * op(rhs)` over the last two dimensions, where `op`
    transposes its operand when `transpose_lhs` / `transpose_rhs` is set. The
    leading (batch) dimensions of both operands and the result must be equal.
    Accumulation is FP32.

    ```mlir
    %logits = nn.matmul %h, %wte {transpose_rhs}
        : (tensor<4x1024x768xf32>, tensor<4x50257x768xf32>) -> tensor<4x1024x50257xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$lhs, NN_FloatTensor:$rhs,
                       UnitAttr:$transpose_lhs, UnitAttr:$transpose_rhs);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Normalisation and position encoding
//===----------------------------------------------------------------------===//

def NN_RMSNormOp : NN_Op<"rms_norm", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Root-mean-square normalisation over the last dimension";
  let description = [{
    `y = x / sqrt(mean(x^2) + epsilon) * weight`, with the mean over the last
    dimension computed in FP32. `weight` has the size of that dimension.

    ```mlir
    %n = nn.rms_norm %x, %g {epsilon = 1.0e-05 : f64}
        : (tensor<8x2048x4096xbf16>, tensor<4096xbf16>) -> tensor<8x2048x4096xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, NN_FloatTensor:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$epsilon);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_LayerNormOp : NN_Op<"layer_norm", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Layer normalisation over the last dimension";
  let description = [{
    `y = (x - mean(x)) / sqrt(var(x) + epsilon) * weight + bias` over the last
    dimension, statistics in FP32. `weight` and the optional `bias` have the
    size of that dimension.

    ```mlir
    %n = nn.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f64}
        : (tensor<4x1024x768xf32>, tensor<768xf32>, tensor<768xf32>)
        -> tensor<4x1024x768xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, NN_FloatTensor:$weight,
                       Optional<NN_FloatTensor>:$bias,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_RoPEOp : NN_Op<"rope", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Applies rotary position embeddings per head";
  let description = [{
    Rotates each head of `input` (`[batch, seq, num_heads * head_dim]`) by
    angles `position * theta^(-2i / head_dim)`, pairing element `i` with
    element `i + head_dim / 2` (the "rotate half" convention of Hugging Face
    Llama, Mistral and Qwen2). `head_dim` must be even.

    Positions are `0 .. seq-1` unless `positions` (`[batch, seq]`) is given;
    packed sequences pass positions that restart at every document.
    `inverse` rotates by the negated angles: the gradient of a rotation.

    ```mlir
    %qr = nn.rope %q {num_heads = 32 : i64, theta = 500000.0 : f64}
        : (tensor<8x2048x4096xbf16>) -> tensor<8x2048x4096xbf16>
    %kr = nn.rope %k positions(%pos) {num_heads = 8 : i64, theta = 1.0e4 : f64}
        : (tensor<1x4096x1024xbf16>, tensor<1x4096xi32>) -> tensor<1x4096x1024xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input,
                       Optional<NN_IndexTensor>:$positions,
                       I64Attr:$num_heads,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta,
                       UnitAttr:$inverse);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`positions` `(` $positions^ `)`)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_RoPETableOp : NN_Op<"rope_table", [Pure]> {
  let summary = "The cosines and sines of the rotary embedding, per token";
  let description = [{
    `[batch, seq, head_dim]` FP32: for `i < head_dim / 2`, element `i` is
    `cos(position * theta^(-2i / head_dim))` and element `i + head_dim / 2`
    its sine, the angle and both functions in double and rounded to FP32:
    exactly the factors `nn.rope` multiplies by. Positions are as for
    `nn.rope`. `nn-fuse` builds one table for the attention ops that rotate
    their query and key on load (`nn.attention` `rope`); it is not
    differentiable and appears only after autodiff.

    ```mlir
    %t = nn.rope_table {theta = 5.0e5 : f64} : () -> tensor<1x8192x128xf32>
    %p = nn.rope_table positions(%pos) {theta = 1.0e4 : f64}
        : (tensor<2x64xi32>) -> tensor<2x64x64xf32>
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

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

def NN_AttentionOp : NN_Op<"attention", [Pure, AttrSizedOperandSegments, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Scaled dot-product attention with GQA, causal masking and "
                "packed sequences";
  let description = [{
    `softmax(q k^T * scale + mask) v` per head, exact. `query` is
    `[batch, seq, num_heads * head_dim]`; `key` and `value` are
    `[batch, seq, num_kv_heads * head_dim]`. With grouped-query attention
    (`num_kv_heads < num_heads`), query head `h` reads key/value head
    `h / (num_heads / num_kv_heads)`, so `num_kv_heads` must divide
    `num_heads`. `scale` defaults to `1 / sqrt(head_dim)`.

    `causal` masks keys after the query position. `cu_seqlens` (`i32`,
    `[num_docs + 1]`, ascending from 0 to `batch * seq`) marks the document
    boundaries of packed sequences in the flattened `batch * seq` token
    stream; no token attends across a boundary.

    `rope` (an `nn.rope_table` of the query's batch, sequence and head
    dimension) rotates every query and key head by the table as `nn.rope`
    does, rounded to their element type, before the scores: `query` and
    `key` are then the unrotated projections. `nn-fuse` folds the RoPE of Q
    and K into the attention this way.

    ```mlir
    %o = nn.attention %q, %k, %v {causal, num_heads = 32 : i64, num_kv_heads = 8 : i64}
        : (tensor<8x2048x4096xbf16>, tensor<8x2048x1024xbf16>, tensor<8x2048x1024xbf16>)
        -> tensor<8x2048x4096xbf16>
    %p = nn.attention %q, %k, %v cu_seqlens(%cu) {causal, num_heads = 14 : i64, num_kv_heads = 2 : i64}
        : (tensor<1x4096x896xbf16>, tensor<1x4096x128xbf16>, tensor<1x4096x128xbf16>, tensor<5xi32>)
        -> tensor<1x4096x896xbf16>
    %r = nn.attention %q, %k, %v rope(%table) {causal, num_heads = 4 : i64, num_kv_heads = 2 : i64}
        : (tensor<2x16x64xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>, tensor<2x16x16xf32>)
        -> tensor<2x16x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$query, NN_FloatTensor:$key,
                       NN_FloatTensor:$value,
                       Optional<NN_I32Vector>:$cu_seqlens,
                       Optional<NN_F32Tensor>:$rope,
                       I64Attr:$num_heads, I64Attr:$num_kv_heads,
                       UnitAttr:$causal, OptionalAttr<F64Attr>:$scale);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value (`cu_seqlens` `(` $cu_seqlens^ `)`)?
    (`rope` `(` $rope^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The per-head dimension, or ShapedType::kDynamic when unknown.
    int64_t getHeadDim();
  }];
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

def NN_SwiGLUOp : NN_Op<"swiglu", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Gated SiLU: silu(gate) * up";
  let description = [{
    The SwiGLU activation of Llama-style MLPs, `gate * sigmoid(gate) * up`,
    elementwise over two tensors of one type.

    ```mlir
    %a = nn.swiglu %gate, %up
        : (tensor<8x2048x14336xbf16>, tensor<8x2048x14336xbf16>) -> tensor<8x2048x14336xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$gate, NN_FloatTensor:$up);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $gate `,` $up attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_GeluOp : NN_Op<"gelu", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Gaussian error linear unit";
  let description = [{
    `x * Phi(x)`, with `Phi` the exact Gaussian CDF (`approximate = none`,
    the default) or its tanh approximation (`approximate = tanh`, GPT-2's
    `gelu_new`).

    ```mlir
    %a = nn.gelu %x approximate = tanh : (tensor<4x1024x3072xf32>) -> tensor<4x1024x3072xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input,
                       DefaultValuedAttr<NN_GeluApproximationAttr,
                           "::kiln::nn::GeluApproximation::none">:$approximate);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`approximate` `=` $approximate^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

class NN_BinaryElementwiseOp<string mnemonic, string what, string example>
    : NN_Op<mnemonic, [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Elementwise " # what # " of two tensors of one type";
  let description = "Both operands and the result have the same shape and "
      "element type; there is no implicit broadcasting.\n\n```mlir\n"
      # example # "\n```";
  let arguments = (ins NN_FloatTensor:$lhs, NN_FloatTensor:$rhs);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_AddOp : NN_BinaryElementwiseOp<"add", "sum",
  "%r = nn.add %x, %attn : (tensor<8x2048x4096xbf16>, tensor<8x2048x4096xbf16>) -> tensor<8x2048x4096xbf16>">;
def NN_MulOp : NN_BinaryElementwiseOp<"mul", "product",
  "%r = nn.mul %a, %b : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>">;

//===----------------------------------------------------------------------===//
// Loss
//===----------------------------------------------------------------------===//

def NN_CrossEntropyOp : NN_Op<"cross_entropy", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Mean softmax cross-entropy of logits against target ids";
  let description = [{
    `mean over positions p with targets[p] != ignore_index of
    (logsumexp(logits[p, :]) - logits[p, targets[p]])`, computed in FP32.
    `logits` is `[..., vocab]` and `targets` has the leading dimensions of
    `logits`. The result is an FP32 scalar.

    ```mlir
    %loss = nn.cross_entropy %logits, %targets
        : (tensor<8x2048x32000xbf16>, tensor<8x2048xi32>) -> tensor<f32>
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

//===----------------------------------------------------------------------===//
// FP8 quantization
//===----------------------------------------------------------------------===//

def NN_QuantizeOp : NN_Op<"quantize", [Pure]> {
  let summary = "Quantizes to FP8 with one FP32 scale per tile";
  let description = [{
    Splits `input` into tiles of `tile_shape` (one entry per dimension, each
    dividing its dimension) and, per tile, computes
    `scale = amax(|tile|) / max_finite(fp8)` and stores `tile / scale` rounded
    to the result's FP8 type, saturating. `scale` has shape
    `input_shape / tile_shape`. DeepSeek-V3 uses `1x128` tiles for activations
    and gradients and `128x128` blocks for weights.

    ```mlir
    %q, %s = nn.quantize %x {tile_shape = array<i64: 1, 128>}
        : (tensor<16384x4096xbf16>) -> (tensor<16384x4096xf8E4M3FN>, tensor<16384x32xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, DenseI64ArrayAttr:$tile_shape);
  let results = (outs NN_FP8Tensor:$result, NN_F32Tensor:$scale);
  let assemblyFormat = [{
    $input attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_DequantizeOp : NN_Op<"dequantize", [Pure]> {
  let summary = "Widens an FP8 tensor by its per-tile FP32 scales";
  let description = [{
    The inverse of `nn.quantize`: `result = input * scale[tile of element]`,
    with the same `tile_shape` rules.

    ```mlir
    %w = nn.dequantize %q, %s {tile_shape = array<i64: 128, 128>}
        : (tensor<4096x4096xf8E4M3FN>, tensor<32x32xf32>) -> tensor<4096x4096xbf16>
    ```
  }];
  let arguments = (ins NN_FP8Tensor:$input, NN_F32Tensor:$scale,
                       DenseI64ArrayAttr:$tile_shape);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $scale attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Data movement and precision
//===----------------------------------------------------------------------===//

def NN_CastOp : NN_Op<"cast", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Converts a tensor to another floating-point element type";
  let description = [{
    Rounds each element to the result's element type (to nearest, ties to
    even). Mixed-precision training casts the FP32 master weights to BF16 at
    their use; the gradient of a cast is the cast back.

    ```mlir
    %w16 = nn.cast %w : (tensor<4096x4096xf32>) -> tensor<4096x4096xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_SplitOp : NN_Op<"split", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Cuts the last (or the first) dimension into contiguous parts";
  let description = [{
    Cuts dimension `dim` of `input` (the last when absent, or 0) into as many
    contiguous parts as there are results, each as wide as its result (GPT-2's
    fused `c_attn` projection into q, k, v; a packed QKV or gate/up GEMM
    output, whose parts differ in width under GQA; with `dim = 0`, a packed
    weight gradient into the parameters' gradients).

    ```mlir
    %q, %k, %v = nn.split %qkv : (tensor<4x1024x2304xf32>)
        -> (tensor<4x1024x768xf32>, tensor<4x1024x768xf32>, tensor<4x1024x768xf32>)
    %dq, %dk = nn.split %dw {dim = 0 : i64} : (tensor<96x64xf32>)
        -> (tensor<64x64xf32>, tensor<32x64xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, OptionalAttr<I64Attr>:$dim);
  let results = (outs Variadic<NN_FloatTensor>:$results);
  let assemblyFormat = [{
    $input attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The dimension cut: `dim`, else the last.
    int64_t getSplitDim();
  }];
}

def NN_ConcatOp : NN_Op<"concat", [Pure, DeclareOpInterfaceMethods<NN_DifferentiableOpInterface>]> {
  let summary = "Concatenates tensors along the last (or the first) dimension";
  let description = [{
    The inverse of `nn.split`: the inputs agree in every dimension but `dim`
    (the last when absent, or 0), along which the result holds them one
    after another (the gradients of a packed QKV's parts; with `dim = 0`,
    the weights of a packed projection).

    ```mlir
    %qkv = nn.concat %q, %k, %v : (tensor<4x1024x768xf32>, tensor<4x1024x768xf32>,
        tensor<4x1024x768xf32>) -> tensor<4x1024x2304xf32>
    %w = nn.concat %wq, %wk, %wv {dim = 0 : i64} : (tensor<64x64xbf16>,
        tensor<32x64xbf16>, tensor<32x64xbf16>) -> tensor<128x64xbf16>
    ```
  }];
  let arguments = (ins Variadic<NN_FloatTensor>:$inputs, OptionalAttr<I64Attr>:$dim);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $inputs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The dimension concatenated along: `dim`, else the last.
    int64_t getConcatDim();
  }];
}

//===----------------------------------------------------------------------===//
// Gradient ops (built by nn-autodiff)
//===----------------------------------------------------------------------===//

def NN_EmbeddingGradOp : NN_Op<"embedding_grad", [Pure]> {
  let summary = "Gradient of an embedding table: scatter-add of rows";
  let description = [{
    `result[v, :] = sum of grad[p, :] over positions p with ids[p] == v`; the
    result has the table's shape `[vocab, hidden]`, in grad's element type
    or FP32 (the accumulator's, kept for the optimizer).

    ```mlir
    %dwte = nn.embedding_grad %dh, %tokens
        : (tensor<8x2048x4096xbf16>, tensor<8x2048xi32>) -> tensor<32000x4096xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_IndexTensor:$ids);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $ids attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_LinearWeightGradOp : NN_Op<"linear_weight_grad", [Pure]> {
  let summary = "Weight gradient of a linear layer: grad^T * input";
  let description = [{
    Sums `grad[p, :]^T input[p, :]` over every leading position `p`: the
    gradient of `nn.linear`'s weight, `[out, in]`, or `[in, out]` with
    `transpose_weight`. One GEMM with FP32 accumulation; the result is in
    the operands' element type or FP32 (the accumulator's, kept for the
    optimizer).

    ```mlir
    %dw = nn.linear_weight_grad %dy, %x
        : (tensor<8x2048x1024xbf16>, tensor<8x2048x4096xbf16>) -> tensor<1024x4096xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$input,
                       UnitAttr:$transpose_weight);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_ColumnSumOp : NN_Op<"column_sum", [Pure]> {
  let summary = "Sums over every dimension but the last";
  let description = [{
    `result[j] = sum of input[..., j]`, accumulated in FP32: the gradient of a
    bias, in input's element type or FP32.

    ```mlir
    %db = nn.column_sum %dy : (tensor<8x2048x1024xbf16>) -> tensor<1024xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_RMSNormGradOp : NN_Op<"rms_norm_grad", [Pure]> {
  let summary = "Input gradient of nn.rms_norm";
  let description = [{
    With `r = 1 / sqrt(mean(x^2) + epsilon)` and `g = grad * weight`:
    `dx = r * (g - x * r^2 * mean(g * x))`, per row, in FP32.

    ```mlir
    %dx = nn.rms_norm_grad %dy, %x, %w {epsilon = 1.0e-05 : f64}
        : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$input,
                       NN_FloatTensor:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$epsilon);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_RMSNormWeightGradOp : NN_Op<"rms_norm_weight_grad", [Pure]> {
  let summary = "Weight gradient of nn.rms_norm";
  let description = [{
    `dweight[j] = sum over rows of grad[., j] * x[., j] * r`, with `r` the
    row's inverse RMS.

    ```mlir
    %dw = nn.rms_norm_weight_grad %dy, %x {epsilon = 1.0e-05 : f64}
        : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<64xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$input,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$epsilon);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_LayerNormGradOp : NN_Op<"layer_norm_grad", [Pure]> {
  let summary = "Input gradient of nn.layer_norm";
  let description = [{
    With `xhat = (x - mean) * r` and `g = grad * weight`:
    `dx = r * (g - mean(g) - xhat * mean(g * xhat))`, per row, in FP32.

    ```mlir
    %dx = nn.layer_norm_grad %dy, %x, %w
        : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$input,
                       NN_FloatTensor:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_LayerNormWeightGradOp : NN_Op<"layer_norm_weight_grad", [Pure]> {
  let summary = "Weight gradient of nn.layer_norm";
  let description = [{
    `dweight[j] = sum over rows of grad[., j] * xhat[., j]`.

    ```mlir
    %dw = nn.layer_norm_weight_grad %dy, %x
        : (tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$input,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_AttentionGradOp : NN_Op<"attention_grad", [Pure, AttrSizedOperandSegments]> {
  let summary = "Gradients of nn.attention with respect to q, k and v";
  let description = [{
    Takes the gradient of the attention output and the forward operands with
    the forward attributes, and returns `dq`, `dk`, `dv`. With GQA, `dk` and
    `dv` sum over the query heads that share each key/value head. With
    `rope`, `query` and `key` are unrotated (as for `nn.attention`) and `dq`
    and `dk` are their gradients: the gradients of the rotated operands
    rotated back by the inverse angles.

    ```mlir
    %dq, %dk, %dv = nn.attention_grad %do, %q, %k, %v {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64}
        : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>)
        -> (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$query,
                       NN_FloatTensor:$key, NN_FloatTensor:$value,
                       Optional<NN_I32Vector>:$cu_seqlens,
                       Optional<NN_F32Tensor>:$rope,
                       I64Attr:$num_heads, I64Attr:$num_kv_heads,
                       UnitAttr:$causal, OptionalAttr<F64Attr>:$scale);
  let results = (outs NN_FloatTensor:$query_grad, NN_FloatTensor:$key_grad,
                      NN_FloatTensor:$value_grad);
  let assemblyFormat = [{
    $grad `,` $query `,` $key `,` $value (`cu_seqlens` `(` $cu_seqlens^ `)`)?
    (`rope` `(` $rope^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_SwiGLUGradOp : NN_Op<"swiglu_grad", [Pure]> {
  let summary = "Gradients of nn.swiglu with respect to gate and up";
  let description = [{
    `dgate = grad * up * s * (1 + gate * (1 - s))` with `s = sigmoid(gate)`,
    and `dup = grad * gate * s`.

    ```mlir
    %dg, %du = nn.swiglu_grad %dy, %g, %u
        : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>)
        -> (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$gate,
                       NN_FloatTensor:$up);
  let results = (outs NN_FloatTensor:$gate_grad, NN_FloatTensor:$up_grad);
  let assemblyFormat = [{
    $grad `,` $gate `,` $up attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_GeluGradOp : NN_Op<"gelu_grad", [Pure]> {
  let summary = "Input gradient of nn.gelu";
  let description = [{
    `grad * d/dx gelu(x)` for the same `approximate` mode as the forward op.

    ```mlir
    %dx = nn.gelu_grad %dy, %x approximate = tanh
        : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$input,
                       DefaultValuedAttr<NN_GeluApproximationAttr,
                           "::kiln::nn::GeluApproximation::none">:$approximate);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input (`approximate` `=` $approximate^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_CrossEntropyGradOp : NN_Op<"cross_entropy_grad", [Pure]> {
  let summary = "Gradient of nn.cross_entropy with respect to the logits";
  let description = [{
    `dlogits[p, :] = grad * (softmax(logits[p, :]) - onehot(targets[p])) / n`
    for the `n` positions whose target is not `ignore_index`; zero rows for
    ignored positions.

    ```mlir
    %dl = nn.cross_entropy_grad %dloss, %logits, %targets
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

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

def NN_GlobalNormOp : NN_Op<"global_norm", [Pure]> {
  let summary = "L2 norm of a list of tensors, as one vector";
  let description = [{
    `sqrt(sum over all tensors and elements of x^2)` in FP32: the gradient
    norm that gradient clipping compares with its threshold.

    ```mlir
    %n = nn.global_norm %g0, %g1 : (tensor<64x64xf32>, tensor<64xf32>) -> tensor<f32>
    ```
  }];
  // ZeRO-1 (dist-reduce-gradients zero=1): with `shards` = S, each rank's
  // inputs hold only its shard of each gradient (see dist.reduce_scatter);
  // the norm is over those shards, their squares summed over the S ranks.
  let arguments = (ins Variadic<NN_FloatTensor>:$inputs,
                       OptionalAttr<I64Attr>:$shards);
  let results = (outs NN_Scalar:$result);
  let assemblyFormat = [{
    $inputs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_AdamWUpdateOp : NN_Op<"adamw_update", [Pure]> {
  let summary = "One AdamW step of a parameter with gradient clipping";
  let description = [{
    With `c = min(1, max_grad_norm / (grad_norm + 1e-6))` (1 when
    `max_grad_norm` is 0), `g = c * grad`, and `t = step` (1-based):

    ```
    m' = beta1 * m + (1 - beta1) * g
    v' = beta2 * v + (1 - beta2) * g^2
    param' = param - lr * (weight_decay * param
                           + (m' / (1 - beta1^t)) / (sqrt(v' / (1 - beta2^t)) + epsilon))
    ```

    All FP32: the master weights and both moments. `lr`, `step` and
    `grad_norm` are FP32 scalars computed per step (the learning-rate
    schedule lives in the runtime).

    ZeRO-1 (`dist-reduce-gradients zero=1`): with `shards` = S, the update
    is of this rank's shard of the parameter only (the flattened tensor
    split into S shards of `ceil(n / S)` elements, as `dist.reduce_scatter`
    splits it); the moments are that shard's, `tensor<ceil(n / S) x f32>`
    (the last ranks' shards are shorter and their moments' tails unused),
    and the rest of the parameter is returned as it came. With sharded
    master weights the param and its update are that shard too (the
    gradient stays whole).

    ```mlir
    %p2, %m2, %v2 = nn.adamw_update %p, %g, %m, %v, %lr, %step, %norm
        {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-08 : f64,
         weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64}
        : (tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>,
           tensor<f32>, tensor<f32>, tensor<f32>)
        -> (tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>)
    ```
  }];
  let arguments = (ins NN_F32Tensor:$param, NN_F32Tensor:$grad,
                       NN_F32Tensor:$exp_avg, NN_F32Tensor:$exp_avg_sq,
                       NN_Scalar:$lr, NN_Scalar:$step, NN_Scalar:$grad_norm,
                       F64Attr:$beta1, F64Attr:$beta2, F64Attr:$epsilon,
                       F64Attr:$weight_decay, F64Attr:$max_grad_norm,
                       OptionalAttr<I64Attr>:$shards);
  let results = (outs NN_F32Tensor:$new_param, NN_F32Tensor:$new_exp_avg,
                      NN_F32Tensor:$new_exp_avg_sq);
  let assemblyFormat = [{
    $param `,` $grad `,` $exp_avg `,` $exp_avg_sq `,` $lr `,` $step `,`
    $grad_norm attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_GradAccumulateOp : NN_Op<"grad_accumulate", [Pure]> {
  let summary = "Adds a micro-batch's gradients into their FP32 accumulators";
  let description = [{
    Gradient accumulation over the micro-batches of one optimizer step
    (`nn-accumulate-gradients`). The operands are N accumulators, the N
    gradients of this micro-batch (same types, in the same order) and the
    micro-step index `m` (0-based, an FP32 scalar set by the runtime); the
    results are the N new accumulators:

    ```
    acc_i' = (m == 0 ? 0 : acc_i) + grad_i      (FP32)
    ```

    so the first micro-batch overwrites what the last step left and the
    accumulators need no clearing. The runtime runs the forward and backward
    chunks once per micro-batch and the optimizer (chunk `O`) once, after the
    last, on the accumulated gradients.

    ```mlir
    %a0, %a1 = nn.grad_accumulate %acc0, %acc1, %g0, %g1, %m
        : (tensor<64x64xf32>, tensor<64xf32>, tensor<64x64xf32>, tensor<64xf32>,
           tensor<f32>) -> (tensor<64x64xf32>, tensor<64xf32>)
    ```
  }];
  let arguments = (ins Variadic<NN_F32Tensor>:$operands_);
  let results = (outs Variadic<NN_F32Tensor>:$accumulated);
  let assemblyFormat = [{
    $operands_ attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// N: the gradients it accumulates.
    unsigned getNumGrads() { return getAccumulated().size(); }
    ::mlir::Value getAccumulator(unsigned i) { return getOperands_()[i]; }
    ::mlir::Value getGrad(unsigned i) {
      return getOperands_()[getNumGrads() + i];
    }
    ::mlir::Value getMicroStep() { return getOperands_().back(); }
  }];
}

#endif // KILN_NN_OPS
