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
