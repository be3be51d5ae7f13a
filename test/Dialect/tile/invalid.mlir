// RUN: kiln-opt %s --split-input-file --verify-diagnostics

func.func @gemm_geometry(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{expects a to hold batch x m x k = 64 elements, got 32 ('tensor<8x4xf32>')}}
  %0 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 8 : i64} : (tensor<8x4xf32>, tensor<4x8xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @gemm_result(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{expects result to hold batch x m x n = 64 elements, got 32}}
  %0 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64} : (tensor<8x4xf32>, tensor<4x8xf32>) -> tensor<8x4xf32>
  return
}

// -----

func.func @gemm_bias(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>, %bias: tensor<4xf32>) {
  // expected-error @+1 {{expects bias to hold n = 8 elements, got 4}}
  %0 = tile.gemm %a, %b bias(%bias) {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64} : (tensor<8x4xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @gemm_dtypes(%a: tensor<8x4xf32>, %b: tensor<4x8xbf16>) {
  // expected-error @+1 {{expects one element type for all operands, got 'f32' and 'bf16'}}
  %0 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64} : (tensor<8x4xf32>, tensor<4x8xbf16>) -> tensor<8x8xf32>
  return
}

// -----

func.func @gemm_sizes(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{expects positive batch, m, n and k, got 0, 8, 8, 4}}
  %0 = tile.gemm %a, %b {batch = 0 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64} : (tensor<8x4xf32>, tensor<4x8xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @attention_lse(%q: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects lse of shape [batch, num_heads, seq] (2x4x16), got 'tensor<2x16x4xf32>'}}
  %o, %lse = tile.flash_attention_fwd %q, %q, %q {block_q = 16 : i64, block_k = 16 : i64, num_warps = 1 : i64, num_stages = 1 : i64, num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x16x4xf32>)
  return
}

// -----

func.func @attention_heads(%q: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects positive head counts with num_kv_heads dividing num_heads, got 4 and 3}}
  %o, %lse = tile.flash_attention_fwd %q, %q, %q {block_q = 16 : i64, block_k = 16 : i64, num_warps = 1 : i64, num_stages = 1 : i64, num_heads = 4 : i64, num_kv_heads = 3 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x4x16xf32>)
  return
}

// -----

func.func @attention_blocks(%q: tensor<2x16x64xbf16>) {
  // expected-error @+1 {{expects positive block_q, block_k, num_warps and num_stages, got 0, 16, 1 and 1}}
  %o, %lse = tile.flash_attention_fwd %q, %q, %q {block_q = 0 : i64, block_k = 16 : i64, num_warps = 1 : i64, num_stages = 1 : i64, num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x4x16xf32>)
  return
}

// -----

func.func @fused_gemm(%a: tensor<8x4xf32>, %w: tensor<8x4xf32>) {
  %0 = tile.fused %a, %w : (tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<8x8xf32> {
  ^bb0(%x: tensor<8x4xf32>, %y: tensor<8x4xf32>):
    // GEMMs are kernels of their own, never inside a fused region.
    // expected-error @+1 {{'nn.linear' op cannot be fused: a tile.fused region holds only elementwise and row-wise nn ops}}
    %l = nn.linear %x, %y : (tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<8x8xf32>
    tile.yield %l : tensor<8x8xf32>
  }
  return
}

// -----

func.func @fused_arguments(%a: tensor<8x4xf32>) {
  // expected-error @+1 {{expects block argument #0 to have the type of its input, 'tensor<8x4xf32>', got 'tensor<8x4xbf16>'}}
  %0 = tile.fused %a : (tensor<8x4xf32>) -> tensor<8x4xbf16> {
  ^bb0(%x: tensor<8x4xbf16>):
    tile.yield %x : tensor<8x4xbf16>
  }
  return
}

// -----

func.func @fused_yield(%a: tensor<8x4xf32>) {
  // expected-error @+1 {{expects tile.yield to return the result types}}
  %0 = tile.fused %a : (tensor<8x4xf32>) -> tensor<8x4xbf16> {
  ^bb0(%x: tensor<8x4xf32>):
    tile.yield %x : tensor<8x4xf32>
  }
  return
}

// -----

// tile.cross_entropy and tile.cross_entropy_grad share nn.cross_entropy's
// rules on logits and targets.
func.func @cross_entropy_logits_rank(%l: tensor<256xf32>, %t: tensor<i32>) {
  // expected-error @+1 {{expects logits ([..., vocab]) to have rank at least 2, got 'tensor<256xf32>'}}
  %0 = tile.cross_entropy %l, %t : (tensor<256xf32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_targets_rank(%l: tensor<2x16x256xf32>, %t: tensor<32xi32>) {
  // expected-error @+1 {{expects targets to have the leading dimensions of logits (rank 2), got 'tensor<32xi32>'}}
  %0 = tile.cross_entropy %l, %t : (tensor<2x16x256xf32>, tensor<32xi32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_targets_shape(%l: tensor<2x16x256xf32>, %t: tensor<2x8xi32>) {
  // expected-error @+1 {{expects targets (dimension 1 of 'tensor<2x8xi32>') to equal the matching dimension of logits (16), got 8}}
  %0 = tile.cross_entropy %l, %t : (tensor<2x16x256xf32>, tensor<2x8xi32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_grad_targets(%g: tensor<f32>, %l: tensor<32x256xbf16>, %t: tensor<16xi32>) {
  // expected-error @+1 {{expects targets (dimension 0 of 'tensor<16xi32>') to equal the matching dimension of logits (32), got 16}}
  %0 = tile.cross_entropy_grad %g, %l, %t : (tensor<f32>, tensor<32x256xbf16>, tensor<16xi32>) -> tensor<32x256xbf16>
  return
}

// -----

func.func @cross_entropy_grad_result(%g: tensor<f32>, %l: tensor<32x256xbf16>, %t: tensor<32xi32>) {
  // expected-error @+1 {{expects logits and result to have the same type, got 'tensor<32x256xbf16>' and 'tensor<32x256xf32>'}}
  %0 = tile.cross_entropy_grad %g, %l, %t : (tensor<f32>, tensor<32x256xbf16>, tensor<32xi32>) -> tensor<32x256xf32>
  return
}

// -----

// tile.linear_cross_entropy: one rule per case.
func.func @lce_input_rank(%x: tensor<64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<i32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects input ([..., hidden]) to have rank at least 2, got 'tensor<64xbf16>'}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 16 : i64} : (tensor<64xbf16>, tensor<256x64xbf16>, tensor<i32>, tensor<f32>) -> (tensor<f32>, tensor<64xbf16>, tensor<256x64xf32>, tensor<16x256xf32>)
  return
}

// -----

func.func @lce_dtypes(%x: tensor<32x64xf32>, %w: tensor<256x64xbf16>, %t: tensor<32xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects input and weight to have one element type, got 'tensor<32x64xf32>' and 'tensor<256x64xbf16>'}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 16 : i64} : (tensor<32x64xf32>, tensor<256x64xbf16>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xf32>, tensor<256x64xf32>, tensor<16x256xf32>)
  return
}

// -----

func.func @lce_hidden(%x: tensor<32x64xbf16>, %w: tensor<256x32xbf16>, %t: tensor<32xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects weight dimension 1 to be the input's hidden size 64, got 'tensor<256x32xbf16>'}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 16 : i64} : (tensor<32x64xbf16>, tensor<256x32xbf16>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xbf16>, tensor<256x32xf32>, tensor<16x256xf32>)
  return
}

// -----

func.func @lce_targets(%x: tensor<32x64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<16xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects targets to have the leading dimensions of input, got 'tensor<16xi32>' for 'tensor<32x64xbf16>'}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 16 : i64} : (tensor<32x64xbf16>, tensor<256x64xbf16>, tensor<16xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xbf16>, tensor<256x64xf32>, tensor<16x256xf32>)
  return
}

// -----

func.func @lce_input_grad(%x: tensor<32x64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<32xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects input_grad to have the type of input 'tensor<32x64xbf16>', got 'tensor<32x64xf32>'}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 16 : i64} : (tensor<32x64xbf16>, tensor<256x64xbf16>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xf32>, tensor<256x64xf32>, tensor<16x256xf32>)
  return
}

// -----

func.func @lce_weight_grad(%x: tensor<32x64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<32xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects weight_grad to be the FP32 accumulator of weight 'tensor<256x64xbf16>', got 'tensor<64x256xf32>'}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 16 : i64} : (tensor<32x64xbf16>, tensor<256x64xbf16>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xbf16>, tensor<64x256xf32>, tensor<16x256xf32>)
  return
}

// -----

func.func @lce_weight_grad_dtype(%x: tensor<32x64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<32xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects weight_grad to be the FP32 accumulator of weight 'tensor<256x64xbf16>', got 'tensor<256x64xbf16>'}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 16 : i64} : (tensor<32x64xbf16>, tensor<256x64xbf16>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xbf16>, tensor<256x64xbf16>, tensor<16x256xf32>)
  return
}

// -----

func.func @lce_fp32_logits(%x: tensor<32x64xf32>, %w: tensor<256x64xf32>, %t: tensor<32xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects fp32_logits only with bf16 operands, got 'tensor<32x64xf32>'}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 16 : i64, fp32_logits} : (tensor<32x64xf32>, tensor<256x64xf32>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xf32>, tensor<256x64xf32>, tensor<16x256xf32>)
  return
}

// -----

func.func @lce_chunk_positive(%x: tensor<32x64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<32xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects chunk_rows to be positive, got 0}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 0 : i64} : (tensor<32x64xbf16>, tensor<256x64xbf16>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xbf16>, tensor<256x64xf32>, tensor<16x256xf32>)
  return
}

// -----

func.func @lce_chunk_tokens(%x: tensor<32x64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<32xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects chunk_rows to be at most the 32 tokens, got 64}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 64 : i64} : (tensor<32x64xbf16>, tensor<256x64xbf16>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xbf16>, tensor<256x64xf32>, tensor<64x256xf32>)
  return
}

// -----

func.func @lce_scratch(%x: tensor<32x64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<32xi32>, %g: tensor<f32>) {
  // expected-error @+1 {{expects logits_scratch to be [chunk_rows, vocab] = [16, 256], got 'tensor<8x256xf32>'}}
  %0:4 = tile.linear_cross_entropy %x, %w, %t, %g {chunk_rows = 16 : i64} : (tensor<32x64xbf16>, tensor<256x64xbf16>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xbf16>, tensor<256x64xf32>, tensor<8x256xf32>)
  return
}

// -----

func.func @embedding_grad_result_rank(%dy: tensor<32x64xbf16>, %ids: tensor<32xi32>) {
  // expected-error @+1 {{expects result ([vocab, hidden]) to have rank 2, got 'tensor<320x8x8xf32>'}}
  %0 = tile.embedding_grad %dy, %ids : (tensor<32x64xbf16>, tensor<32xi32>) -> tensor<320x8x8xf32>
  return
}

// -----

func.func @embedding_grad_shape(%dy: tensor<2x16x64xbf16>, %ids: tensor<2x8xi32>) {
  // expected-error @+1 {{expects grad of shape 2x8x64 (ids shape followed by the table's hidden size), got 'tensor<2x16x64xbf16>'}}
  %0 = tile.embedding_grad %dy, %ids : (tensor<2x16x64xbf16>, tensor<2x8xi32>) -> tensor<320x64xf32>
  return
}

// -----

func.func @embedding_grad_hidden(%dy: tensor<32x64xbf16>, %ids: tensor<32xi32>) {
  // expected-error @+1 {{expects grad of shape 32x128 (ids shape followed by the table's hidden size), got 'tensor<32x64xbf16>'}}
  %0 = tile.embedding_grad %dy, %ids : (tensor<32x64xbf16>, tensor<32xi32>) -> tensor<320x128xf32>
  return
}

// -----

func.func @global_norm_empty() {
  // expected-error @+1 {{expects at least one input}}
  %0 = tile.global_norm : () -> tensor<f32>
  return
}

// -----

// tile.adamw shares nn.adamw_update's rules on types and hyperparameters.
func.func @adamw_types(%p: tensor<64x64xf32>, %g: tensor<64x64xf32>, %m: tensor<64xf32>, %v: tensor<64x64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects exp_avg to be 'tensor<64x64xf32>' (the param's type), got 'tensor<64xf32>'}}
  %0:3 = tile.adamw %p, %g, %m, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64x64xf32>, tensor<64x64xf32>, tensor<64xf32>, tensor<64x64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>)
  return
}

// -----

func.func @adamw_result_type(%p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xf32>, %v: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects new_exp_avg_sq to be 'tensor<64xf32>' (the param's type), got 'tensor<32xf32>'}}
  %0:3 = tile.adamw %p, %g, %m, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<32xf32>)
  return
}

// -----

func.func @adamw_beta(%p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xf32>, %v: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects beta1 in [0, 1), got -0.5}}
  %0:3 = tile.adamw %p, %g, %m, %v, %s, %s, %s {beta1 = -0.5 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_epsilon(%p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xf32>, %v: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects epsilon to be positive, got 0}}
  %0:3 = tile.adamw %p, %g, %m, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 0.0 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_weight_decay(%p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xf32>, %v: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects weight_decay to be non-negative}}
  %0:3 = tile.adamw %p, %g, %m, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = -0.1 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_max_grad_norm(%p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xf32>, %v: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects max_grad_norm to be non-negative (0 disables clipping)}}
  %0:3 = tile.adamw %p, %g, %m, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = -1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

// In place: a moment that is also the parameter would be overwritten twice.
func.func @adamw_aliased_operands(%p: tensor<64xf32>, %g: tensor<64xf32>, %v: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects param and exp_avg to be different values: the update overwrites params, exp_avgs and exp_avg_sqs in place}}
  %0:3 = tile.adamw %p, %g, %p, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

// In place: reading the old moment after the update would read the new one.
func.func @adamw_use_after(%p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xf32>, %v: tensor<64xf32>, %s: tensor<f32>) -> tensor<f32> {
  // expected-error @+1 {{expects no use of exp_avg_sq after the update, which overwrites it in place}}
  %0:3 = tile.adamw %p, %g, %m, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  // expected-note @+1 {{used here}}
  %n = tile.global_norm %v : (tensor<64xf32>) -> tensor<f32>
  return %n : tensor<f32>
}

// -----

// In place after memory planning: each result in its operand's buffer.
func.func @adamw_offsets(%p: tensor<64xf32> {kiln.offset = 0 : i64}, %g: tensor<64xf32> {kiln.offset = 256 : i64},
                         %m: tensor<64xf32> {kiln.offset = 512 : i64}, %v: tensor<64xf32> {kiln.offset = 768 : i64},
                         %s: tensor<f32> {kiln.offset = 1024 : i64}) {
  // expected-error @+1 {{expects new_exp_avg at the offset of exp_avg (in place), got 1280 and 512}}
  %0:3 = tile.adamw %p, %g, %m, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64, kiln.offsets = array<i64: 0, 1280, 768>}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

// Multi-tensor: four tensors per parameter.
func.func @adamw_multi_count(%p: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects 4 tensors per parameter (params, grads, exp_avgs, exp_avg_sqs), got 5}}
  %0:3 = tile.adamw %p, %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_multi_results(%p0: tensor<64xf32>, %p1: tensor<64xf32>, %g0: tensor<64xf32>, %g1: tensor<64xf32>,
                               %m0: tensor<64xf32>, %m1: tensor<64xf32>, %v0: tensor<64xf32>, %v1: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects 3 results per parameter (6), got 3}}
  %0:3 = tile.adamw %p0, %p1, %g0, %g1, %m0, %m1, %v0, %v1, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

// One parameter's moment that is another's would be overwritten twice.
func.func @adamw_multi_shared_moment(%p0: tensor<64xf32>, %p1: tensor<64xf32>, %g0: tensor<64xf32>, %g1: tensor<64xf32>,
                                     %m0: tensor<64xf32>, %v0: tensor<64xf32>, %v1: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects exp_avg #0 and exp_avg #1 to be different values}}
  %0:6 = tile.adamw %p0, %p1, %g0, %g1, %m0, %m0, %v0, %v1, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>)
      -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

// Each parameter's tensors have its shape.
func.func @adamw_multi_shapes(%p0: tensor<64xf32>, %p1: tensor<32xf32>, %g0: tensor<64xf32>, %g1: tensor<64xf32>,
                              %m0: tensor<64xf32>, %m1: tensor<32xf32>, %v0: tensor<64xf32>, %v1: tensor<32xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects param and grad #1 to have the same type, got 'tensor<32xf32>' and 'tensor<64xf32>'}}
  %0:6 = tile.adamw %p0, %p1, %g0, %g1, %m0, %m1, %v0, %v1, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<32xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<32xf32>, tensor<64xf32>, tensor<32xf32>, tensor<f32>, tensor<f32>, tensor<f32>)
      -> (tensor<64xf32>, tensor<32xf32>, tensor<64xf32>, tensor<32xf32>, tensor<64xf32>, tensor<32xf32>)
  return
}

// -----

// A compute copy is the parameter's BF16 copy.
func.func @adamw_compute_copy_type(%p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xf32>, %v: tensor<64xf32>, %c: tensor<32xbf16>, %s: tensor<f32>) {
  // expected-error @+1 {{expects compute copy to be the parameter's BF16 copy ('tensor<64xbf16>'), got 'tensor<32xbf16>'}}
  %0:4 = tile.adamw %p, %g, %m, %v, %c, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64, compute_copies}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<32xbf16>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<32xbf16>)
  return
}

// -----

// BF16 tensors other than compute copies: the masters and moments are FP32.
func.func @adamw_bf16_moment(%p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xbf16>, %v: tensor<64xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expects f32 tensors, got 'tensor<64xbf16>'}}
  %0:3 = tile.adamw %p, %g, %m, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xbf16>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xbf16>, tensor<64xf32>)
  return
}

// -----

func.func @view_middle_dim(%x: tensor<2x16x64xf32>) {
  // expected-error @+1 {{expects dim to be the first or the last dimension of 'tensor<2x16x64xf32>', got 1}}
  %0 = tile.view %x {dim = 1 : i64, start = 0 : i64} : (tensor<2x16x64xf32>) -> tensor<2x8x64xf32>
  return
}

// -----

func.func @view_out_of_range(%x: tensor<16x64xf32>) {
  // expected-error @+1 {{expects [start, start + 32) within the 64 of dimension 1, got start 48}}
  %0 = tile.view %x {dim = 1 : i64, start = 48 : i64} : (tensor<16x64xf32>) -> tensor<16x32xf32>
  return
}

// -----

func.func @view_reshapes(%x: tensor<16x64xf32>) {
  // expected-error @+1 {{expects the result to keep dimension 0 of the source (16), got 8}}
  %0 = tile.view %x {dim = 1 : i64, start = 0 : i64} : (tensor<16x64xf32>) -> tensor<8x32xf32>
  return
}

// -----

func.func @concat_sizes(%a: tensor<16x32xf32>, %b: tensor<16x32xf32>) {
  // expected-error @+1 {{expects the inputs' dimension 0 to add up to the result's 48, got 32}}
  %0 = tile.concat %a, %b {dim = 0 : i64} : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<48x32xf32>
  return
}

// -----

// Arguments sit side by side only along the first dimension: a row-strided
// argument would need the runtime to lay out what it loads.
func.func @concat_arguments_last_dim(%a: tensor<16x32xf32>, %b: tensor<16x32xf32>) {
  // expected-error @+1 {{places block arguments side by side only along the first dimension, got dim 1}}
  %0 = tile.concat %a, %b {dim = 1 : i64} : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @concat_twice(%a: tensor<16x32xf32>, %b: tensor<16x32xf32>) {
  // expected-error @+1 {{input #0 is also an input of another tile.concat}}
  %0 = tile.concat %a, %b {dim = 0 : i64} : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<32x32xf32>
  %1 = tile.concat %a {dim = 0 : i64} : (tensor<16x32xf32>) -> tensor<16x32xf32>
  return
}

// -----

func.func @concat_view(%x: tensor<16x64xf32>, %b: tensor<16x32xf32>) {
  %v = tile.view %x {dim = 1 : i64, start = 0 : i64} : (tensor<16x64xf32>) -> tensor<16x32xf32>
  %c = tile.fused %b : (tensor<16x32xf32>) -> tensor<16x32xf32> {
  ^bb0(%i: tensor<16x32xf32>):
    %y = nn.add %i, %i : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x32xf32>
    tile.yield %y : tensor<16x32xf32>
  }
  // expected-error @+1 {{input #0 is a tile.view, which lives in its source's buffer}}
  %0 = tile.concat %v, %c {dim = 1 : i64} : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @gemm_unknown_epilogue(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{unknown epilogue 'relu' (none, gelu_tanh, dgelu_tanh, bgrad_a, bgrad_b)}}
  %0 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64, epilogue = "relu"} : (tensor<8x4xf32>, tensor<4x8xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @gemm_dgelu_without_aux(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{with the dgelu_tanh epilogue needs aux, the pre-activation}}
  %0 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64, epilogue = "dgelu_tanh"} : (tensor<8x4xf32>, tensor<4x8xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @gemm_aux_without_dgelu(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>, %p: tensor<8x8xf32>) {
  // expected-error @+1 {{has an aux operand, which only the dgelu_tanh epilogue reads}}
  %0 = tile.gemm %a, %b aux(%p) {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64} : (tensor<8x4xf32>, tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @gemm_extra_result(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{has 1 results after the first; the none epilogue writes none}}
  %0, %1 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64} : (tensor<8x4xf32>, tensor<4x8xf32>) -> (tensor<8x8xf32>, tensor<8x8xf32>)
  return
}

// -----

func.func @gemm_bgrad_a_layout(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{with bgrad_a expects transpose_a (A stored [k, m])}}
  %0, %1 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64, epilogue = "bgrad_a"} : (tensor<8x4xf32>, tensor<4x8xf32>) -> (tensor<8x8xf32>, tensor<8xf32>)
  return
}

// -----

func.func @gemm_bgrad_size(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{expects bias_grad to hold m = 8 elements, got 4}}
  %0, %1 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64, transpose_a, epilogue = "bgrad_a"} : (tensor<4x8xf32>, tensor<4x8xf32>) -> (tensor<8x8xf32>, tensor<4xf32>)
  return
}

// -----

func.func @gemm_bgrad_dtype(%a: tensor<4x8xbf16>, %b: tensor<4x8xbf16>) {
  // expected-error @+1 {{expects bias_grad in the result's element type 'f32', got 'tensor<8xbf16>'}}
  %0, %1 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64, transpose_a, epilogue = "bgrad_a"} : (tensor<4x8xbf16>, tensor<4x8xbf16>) -> (tensor<8x8xf32>, tensor<8xbf16>)
  return
}

// -----

func.func @gemm_pre_activation_type(%a: tensor<8x4xf32>, %b: tensor<4x8xf32>) {
  // expected-error @+1 {{expects pre_activation of the result's type 'tensor<8x8xf32>', got 'tensor<64xf32>'}}
  %0, %1 = tile.gemm %a, %b {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 4 : i64, epilogue = "gelu_tanh"} : (tensor<8x4xf32>, tensor<4x8xf32>) -> (tensor<8x8xf32>, tensor<64xf32>)
  return
}

// -----

func.func @rope_table_rank() {
  // expected-error @+1 {{expects result ([batch, seq, head_dim]) to have rank 3, got 'tensor<16x8xf32>'}}
  %t = tile.rope_table : () -> tensor<16x8xf32>
  return
}

// -----

func.func @attention_rope_batch(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x32xbf16>, %t: tensor<1x16x16xf32>) {
  // expected-error @+1 {{expects rope batch (dimension 0 of 'tensor<1x16x16xf32>') to equal the batch size of query (2), got 1}}
  %o, %lse = tile.flash_attention_fwd %q, %k, %k rope(%t) {block_q = 16 : i64, block_k = 16 : i64, num_warps = 4 : i64, num_stages = 2 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>, tensor<1x16x16xf32>) -> (tensor<2x16x64xbf16>, tensor<2x4x16xf32>)
  return
}
