// RUN: kiln-opt %s --split-input-file --verify-diagnostics

// Every verifier rule of the nn dialect, one case each.

//===----------------------------------------------------------------------===//
// nn.embedding
//===----------------------------------------------------------------------===//

func.func @embedding_table_rank(%t: tensor<32000xbf16>, %ids: tensor<2x16xi32>) {
  // expected-error @+1 {{expects table ([vocab, hidden]) to have rank 2, got 'tensor<32000xbf16>'}}
  %0 = nn.embedding %t, %ids : (tensor<32000xbf16>, tensor<2x16xi32>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @embedding_dtype(%t: tensor<100x64xbf16>, %ids: tensor<2x16xi32>) {
  // expected-error @+1 {{expects result to have the element type of table ('bf16'), got 'f32'}}
  %0 = nn.embedding %t, %ids : (tensor<100x64xbf16>, tensor<2x16xi32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @embedding_result_shape(%t: tensor<100x64xbf16>, %ids: tensor<2x16xi32>) {
  // expected-error @+1 {{expects result shape 2x16x64 (ids shape followed by the table's hidden size), got 'tensor<2x16x32xbf16>'}}
  %0 = nn.embedding %t, %ids : (tensor<100x64xbf16>, tensor<2x16xi32>) -> tensor<2x16x32xbf16>
  return
}

// -----

func.func @embedding_float_ids(%t: tensor<100x64xbf16>, %ids: tensor<2x16xf32>) {
  // expected-error @+1 {{operand #1 must be ranked tensor of 32-bit signless integer or 64-bit signless integer values}}
  %0 = nn.embedding %t, %ids : (tensor<100x64xbf16>, tensor<2x16xf32>) -> tensor<2x16x64xbf16>
  return
}

//===----------------------------------------------------------------------===//
// nn.linear
//===----------------------------------------------------------------------===//

// -----

func.func @linear_scalar_input(%x: tensor<bf16>, %w: tensor<8x4xbf16>) {
  // expected-error @+1 {{expects input to have rank at least 1}}
  %0 = nn.linear %x, %w : (tensor<bf16>, tensor<8x4xbf16>) -> tensor<8xbf16>
  return
}

// -----

func.func @linear_weight_rank(%x: tensor<2x4xbf16>, %w: tensor<4xbf16>) {
  // expected-error @+1 {{expects weight ([out, in]) to have rank 2, got 'tensor<4xbf16>'}}
  %0 = nn.linear %x, %w : (tensor<2x4xbf16>, tensor<4xbf16>) -> tensor<2x4xbf16>
  return
}

// -----

func.func @linear_dtype(%x: tensor<2x4xbf16>, %w: tensor<8x4xf32>) {
  // expected-error @+1 {{expects weight to have the element type of input ('bf16'), got 'f32'}}
  %0 = nn.linear %x, %w : (tensor<2x4xbf16>, tensor<8x4xf32>) -> tensor<2x8xbf16>
  return
}

// -----

func.func @linear_bias_dtype(%x: tensor<2x4xbf16>, %w: tensor<8x4xbf16>, %b: tensor<8xf32>) {
  // expected-error @+1 {{expects bias to have the element type of input ('bf16'), got 'f32'}}
  %0 = nn.linear %x, %w, %b : (tensor<2x4xbf16>, tensor<8x4xbf16>, tensor<8xf32>) -> tensor<2x8xbf16>
  return
}

// -----

func.func @linear_in_features(%x: tensor<2x5xbf16>, %w: tensor<8x4xbf16>) {
  // expected-error @+1 {{expects weight in-features (dimension 1 of 'tensor<8x4xbf16>') to equal the last dimension of input (5), got 4}}
  %0 = nn.linear %x, %w : (tensor<2x5xbf16>, tensor<8x4xbf16>) -> tensor<2x8xbf16>
  return
}

// -----

func.func @linear_bias_rank(%x: tensor<2x4xbf16>, %w: tensor<8x4xbf16>, %b: tensor<1x8xbf16>) {
  // expected-error @+1 {{expects bias to have rank 1, got 'tensor<1x8xbf16>'}}
  %0 = nn.linear %x, %w, %b : (tensor<2x4xbf16>, tensor<8x4xbf16>, tensor<1x8xbf16>) -> tensor<2x8xbf16>
  return
}

// -----

func.func @linear_bias_size(%x: tensor<2x4xbf16>, %w: tensor<8x4xbf16>, %b: tensor<4xbf16>) {
  // expected-error @+1 {{expects bias size (dimension 0 of 'tensor<4xbf16>') to equal weight out-features (8), got 4}}
  %0 = nn.linear %x, %w, %b : (tensor<2x4xbf16>, tensor<8x4xbf16>, tensor<4xbf16>) -> tensor<2x8xbf16>
  return
}

// -----

func.func @linear_result_shape(%x: tensor<2x4xbf16>, %w: tensor<8x4xbf16>) {
  // expected-error @+1 {{expects result shape 2x8 (input shape with the last dimension replaced by weight out-features), got 'tensor<2x4xbf16>'}}
  %0 = nn.linear %x, %w : (tensor<2x4xbf16>, tensor<8x4xbf16>) -> tensor<2x4xbf16>
  return
}

// -----

func.func @linear_fp8(%x: tensor<2x4xf8E4M3FN>, %w: tensor<8x4xf8E4M3FN>) {
  // FP8 operands only reach GEMMs through nn.quantize/nn.dequantize.
  // expected-error @+1 {{operand #0 must be ranked tensor of bfloat16 type or 32-bit float values}}
  %0 = nn.linear %x, %w : (tensor<2x4xf8E4M3FN>, tensor<8x4xf8E4M3FN>) -> tensor<2x8xbf16>
  return
}

// -----

func.func @linear_f16(%x: tensor<2x4xf16>, %w: tensor<8x4xf16>) {
  // expected-error @+1 {{operand #0 must be ranked tensor of bfloat16 type or 32-bit float values}}
  %0 = nn.linear %x, %w : (tensor<2x4xf16>, tensor<8x4xf16>) -> tensor<2x8xf16>
  return
}

//===----------------------------------------------------------------------===//
// nn.matmul
//===----------------------------------------------------------------------===//

// -----

func.func @matmul_rank(%a: tensor<8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{expects lhs to have rank at least 2, got 'tensor<8xf32>'}}
  %0 = nn.matmul %a, %b : (tensor<8xf32>, tensor<8xf32>) -> tensor<f32>
  return
}

// -----

func.func @matmul_rank_mismatch(%a: tensor<2x8x4xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{expects lhs and rhs to have the same rank, got 'tensor<2x8x4xf32>' and 'tensor<4x8xf32>'}}
  %0 = nn.matmul %a, %b : (tensor<2x8x4xf32>, tensor<4x8xf32>) -> tensor<2x8x8xf32>
  return
}

// -----

func.func @matmul_dtype(%a: tensor<8x4xf32>, %b: tensor<4x8xbf16>) {
  // expected-error @+1 {{expects rhs to have the element type of lhs ('f32'), got 'bf16'}}
  %0 = nn.matmul %a, %b : (tensor<8x4xf32>, tensor<4x8xbf16>) -> tensor<8x8xf32>
  return
}

// -----

func.func @matmul_batch(%a: tensor<2x8x4xf32>, %b: tensor<3x4x8xf32>) {
  // expected-error @+1 {{expects batch dimension 0 of lhs and rhs to match, got 2 and 3}}
  %0 = nn.matmul %a, %b : (tensor<2x8x4xf32>, tensor<3x4x8xf32>) -> tensor<2x8x8xf32>
  return
}

// -----

func.func @matmul_contraction(%a: tensor<8x4xf32>, %b: tensor<8x4xf32>) {
  // Without transpose_rhs, rhs rows (8) contract against lhs columns (4).
  // expected-error @+1 {{expects the contraction dimensions of lhs (4) and rhs (8) to match}}
  %0 = nn.matmul %a, %b : (tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @matmul_result_shape(%a: tensor<8x4xf32>, %b: tensor<6x4xf32>) {
  // expected-error @+1 {{expects result shape 8x6 (batch dimensions, then lhs rows and rhs columns), got 'tensor<8x4xf32>'}}
  %0 = nn.matmul %a, %b {transpose_rhs} : (tensor<8x4xf32>, tensor<6x4xf32>) -> tensor<8x4xf32>
  return
}

//===----------------------------------------------------------------------===//
// nn.rms_norm and nn.layer_norm
//===----------------------------------------------------------------------===//

// -----

func.func @rms_norm_scalar(%x: tensor<f32>, %g: tensor<1xf32>) {
  // expected-error @+1 {{expects input to have rank at least 1}}
  %0 = nn.rms_norm %x, %g : (tensor<f32>, tensor<1xf32>) -> tensor<f32>
  return
}

// -----

func.func @rms_norm_result(%x: tensor<2x64xbf16>, %g: tensor<64xbf16>) {
  // expected-error @+1 {{expects input and result to have the same type, got 'tensor<2x64xbf16>' and 'tensor<2x64xf32>'}}
  %0 = nn.rms_norm %x, %g : (tensor<2x64xbf16>, tensor<64xbf16>) -> tensor<2x64xf32>
  return
}

// -----

func.func @rms_norm_weight_dtype(%x: tensor<2x64xbf16>, %g: tensor<64xf32>) {
  // expected-error @+1 {{expects weight to have the element type of input ('bf16'), got 'f32'}}
  %0 = nn.rms_norm %x, %g : (tensor<2x64xbf16>, tensor<64xf32>) -> tensor<2x64xbf16>
  return
}

// -----

func.func @rms_norm_weight_rank(%x: tensor<2x64xbf16>, %g: tensor<1x64xbf16>) {
  // expected-error @+1 {{expects weight to have rank 1, got 'tensor<1x64xbf16>'}}
  %0 = nn.rms_norm %x, %g : (tensor<2x64xbf16>, tensor<1x64xbf16>) -> tensor<2x64xbf16>
  return
}

// -----

func.func @rms_norm_weight_size(%x: tensor<2x64xbf16>, %g: tensor<32xbf16>) {
  // expected-error @+1 {{expects weight size (dimension 0 of 'tensor<32xbf16>') to equal the last dimension of input (64), got 32}}
  %0 = nn.rms_norm %x, %g : (tensor<2x64xbf16>, tensor<32xbf16>) -> tensor<2x64xbf16>
  return
}

// -----

func.func @rms_norm_epsilon(%x: tensor<2x64xbf16>, %g: tensor<64xbf16>) {
  // expected-error @+1 {{expects epsilon to be positive, got -1}}
  %0 = nn.rms_norm %x, %g {epsilon = -1.0 : f64} : (tensor<2x64xbf16>, tensor<64xbf16>) -> tensor<2x64xbf16>
  return
}

// -----

func.func @layer_norm_scalar(%x: tensor<f32>, %g: tensor<1xf32>) {
  // expected-error @+1 {{expects input to have rank at least 1}}
  %0 = nn.layer_norm %x, %g : (tensor<f32>, tensor<1xf32>) -> tensor<f32>
  return
}

// -----

func.func @layer_norm_result(%x: tensor<2x64xf32>, %g: tensor<64xf32>) {
  // expected-error @+1 {{expects input and result to have the same type, got 'tensor<2x64xf32>' and 'tensor<2x32xf32>'}}
  %0 = nn.layer_norm %x, %g : (tensor<2x64xf32>, tensor<64xf32>) -> tensor<2x32xf32>
  return
}

// -----

func.func @layer_norm_bias_dtype(%x: tensor<2x64xf32>, %g: tensor<64xf32>, %b: tensor<64xbf16>) {
  // expected-error @+1 {{expects bias to have the element type of input ('f32'), got 'bf16'}}
  %0 = nn.layer_norm %x, %g, %b : (tensor<2x64xf32>, tensor<64xf32>, tensor<64xbf16>) -> tensor<2x64xf32>
  return
}

// -----

func.func @layer_norm_weight_size(%x: tensor<2x64xf32>, %g: tensor<63xf32>) {
  // expected-error @+1 {{expects weight size (dimension 0 of 'tensor<63xf32>') to equal the last dimension of input (64), got 63}}
  %0 = nn.layer_norm %x, %g : (tensor<2x64xf32>, tensor<63xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @layer_norm_bias_size(%x: tensor<2x64xf32>, %g: tensor<64xf32>, %b: tensor<65xf32>) {
  // expected-error @+1 {{expects bias size (dimension 0 of 'tensor<65xf32>') to equal the last dimension of input (64), got 65}}
  %0 = nn.layer_norm %x, %g, %b : (tensor<2x64xf32>, tensor<64xf32>, tensor<65xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @layer_norm_epsilon(%x: tensor<2x64xf32>, %g: tensor<64xf32>) {
  // expected-error @+1 {{expects epsilon to be positive, got 0}}
  %0 = nn.layer_norm %x, %g {epsilon = 0.0 : f64} : (tensor<2x64xf32>, tensor<64xf32>) -> tensor<2x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// nn.rope
//===----------------------------------------------------------------------===//

// -----

func.func @rope_rank(%x: tensor<2x16x4x16xbf16>) {
  // expected-error @+1 {{expects input ([batch, seq, num_heads * head_dim]) to have rank 3, got 'tensor<2x16x4x16xbf16>'}}
  %0 = nn.rope %x {num_heads = 4 : i64} : (tensor<2x16x4x16xbf16>) -> tensor<2x16x4x16xbf16>
  return
}

// -----

func.func @rope_result(%x: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects input and result to have the same type, got 'tensor<2x16x64xbf16>' and 'tensor<2x16x64xf32>'}}
  %0 = nn.rope %x {num_heads = 4 : i64} : (tensor<2x16x64xbf16>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @rope_num_heads(%x: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects num_heads to be positive, got 0}}
  %0 = nn.rope %x {num_heads = 0 : i64} : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @rope_heads_divide(%x: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects num_heads (3) to divide the hidden size of input (64)}}
  %0 = nn.rope %x {num_heads = 3 : i64} : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @rope_odd_head_dim(%x: tensor<2x16x60xbf16>) {
  // expected-error @+1 {{expects an even head_dim to rotate in pairs, got 15 (60 / num_heads 4)}}
  %0 = nn.rope %x {num_heads = 4 : i64} : (tensor<2x16x60xbf16>) -> tensor<2x16x60xbf16>
  return
}

// -----

func.func @rope_theta(%x: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects theta to be positive, got -1}}
  %0 = nn.rope %x {num_heads = 4 : i64, theta = -1.0 : f64} : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @rope_positions_rank(%x: tensor<2x16x64xbf16>, %p: tensor<32xi32>) {
  // expected-error @+1 {{expects positions ([batch, seq]) to have rank 2, got 'tensor<32xi32>'}}
  %0 = nn.rope %x positions(%p) {num_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<32xi32>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @rope_positions_batch(%x: tensor<2x16x64xbf16>, %p: tensor<1x16xi32>) {
  // expected-error @+1 {{expects positions batch (dimension 0 of 'tensor<1x16xi32>') to equal the batch size of input (2), got 1}}
  %0 = nn.rope %x positions(%p) {num_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<1x16xi32>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @rope_positions_length(%x: tensor<2x16x64xbf16>, %p: tensor<2x8xi32>) {
  // expected-error @+1 {{expects positions length (dimension 1 of 'tensor<2x8xi32>') to equal the sequence length of input (16), got 8}}
  %0 = nn.rope %x positions(%p) {num_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<2x8xi32>) -> tensor<2x16x64xbf16>
  return
}

//===----------------------------------------------------------------------===//
// nn.attention
//===----------------------------------------------------------------------===//

// -----

func.func @attention_rank(%q: tensor<2x16x4x16xbf16>, %k: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects query to have rank 3, got 'tensor<2x16x4x16xbf16>'}}
  %0 = nn.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<2x16x4x16xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x4x16xbf16>
  return
}

// -----

func.func @attention_result(%q: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects query and result to have the same type, got 'tensor<2x16x64xbf16>' and 'tensor<2x16x64xf32>'}}
  %0 = nn.attention %q, %q, %q {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @attention_kv_types(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x64xbf16>, %v: tensor<2x16x32xbf16>) {
  // expected-error @+1 {{expects key and value to have the same type, got 'tensor<2x16x64xbf16>' and 'tensor<2x16x32xbf16>'}}
  %0 = nn.attention %q, %k, %v {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x32xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @attention_dtype(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x64xf32>) {
  // expected-error @+1 {{expects key to have the element type of query ('bf16'), got 'f32'}}
  %0 = nn.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @attention_heads_positive(%q: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects num_heads and num_kv_heads to be positive, got 4 and 0}}
  %0 = nn.attention %q, %q, %q {num_heads = 4 : i64, num_kv_heads = 0 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @attention_gqa_divide(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x48xbf16>) {
  // expected-error @+1 {{expects num_kv_heads (3) to divide num_heads (8)}}
  %0 = nn.attention %q, %k, %k {num_heads = 8 : i64, num_kv_heads = 3 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x48xbf16>, tensor<2x16x48xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @attention_batch(%q: tensor<2x16x64xbf16>, %k: tensor<1x16x64xbf16>) {
  // expected-error @+1 {{expects key batch (dimension 0 of 'tensor<1x16x64xbf16>') to equal the batch size of query (2), got 1}}
  %0 = nn.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<1x16x64xbf16>, tensor<1x16x64xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @attention_length(%q: tensor<2x16x64xbf16>, %k: tensor<2x8x64xbf16>) {
  // expected-error @+1 {{expects key length (dimension 1 of 'tensor<2x8x64xbf16>') to equal the sequence length of query (16), got 8}}
  %0 = nn.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<2x8x64xbf16>, tensor<2x8x64xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @attention_query_heads(%q: tensor<2x16x60xbf16>) {
  // expected-error @+1 {{expects num_heads (8) to divide the hidden size of query (60)}}
  %0 = nn.attention %q, %q, %q {num_heads = 8 : i64, num_kv_heads = 8 : i64} : (tensor<2x16x60xbf16>, tensor<2x16x60xbf16>, tensor<2x16x60xbf16>) -> tensor<2x16x60xbf16>
  return
}

// -----

func.func @attention_kv_hidden(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x64xbf16>) {
  // 8 heads of dimension 8 with 2 key/value heads need key hidden size 16.
  // expected-error @+1 {{expects key hidden size (dimension 2 of 'tensor<2x16x64xbf16>') to equal num_kv_heads x head_dim (16), got 64}}
  %0 = nn.attention %q, %k, %k {num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @attention_scale(%q: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects scale to be positive, got -0.5}}
  %0 = nn.attention %q, %q, %q {num_heads = 4 : i64, num_kv_heads = 4 : i64, scale = -0.5 : f64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  return
}

// -----

func.func @attention_cu_seqlens_size(%q: tensor<1x16x64xbf16>, %cu: tensor<1xi32>) {
  // expected-error @+1 {{expects cu_seqlens to hold at least 2 offsets (one document), got 1}}
  %0 = nn.attention %q, %q, %q cu_seqlens(%cu) {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<1x16x64xbf16>, tensor<1x16x64xbf16>, tensor<1x16x64xbf16>, tensor<1xi32>) -> tensor<1x16x64xbf16>
  return
}

// -----

func.func @attention_cu_seqlens_type(%q: tensor<1x16x64xbf16>, %cu: tensor<3xi64>) {
  // expected-error @+1 {{operand #3 must be 1D tensor of 32-bit signless integer values}}
  %0 = nn.attention %q, %q, %q cu_seqlens(%cu) {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<1x16x64xbf16>, tensor<1x16x64xbf16>, tensor<1x16x64xbf16>, tensor<3xi64>) -> tensor<1x16x64xbf16>
  return
}

// -----

func.func @attention_missing_heads(%q: tensor<1x16x64xbf16>) {
  // expected-error @+1 {{requires attribute 'num_kv_heads'}}
  %0 = nn.attention %q, %q, %q {num_heads = 4 : i64} : (tensor<1x16x64xbf16>, tensor<1x16x64xbf16>, tensor<1x16x64xbf16>) -> tensor<1x16x64xbf16>
  return
}

//===----------------------------------------------------------------------===//
// Elementwise ops
//===----------------------------------------------------------------------===//

// -----

func.func @swiglu_operands(%g: tensor<2x64xbf16>, %u: tensor<2x32xbf16>) {
  // expected-error @+1 {{expects gate and up to have the same type, got 'tensor<2x64xbf16>' and 'tensor<2x32xbf16>'}}
  %0 = nn.swiglu %g, %u : (tensor<2x64xbf16>, tensor<2x32xbf16>) -> tensor<2x64xbf16>
  return
}

// -----

func.func @swiglu_result(%g: tensor<2x64xbf16>) {
  // expected-error @+1 {{expects gate and result to have the same type, got 'tensor<2x64xbf16>' and 'tensor<2x64xf32>'}}
  %0 = nn.swiglu %g, %g : (tensor<2x64xbf16>, tensor<2x64xbf16>) -> tensor<2x64xf32>
  return
}

// -----

func.func @gelu_result(%x: tensor<2x64xf32>) {
  // expected-error @+1 {{expects input and result to have the same type, got 'tensor<2x64xf32>' and 'tensor<64x2xf32>'}}
  %0 = nn.gelu %x : (tensor<2x64xf32>) -> tensor<64x2xf32>
  return
}

// -----

func.func @gelu_approximation(%x: tensor<2x64xf32>) {
  // expected-error @+2 {{expected ::kiln::nn::GeluApproximation to be one of: none, tanh}}
  // expected-error @+1 {{failed to parse NN_GeluApproximationAttr parameter 'value'}}
  %0 = nn.gelu %x approximate = sigmoid : (tensor<2x64xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @add_operands(%a: tensor<2x64xf32>, %b: tensor<64xf32>) {
  // No implicit broadcasting.
  // expected-error @+1 {{expects lhs and rhs to have the same type, got 'tensor<2x64xf32>' and 'tensor<64xf32>'}}
  %0 = nn.add %a, %b : (tensor<2x64xf32>, tensor<64xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @add_result(%a: tensor<2x64xf32>) {
  // expected-error @+1 {{expects lhs and result to have the same type, got 'tensor<2x64xf32>' and 'tensor<2x64xbf16>'}}
  %0 = nn.add %a, %a : (tensor<2x64xf32>, tensor<2x64xf32>) -> tensor<2x64xbf16>
  return
}

// -----

func.func @mul_operands(%a: tensor<2x64xf32>, %b: tensor<2x64xbf16>) {
  // expected-error @+1 {{expects lhs and rhs to have the same type, got 'tensor<2x64xf32>' and 'tensor<2x64xbf16>'}}
  %0 = nn.mul %a, %b : (tensor<2x64xf32>, tensor<2x64xbf16>) -> tensor<2x64xf32>
  return
}

// -----

func.func @mul_result(%a: tensor<2x64xf32>) {
  // expected-error @+1 {{expects lhs and result to have the same type, got 'tensor<2x64xf32>' and 'tensor<2x32xf32>'}}
  %0 = nn.mul %a, %a : (tensor<2x64xf32>, tensor<2x64xf32>) -> tensor<2x32xf32>
  return
}

//===----------------------------------------------------------------------===//
// nn.cross_entropy
//===----------------------------------------------------------------------===//

// -----

func.func @cross_entropy_logits_rank(%l: tensor<256xf32>, %t: tensor<i32>) {
  // expected-error @+1 {{expects logits ([..., vocab]) to have rank at least 2, got 'tensor<256xf32>'}}
  %0 = nn.cross_entropy %l, %t : (tensor<256xf32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_targets_rank(%l: tensor<2x16x256xf32>, %t: tensor<32xi32>) {
  // expected-error @+1 {{expects targets to have the leading dimensions of logits (rank 2), got 'tensor<32xi32>'}}
  %0 = nn.cross_entropy %l, %t : (tensor<2x16x256xf32>, tensor<32xi32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_targets_shape(%l: tensor<2x16x256xf32>, %t: tensor<2x8xi32>) {
  // expected-error @+1 {{expects targets (dimension 1 of 'tensor<2x8xi32>') to equal the matching dimension of logits (16), got 8}}
  %0 = nn.cross_entropy %l, %t : (tensor<2x16x256xf32>, tensor<2x8xi32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_result(%l: tensor<2x256xf32>, %t: tensor<2xi32>) {
  // expected-error @+1 {{result #0 must be 0D tensor of 32-bit float values}}
  %0 = nn.cross_entropy %l, %t : (tensor<2x256xf32>, tensor<2xi32>) -> tensor<2xf32>
  return
}

//===----------------------------------------------------------------------===//
// nn.quantize and nn.dequantize
//===----------------------------------------------------------------------===//

// -----

func.func @quantize_result_shape(%x: tensor<32x256xbf16>) {
  // expected-error @+1 {{expects result to have the shape of input, got 'tensor<32x128xf8E4M3FN>' for 'tensor<32x256xbf16>'}}
  %q, %s = nn.quantize %x {tile_shape = array<i64: 1, 128>} : (tensor<32x256xbf16>) -> (tensor<32x128xf8E4M3FN>, tensor<32x2xf32>)
  return
}

// -----

func.func @quantize_tile_rank(%x: tensor<32x256xbf16>) {
  // expected-error @+1 {{expects tile_shape to have one entry per dimension of input (2), got 1}}
  %q, %s = nn.quantize %x {tile_shape = array<i64: 128>} : (tensor<32x256xbf16>) -> (tensor<32x256xf8E4M3FN>, tensor<32x2xf32>)
  return
}

// -----

func.func @quantize_tile_positive(%x: tensor<32x256xbf16>) {
  // expected-error @+1 {{expects tile_shape[0] to be positive, got 0}}
  %q, %s = nn.quantize %x {tile_shape = array<i64: 0, 128>} : (tensor<32x256xbf16>) -> (tensor<32x256xf8E4M3FN>, tensor<32x2xf32>)
  return
}

// -----

func.func @quantize_tile_divides(%x: tensor<32x200xbf16>) {
  // expected-error @+1 {{expects tile_shape[1] (128) to divide dimension 1 of input (200)}}
  %q, %s = nn.quantize %x {tile_shape = array<i64: 1, 128>} : (tensor<32x200xbf16>) -> (tensor<32x200xf8E4M3FN>, tensor<32x2xf32>)
  return
}

// -----

func.func @quantize_scale_shape(%x: tensor<32x256xbf16>) {
  // expected-error @+1 {{expects scale to have one entry per tile, shape 32x2 (input shape / tile_shape), got 'tensor<32x1xf32>'}}
  %q, %s = nn.quantize %x {tile_shape = array<i64: 1, 128>} : (tensor<32x256xbf16>) -> (tensor<32x256xf8E4M3FN>, tensor<32x1xf32>)
  return
}

// -----

func.func @quantize_result_type(%x: tensor<32x256xbf16>) {
  // expected-error @+1 {{result #0 must be ranked tensor of f8E4M3FN type or f8E5M2 type values}}
  %q, %s = nn.quantize %x {tile_shape = array<i64: 1, 128>} : (tensor<32x256xbf16>) -> (tensor<32x256xbf16>, tensor<32x2xf32>)
  return
}

// -----

func.func @quantize_scale_type(%x: tensor<32x256xbf16>) {
  // expected-error @+1 {{result #1 must be ranked tensor of 32-bit float values}}
  %q, %s = nn.quantize %x {tile_shape = array<i64: 1, 128>} : (tensor<32x256xbf16>) -> (tensor<32x256xf8E4M3FN>, tensor<32x2xbf16>)
  return
}

// -----

func.func @dequantize_result_shape(%q: tensor<256x256xf8E4M3FN>, %s: tensor<2x2xf32>) {
  // expected-error @+1 {{expects result to have the shape of input, got 'tensor<256x128xbf16>' for 'tensor<256x256xf8E4M3FN>'}}
  %0 = nn.dequantize %q, %s {tile_shape = array<i64: 128, 128>} : (tensor<256x256xf8E4M3FN>, tensor<2x2xf32>) -> tensor<256x128xbf16>
  return
}

// -----

func.func @dequantize_tile_divides(%q: tensor<200x256xf8E4M3FN>, %s: tensor<2x2xf32>) {
  // expected-error @+1 {{expects tile_shape[0] (128) to divide dimension 0 of input (200)}}
  %0 = nn.dequantize %q, %s {tile_shape = array<i64: 128, 128>} : (tensor<200x256xf8E4M3FN>, tensor<2x2xf32>) -> tensor<200x256xbf16>
  return
}

// -----

func.func @dequantize_scale_shape(%q: tensor<256x256xf8E4M3FN>, %s: tensor<2x1xf32>) {
  // expected-error @+1 {{expects scale to have one entry per tile, shape 2x2 (input shape / tile_shape), got 'tensor<2x1xf32>'}}
  %0 = nn.dequantize %q, %s {tile_shape = array<i64: 128, 128>} : (tensor<256x256xf8E4M3FN>, tensor<2x1xf32>) -> tensor<256x256xbf16>
  return
}

// -----

func.func @dequantize_input_type(%q: tensor<256x256xbf16>, %s: tensor<2x2xf32>) {
  // expected-error @+1 {{operand #0 must be ranked tensor of f8E4M3FN type or f8E5M2 type values}}
  %0 = nn.dequantize %q, %s {tile_shape = array<i64: 128, 128>} : (tensor<256x256xbf16>, tensor<2x2xf32>) -> tensor<256x256xbf16>
  return
}

//===----------------------------------------------------------------------===//
// Layout, precision and data movement
//===----------------------------------------------------------------------===//

// -----

func.func @linear_transposed_weight(%x: tensor<2x64xf32>, %w: tensor<96x64xf32>) {
  // With transpose_weight the weight is [in, out]: dimension 0 must be 64.
  // expected-error @+1 {{expects weight in-features (dimension 0 of 'tensor<96x64xf32>') to equal the last dimension of input (64), got 96}}
  %0 = nn.linear %x, %w {transpose_weight} : (tensor<2x64xf32>, tensor<96x64xf32>) -> tensor<2x64xf32>
  return
}

// -----

func.func @cast_shape(%x: tensor<2x64xf32>) {
  // expected-error @+1 {{expects result to have the shape of input, got 'tensor<64x2xbf16>' for 'tensor<2x64xf32>'}}
  %0 = nn.cast %x : (tensor<2x64xf32>) -> tensor<64x2xbf16>
  return
}

// -----

func.func @split_widths(%x: tensor<2x96xf32>) {
  // expected-error @+1 {{expects dimension 1 of the results to add up to that of input (96), got 64}}
  %a, %b = nn.split %x : (tensor<2x96xf32>) -> (tensor<2x32xf32>, tensor<2x32xf32>)
  return
}

// -----

func.func @split_leading(%x: tensor<2x96xf32>) {
  // expected-error @+1 {{expects result #1 (dimension 0 of 'tensor<3x48xf32>') to equal the matching dimension of input (2), got 3}}
  %a, %b = nn.split %x : (tensor<2x96xf32>) -> (tensor<2x48xf32>, tensor<3x48xf32>)
  return
}

// -----

// Along the first dimension (a packed weight's gradient), the others agree.
func.func @split_first_dim(%x: tensor<96x64xf32>) {
  // expected-error @+1 {{expects result #1 (dimension 1 of 'tensor<32x32xf32>') to equal the matching dimension of input (64), got 32}}
  %a, %b = nn.split %x {dim = 0 : i64} : (tensor<96x64xf32>) -> (tensor<64x64xf32>, tensor<32x32xf32>)
  return
}

// -----

func.func @concat_middle_dim(%a: tensor<2x3x4xf32>, %b: tensor<2x3x4xf32>) {
  // expected-error @+1 {{expects dim to be 0 or the last dimension (2), got 1}}
  %0 = nn.concat %a, %b {dim = 1 : i64} : (tensor<2x3x4xf32>, tensor<2x3x4xf32>) -> tensor<2x6x4xf32>
  return
}

// -----

func.func @concat_dtype(%a: tensor<2x32xf32>, %b: tensor<2x32xbf16>) {
  // expected-error @+1 {{expects input #1 to have the rank and element type of result ('tensor<2x64xf32>'), got 'tensor<2x32xbf16>'}}
  %0 = nn.concat %a, %b : (tensor<2x32xf32>, tensor<2x32xbf16>) -> tensor<2x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// Gradient ops
//===----------------------------------------------------------------------===//

// -----

func.func @embedding_grad_shape(%dy: tensor<2x16x64xbf16>, %ids: tensor<2x8xi32>) {
  // expected-error @+1 {{expects result shape 2x8x64 (ids shape followed by the table's hidden size), got 'tensor<2x16x64xbf16>'}}
  %0 = nn.embedding_grad %dy, %ids : (tensor<2x16x64xbf16>, tensor<2x8xi32>) -> tensor<100x64xbf16>
  return
}

// -----

func.func @linear_weight_grad_shape(%dy: tensor<2x96xf32>, %x: tensor<2x64xf32>) {
  // expected-error @+1 {{expects result shape 96x64 ([out, in]), got 'tensor<64x96xf32>'}}
  %0 = nn.linear_weight_grad %dy, %x : (tensor<2x96xf32>, tensor<2x64xf32>) -> tensor<64x96xf32>
  return
}

// -----

func.func @linear_weight_grad_rows(%dy: tensor<3x96xf32>, %x: tensor<2x64xf32>) {
  // expected-error @+1 {{expects input (dimension 0 of 'tensor<2x64xf32>') to equal the matching dimension of grad (3), got 2}}
  %0 = nn.linear_weight_grad %dy, %x : (tensor<3x96xf32>, tensor<2x64xf32>) -> tensor<96x64xf32>
  return
}

// -----

func.func @linear_weight_grad_narrower_result(%dy: tensor<2x96xf32>, %x: tensor<2x64xf32>) {
  // expected-error @+1 {{expects result to have the element type of grad ('f32') or f32, got 'bf16'}}
  %0 = nn.linear_weight_grad %dy, %x : (tensor<2x96xf32>, tensor<2x64xf32>) -> tensor<96x64xbf16>
  return
}

// -----

func.func @column_sum_narrower_result(%x: tensor<2x96xf32>) {
  // expected-error @+1 {{expects result to have the element type of input ('f32') or f32, got 'bf16'}}
  %0 = nn.column_sum %x : (tensor<2x96xf32>) -> tensor<96xbf16>
  return
}

// -----

func.func @embedding_grad_narrower_result(%dy: tensor<2x8x64xf32>, %ids: tensor<2x8xi32>) {
  // expected-error @+1 {{expects result to have the element type of grad ('f32') or f32, got 'bf16'}}
  %0 = nn.embedding_grad %dy, %ids : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<100x64xbf16>
  return
}

// -----

func.func @column_sum_shape(%x: tensor<2x96xf32>) {
  // expected-error @+1 {{expects result shape 96 (the last dimension of input), got 'tensor<2xf32>'}}
  %0 = nn.column_sum %x : (tensor<2x96xf32>) -> tensor<2xf32>
  return
}

// -----

func.func @rms_norm_grad_types(%dy: tensor<2x64xf32>, %x: tensor<2x64xbf16>, %w: tensor<64xbf16>) {
  // expected-error @+1 {{expects grad and input to have the same type, got 'tensor<2x64xf32>' and 'tensor<2x64xbf16>'}}
  %0 = nn.rms_norm_grad %dy, %x, %w : (tensor<2x64xf32>, tensor<2x64xbf16>, tensor<64xbf16>) -> tensor<2x64xbf16>
  return
}

// -----

func.func @rms_norm_weight_grad_shape(%dy: tensor<2x64xf32>, %x: tensor<2x64xf32>) {
  // expected-error @+1 {{expects result size (dimension 0 of 'tensor<32xf32>') to equal the last dimension of input (64), got 32}}
  %0 = nn.rms_norm_weight_grad %dy, %x : (tensor<2x64xf32>, tensor<2x64xf32>) -> tensor<32xf32>
  return
}

// -----

func.func @layer_norm_grad_result(%dy: tensor<2x64xf32>, %x: tensor<2x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{expects input and result to have the same type, got 'tensor<2x64xf32>' and 'tensor<2x32xf32>'}}
  %0 = nn.layer_norm_grad %dy, %x, %w : (tensor<2x64xf32>, tensor<2x64xf32>, tensor<64xf32>) -> tensor<2x32xf32>
  return
}

// -----

func.func @layer_norm_weight_grad_epsilon(%dy: tensor<2x64xf32>, %x: tensor<2x64xf32>) {
  // expected-error @+1 {{expects epsilon to be positive, got 0}}
  %0 = nn.layer_norm_weight_grad %dy, %x {epsilon = 0.0 : f64} : (tensor<2x64xf32>, tensor<2x64xf32>) -> tensor<64xf32>
  return
}

// -----

func.func @attention_grad_heads(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x48xbf16>) {
  // The gradient checks the forward rules too.
  // expected-error @+1 {{expects num_kv_heads (3) to divide num_heads (8)}}
  %dq, %dk, %dv = nn.attention_grad %q, %q, %k, %k {num_heads = 8 : i64, num_kv_heads = 3 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x48xbf16>, tensor<2x16x48xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x16x48xbf16>, tensor<2x16x48xbf16>)
  return
}

// -----

func.func @attention_grad_result(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x16xbf16>) {
  // expected-error @+1 {{expects key and key_grad to have the same type, got 'tensor<2x16x16xbf16>' and 'tensor<2x16x64xbf16>'}}
  %dq, %dk, %dv = nn.attention_grad %q, %q, %k, %k {num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x16xbf16>)
  return
}

// -----

func.func @swiglu_grad_types(%dy: tensor<2x64xf32>, %g: tensor<2x64xf32>, %u: tensor<2x32xf32>) {
  // expected-error @+1 {{expects gate and up to have the same type, got 'tensor<2x64xf32>' and 'tensor<2x32xf32>'}}
  %a, %b = nn.swiglu_grad %dy, %g, %u : (tensor<2x64xf32>, tensor<2x64xf32>, tensor<2x32xf32>) -> (tensor<2x64xf32>, tensor<2x32xf32>)
  return
}

// -----

func.func @gelu_grad_types(%dy: tensor<2x64xf32>, %x: tensor<2x64xbf16>) {
  // expected-error @+1 {{expects grad and input to have the same type, got 'tensor<2x64xf32>' and 'tensor<2x64xbf16>'}}
  %0 = nn.gelu_grad %dy, %x : (tensor<2x64xf32>, tensor<2x64xbf16>) -> tensor<2x64xbf16>
  return
}

// -----

func.func @cross_entropy_grad_result(%dl: tensor<f32>, %l: tensor<4x256xbf16>, %t: tensor<4xi32>) {
  // expected-error @+1 {{expects logits and result to have the same type, got 'tensor<4x256xbf16>' and 'tensor<4x256xf32>'}}
  %0 = nn.cross_entropy_grad %dl, %l, %t : (tensor<f32>, tensor<4x256xbf16>, tensor<4xi32>) -> tensor<4x256xf32>
  return
}

//===----------------------------------------------------------------------===//
// Optimizer ops
//===----------------------------------------------------------------------===//

// -----

func.func @global_norm_empty() {
  // expected-error @+1 {{expects at least one input}}
  %0 = nn.global_norm : () -> tensor<f32>
  return
}

// -----

// ZeRO-1: 10 x 3 = 30 elements over 4 ranks are shards of 8; the moments
// are a shard's.
func.func @adamw_shard_moments(%p: tensor<10x3xf32>, %m: tensor<7xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects exp_avg to be 'tensor<8xf32>' (this rank's shard of the param), got 'tensor<7xf32>'}}
  %p2, %m2, %v2 = nn.adamw_update %p, %p, %m, %m, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64, shards = 4 : i64}
      : (tensor<10x3xf32>, tensor<10x3xf32>, tensor<7xf32>, tensor<7xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<10x3xf32>, tensor<7xf32>, tensor<7xf32>)
  return
}

// -----

func.func @adamw_zero_shards(%p: tensor<8xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects shards >= 1, got 0}}
  %p2, %m2, %v2 = nn.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64, shards = 0 : i64}
      : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
  return
}

// -----

func.func @adamw_types(%p: tensor<64x64xf32>, %m: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects exp_avg to be 'tensor<64x64xf32>' (the param's type), got 'tensor<64xf32>'}}
  %p2, %m2, %v2 = nn.adamw_update %p, %p, %m, %p, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64x64xf32>, tensor<64x64xf32>, tensor<64xf32>, tensor<64x64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>)
  return
}

// -----

func.func @adamw_beta(%p: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects beta2 in [0, 1), got 1}}
  %p2, %m2, %v2 = nn.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 1.0 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_epsilon(%p: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects epsilon to be positive, got 0}}
  %p2, %m2, %v2 = nn.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 0.0 : f64, weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_decay(%p: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects weight_decay to be non-negative}}
  %p2, %m2, %v2 = nn.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = -0.1 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_clip(%p: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects max_grad_norm to be non-negative (0 disables clipping)}}
  %p2, %m2, %v2 = nn.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64, max_grad_norm = -1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_bf16(%p: tensor<64xbf16>, %s: tensor<f32>) {
  // The optimizer state is FP32.
  // expected-error @+1 {{operand #0 must be ranked tensor of 32-bit float values}}
  %p2, %m2, %v2 = nn.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xbf16>, tensor<64xbf16>, tensor<64xbf16>, tensor<64xbf16>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xbf16>, tensor<64xbf16>, tensor<64xbf16>)
  return
}

// -----

func.func @rope_table_odd(%pos: tensor<2x16xi32>) {
  // expected-error @+1 {{expects an even, positive head_dim (the result's last dimension), got 7}}
  %t = nn.rope_table positions(%pos) : (tensor<2x16xi32>) -> tensor<2x16x7xf32>
  return
}

// -----

func.func @rope_table_positions(%pos: tensor<2x8xi32>) {
  // expected-error @+1 {{expects positions length (dimension 1 of 'tensor<2x8xi32>') to equal the sequence length of the table (16), got 8}}
  %t = nn.rope_table positions(%pos) : (tensor<2x8xi32>) -> tensor<2x16x8xf32>
  return
}

// -----

func.func @rope_table_theta() {
  // expected-error @+1 {{expects theta to be positive, got 0}}
  %t = nn.rope_table {theta = 0.0 : f64} : () -> tensor<2x16x8xf32>
  return
}

// -----

func.func @attention_rope_width(%q: tensor<2x16x64xf32>, %k: tensor<2x16x16xf32>, %t: tensor<2x16x16xf32>) {
  // 8 heads of 8: the table's rows are 8 wide.
  // expected-error @+1 {{expects rope width (dimension 2 of 'tensor<2x16x16xf32>') to equal head_dim (8), got 16}}
  %0 = nn.attention %q, %k, %k rope(%t) {num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @attention_grad_rope_length(%q: tensor<2x16x64xf32>, %k: tensor<2x16x16xf32>, %t: tensor<2x8x8xf32>) {
  // expected-error @+1 {{expects rope length (dimension 1 of 'tensor<2x8x8xf32>') to equal the sequence length of query (16), got 8}}
  %dq, %dk, %dv = nn.attention_grad %q, %q, %k, %k rope(%t) {num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x8x8xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x16xf32>, tensor<2x16x16xf32>)
  return
}
