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
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Embedding and GEMMs
//===----------------------------------------------------------------------===//

def NN_EmbeddingOp : NN_Op<"embedding", [Pure]> {
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

def NN_LinearOp : NN_Op<"linear", [Pure]> {
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
                       Optional<NN_FloatTensor>:$bias);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_MatmulOp : NN_Op<"matmul", [Pure]> {
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

def NN_RMSNormOp : NN_Op<"rms_norm", [Pure]> {
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

def NN_LayerNormOp : NN_Op<"layer_norm", [Pure]> {
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

def NN_RoPEOp : NN_Op<"rope", [Pure]> {
  let summary = "Applies rotary position embeddings per head";
  let description = [{
    Rotates each head of `input` (`[batch, seq, num_heads * head_dim]`) by
    angles `position * theta^(-2i / head_dim)`, pairing element `i` with
    element `i + head_dim / 2` (the "rotate half" convention of Hugging Face
    Llama, Mistral and Qwen2). `head_dim` must be even.

    Positions are `0 .. seq-1` unless `positions` (`[batch, seq]`) is given;
    packed sequences pass positions that restart at every document.

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
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`positions` `(` $positions^ `)`)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

def NN_AttentionOp : NN_Op<"attention", [Pure]> {
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

    ```mlir
    %o = nn.attention %q, %k, %v {causal, num_heads = 32 : i64, num_kv_heads = 8 : i64}
        : (tensor<8x2048x4096xbf16>, tensor<8x2048x1024xbf16>, tensor<8x2048x1024xbf16>)
        -> tensor<8x2048x4096xbf16>
    %p = nn.attention %q, %k, %v cu_seqlens(%cu) {causal, num_heads = 14 : i64, num_kv_heads = 2 : i64}
        : (tensor<1x4096x896xbf16>, tensor<1x4096x128xbf16>, tensor<1x4096x128xbf16>, tensor<5xi32>)
        -> tensor<1x4096x896xbf16>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$query, NN_FloatTensor:$key,
                       NN_FloatTensor:$value,
                       Optional<NN_I32Vector>:$cu_seqlens,
                       I64Attr:$num_heads, I64Attr:$num_kv_heads,
                       UnitAttr:$causal, OptionalAttr<F64Attr>:$scale);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value (`cu_seqlens` `(` $cu_seqlens^ `)`)? attr-dict
    `:` functional-type(operands, results)
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

def NN_SwiGLUOp : NN_Op<"swiglu", [Pure]> {
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

def NN_GeluOp : NN_Op<"gelu", [Pure]> {
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
    : NN_Op<mnemonic, [Pure]> {
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

def NN_CrossEntropyOp : NN_Op<"cross_entropy", [Pure]> {
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

#endif // KILN_NN_OPS
