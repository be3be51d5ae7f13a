// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s

// Every tile op round-trips in its custom and generic forms.

// CHECK-LABEL: func.func @gemm
func.func @gemm(%x: tensor<2x16x64xbf16>, %w: tensor<96x64xbf16>, %b: tensor<96xbf16>,
                %a: tensor<4x8x16xf32>, %c: tensor<4x16x32xf32>) -> (tensor<2x16x96xbf16>, tensor<4x8x32xf32>) {
  // CHECK: tile.gemm %{{.*}}, %{{.*}} bias(%{{.*}}) {batch = 1 : i64, k = 64 : i64, m = 32 : i64, n = 96 : i64, transpose_b} : (tensor<2x16x64xbf16>, tensor<96x64xbf16>, tensor<96xbf16>) -> tensor<2x16x96xbf16>
  %0 = tile.gemm %x, %w bias(%b) {batch = 1 : i64, m = 32 : i64, n = 96 : i64, k = 64 : i64, transpose_b} : (tensor<2x16x64xbf16>, tensor<96x64xbf16>, tensor<96xbf16>) -> tensor<2x16x96xbf16>
  // CHECK: tile.gemm %{{.*}}, %{{.*}} {batch = 4 : i64, k = 16 : i64, m = 8 : i64, n = 32 : i64} : (tensor<4x8x16xf32>, tensor<4x16x32xf32>) -> tensor<4x8x32xf32>
  %1 = tile.gemm %a, %c {batch = 4 : i64, m = 8 : i64, n = 32 : i64, k = 16 : i64} : (tensor<4x8x16xf32>, tensor<4x16x32xf32>) -> tensor<4x8x32xf32>
  return %0, %1 : tensor<2x16x96xbf16>, tensor<4x8x32xf32>
}

// CHECK-LABEL: func.func @attention
func.func @attention(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x32xbf16>, %cu: tensor<3xi32>) {
  // CHECK: %[[O:.+]], %[[LSE:.+]] = tile.flash_attention_fwd %{{.*}}, %{{.*}}, %{{.*}} {block_k = 16 : i64, block_q = 16 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64, num_stages = 2 : i64, num_warps = 4 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x4x16xf32>)
  %o, %lse = tile.flash_attention_fwd %q, %k, %k {block_q = 16 : i64, block_k = 16 : i64, num_warps = 4 : i64, num_stages = 2 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x4x16xf32>)
  // CHECK: tile.flash_attention_bwd %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[O]], %[[LSE]] cu_seqlens(%{{.*}}) {block_k = 32 : i64, block_q = 16 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64, num_stages = 1 : i64, num_warps = 1 : i64}
  %dq, %dk, %dv = tile.flash_attention_bwd %o, %q, %k, %k, %o, %lse cu_seqlens(%cu) {block_q = 16 : i64, block_k = 32 : i64, num_warps = 1 : i64, num_stages = 1 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64}
      : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>, tensor<2x16x64xbf16>, tensor<2x4x16xf32>, tensor<3xi32>)
      -> (tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>)
  return
}

// CHECK-LABEL: func.func @attention_rope
func.func @attention_rope(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x32xbf16>, %pos: tensor<2x16xi32>) {
  // CHECK: %[[T:.+]] = tile.rope_table positions(%{{.*}}) {theta = 5.000000e+05 : f64} : (tensor<2x16xi32>) -> tensor<2x16x16xf32>
  %t = tile.rope_table positions(%pos) {theta = 5.0e5 : f64} : (tensor<2x16xi32>) -> tensor<2x16x16xf32>
  // CHECK: %[[O:.+]], %[[LSE:.+]] = tile.flash_attention_fwd %{{.*}}, %{{.*}}, %{{.*}} rope(%[[T]]) {block_k = 16 : i64
  %o, %lse = tile.flash_attention_fwd %q, %k, %k rope(%t) {block_q = 16 : i64, block_k = 16 : i64, num_warps = 4 : i64, num_stages = 2 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>, tensor<2x16x16xf32>) -> (tensor<2x16x64xbf16>, tensor<2x4x16xf32>)
  // CHECK: tile.flash_attention_bwd %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[O]], %[[LSE]] rope(%[[T]]) {block_k = 32 : i64
  %dq, %dk, %dv = tile.flash_attention_bwd %o, %q, %k, %k, %o, %lse rope(%t) {block_q = 16 : i64, block_k = 32 : i64, num_warps = 1 : i64, num_stages = 1 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64}
      : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>, tensor<2x16x64xbf16>, tensor<2x4x16xf32>, tensor<2x16x16xf32>)
      -> (tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>)
  return
}

// CHECK-LABEL: func.func @loss_and_optimizer
func.func @loss_and_optimizer(%l: tensor<32x256xbf16>, %t: tensor<32xi32>, %dy: tensor<32x64xbf16>,
                              %p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xf32>,
                              %v: tensor<64xf32>, %s: tensor<f32>) {
  // CHECK: %[[LOSS:.+]] = tile.cross_entropy %{{.*}}, %{{.*}} : (tensor<32x256xbf16>, tensor<32xi32>) -> tensor<f32>
  %loss = tile.cross_entropy %l, %t : (tensor<32x256xbf16>, tensor<32xi32>) -> tensor<f32>
  // CHECK: tile.cross_entropy_grad %[[LOSS]], %{{.*}}, %{{.*}} {ignore_index = 0 : i64}
  %dl = tile.cross_entropy_grad %loss, %l, %t {ignore_index = 0 : i64} : (tensor<f32>, tensor<32x256xbf16>, tensor<32xi32>) -> tensor<32x256xbf16>
  // CHECK: tile.embedding_grad %{{.*}}, %{{.*}} : (tensor<32x64xbf16>, tensor<32xi32>) -> tensor<320x64xbf16>
  %de = tile.embedding_grad %dy, %t : (tensor<32x64xbf16>, tensor<32xi32>) -> tensor<320x64xbf16>
  // CHECK: %[[N:.+]] = tile.global_norm %{{.*}}, %{{.*}} : (tensor<64xf32>, tensor<64xf32>) -> tensor<f32>
  %n = tile.global_norm %g, %g : (tensor<64xf32>, tensor<64xf32>) -> tensor<f32>
  // CHECK: tile.adamw {{.*}}, %[[N]] {beta1 = 9.000000e-01 : f64
  %p2, %m2, %v2 = tile.adamw %p, %g, %m, %v, %s, %s, %n {beta1 = 0.9 : f64, beta2 = 0.5 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// The LM head and its loss over chunks of 16 tokens: BF16 operands, an FP32
// weight gradient, the [chunk, vocab] FP32 scratch.
// CHECK-LABEL: func.func @linear_cross_entropy
func.func @linear_cross_entropy(%x: tensor<2x16x64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<2x16xi32>, %one: tensor<f32>) {
  // CHECK: %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} = tile.linear_cross_entropy %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {chunk_rows = 16 : i64, ignore_index = 0 : i64} : (tensor<2x16x64xbf16>, tensor<256x64xbf16>, tensor<2x16xi32>, tensor<f32>) -> (tensor<f32>, tensor<2x16x64xbf16>, tensor<256x64xf32>, tensor<16x256xf32>)
  %loss, %dx, %dw, %scratch = tile.linear_cross_entropy %x, %w, %t, %one {chunk_rows = 16 : i64, ignore_index = 0 : i64}
      : (tensor<2x16x64xbf16>, tensor<256x64xbf16>, tensor<2x16xi32>, tensor<f32>)
      -> (tensor<f32>, tensor<2x16x64xbf16>, tensor<256x64xf32>, tensor<16x256xf32>)
  return
}

// Multi-tensor: N params, N grads, N first and N second moments, then the
// scalars; N new params, then the moments.
// CHECK-LABEL: func.func @adamw_multi
// CHECK: tile.adamw %arg0, %arg1, %arg2, %arg3, %arg4, %arg5, %arg6, %arg7, %arg8, %arg8, %arg8 {{.*}} -> (tensor<64xf32>, tensor<8x4xf32>, tensor<64xf32>, tensor<8x4xf32>, tensor<64xf32>, tensor<8x4xf32>)
func.func @adamw_multi(%p0: tensor<64xf32>, %p1: tensor<8x4xf32>, %g0: tensor<64xf32>, %g1: tensor<8x4xf32>,
                       %m0: tensor<64xf32>, %m1: tensor<8x4xf32>, %v0: tensor<64xf32>, %v1: tensor<8x4xf32>, %s: tensor<f32>) {
  %r:6 = tile.adamw %p0, %p1, %g0, %g1, %m0, %m1, %v0, %v1, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<8x4xf32>, tensor<64xf32>, tensor<8x4xf32>, tensor<64xf32>, tensor<8x4xf32>, tensor<64xf32>, tensor<8x4xf32>, tensor<f32>, tensor<f32>, tensor<f32>)
      -> (tensor<64xf32>, tensor<8x4xf32>, tensor<64xf32>, tensor<8x4xf32>, tensor<64xf32>, tensor<8x4xf32>)
  return
}

// CHECK-LABEL: func.func @fused
func.func @fused(%h: tensor<2x16x64xbf16>, %r: tensor<2x16x64xbf16>, %g: tensor<64xbf16>) -> tensor<2x16x64xbf16> {
  // A residual add and an RMSNorm as one kernel.
  // CHECK: tile.fused %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16> {
  // CHECK-NEXT: ^bb0(%[[X:.+]]: tensor<2x16x64xbf16>, %[[Y:.+]]: tensor<2x16x64xbf16>, %[[W:.+]]: tensor<64xbf16>):
  // CHECK-NEXT: %[[S:.+]] = nn.add %[[X]], %[[Y]]
  // CHECK-NEXT: %[[N:.+]] = nn.rms_norm %[[S]], %[[W]]
  // CHECK-NEXT: tile.yield %[[N]] : tensor<2x16x64xbf16>
  %0 = tile.fused %h, %r, %g : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16> {
  ^bb0(%x: tensor<2x16x64xbf16>, %y: tensor<2x16x64xbf16>, %w: tensor<64xbf16>):
    %s = nn.add %x, %y : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
    %n = nn.rms_norm %s, %w : (tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
    tile.yield %n : tensor<2x16x64xbf16>
  }
  return %0 : tensor<2x16x64xbf16>
}

// Views and in-place concatenations (tile-fold-views): along the last
// dimension (row-strided) and the first (contiguous; side-by-side
// arguments).
// CHECK-LABEL: func.func @views
// CHECK: tile.view %{{.*}} {dim = 2 : i64, start = 64 : i64} : (tensor<2x16x192xf32>) -> tensor<2x16x64xf32>
// CHECK: tile.view %{{.*}} {dim = 0 : i64, start = 1 : i64} : (tensor<2x16x192xf32>) -> tensor<1x16x192xf32>
// CHECK: tile.concat %{{.*}}, %{{.*}} {dim = 1 : i64} : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x64xf32>
// CHECK: tile.concat %{{.*}}, %{{.*}} {dim = 0 : i64} : (tensor<96x64xbf16>, tensor<32x64xbf16>) -> tensor<128x64xbf16>
func.func @views(%qkv: tensor<2x16x192xf32>, %a: tensor<16x32xf32>, %wq: tensor<96x64xbf16>, %wk: tensor<32x64xbf16>) -> (tensor<2x16x64xf32>, tensor<1x16x192xf32>, tensor<16x64xf32>, tensor<128x64xbf16>) {
  %k = tile.view %qkv {dim = 2 : i64, start = 64 : i64} : (tensor<2x16x192xf32>) -> tensor<2x16x64xf32>
  %b1 = tile.view %qkv {dim = 0 : i64, start = 1 : i64} : (tensor<2x16x192xf32>) -> tensor<1x16x192xf32>
  %x = tile.fused %a : (tensor<16x32xf32>) -> tensor<16x32xf32> {
  ^bb0(%i: tensor<16x32xf32>):
    %y = nn.add %i, %i : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x32xf32>
    tile.yield %y : tensor<16x32xf32>
  }
  %y = tile.fused %a : (tensor<16x32xf32>) -> tensor<16x32xf32> {
  ^bb0(%i: tensor<16x32xf32>):
    %z = nn.mul %i, %i : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x32xf32>
    tile.yield %z : tensor<16x32xf32>
  }
  %xy = tile.concat %x, %y {dim = 1 : i64} : (tensor<16x32xf32>, tensor<16x32xf32>) -> tensor<16x64xf32>
  %w = tile.concat %wq, %wk {dim = 0 : i64} : (tensor<96x64xbf16>, tensor<32x64xbf16>) -> tensor<128x64xbf16>
  return %k, %b1, %xy, %w : tensor<2x16x64xf32>, tensor<1x16x192xf32>, tensor<16x64xf32>, tensor<128x64xbf16>
}

// -----

// The epilogues: GELU with its pre-activation, its gradient, a bias
// gradient.
// CHECK-LABEL: func.func @gemm_epilogues
func.func @gemm_epilogues(%x: tensor<2x8x32xf32>, %w: tensor<64x32xf32>, %b: tensor<64xf32>,
                          %dy: tensor<2x8x64xf32>, %w2: tensor<64x32xf32>) -> (tensor<2x8x64xf32>, tensor<2x8x64xf32>, tensor<64x32xf32>, tensor<64xf32>) {
  // CHECK: tile.gemm %{{.*}}, %{{.*}} bias(%{{.*}}) {batch = 1 : i64, epilogue = "gelu_tanh", k = 32 : i64, m = 16 : i64, n = 64 : i64, transpose_b} : (tensor<2x8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> (tensor<2x8x64xf32>, tensor<2x8x64xf32>)
  %a, %pre = tile.gemm %x, %w bias(%b) {batch = 1 : i64, m = 16 : i64, n = 64 : i64, k = 32 : i64, transpose_b, epilogue = "gelu_tanh"} : (tensor<2x8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> (tensor<2x8x64xf32>, tensor<2x8x64xf32>)
  // CHECK: tile.gemm %{{.*}}, %{{.*}} aux(%{{.*}}) {batch = 1 : i64, epilogue = "dgelu_tanh", k = 32 : i64, m = 16 : i64, n = 64 : i64, transpose_b} : (tensor<2x8x32xf32>, tensor<64x32xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %d = tile.gemm %x, %w aux(%pre) {batch = 1 : i64, m = 16 : i64, n = 64 : i64, k = 32 : i64, transpose_b, epilogue = "dgelu_tanh"} : (tensor<2x8x32xf32>, tensor<64x32xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  // CHECK: tile.gemm %{{.*}}, %{{.*}} {batch = 1 : i64, epilogue = "bgrad_a", k = 16 : i64, m = 64 : i64, n = 32 : i64, transpose_a} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>) -> (tensor<64x32xf32>, tensor<64xf32>)
  %dw, %db = tile.gemm %dy, %x {batch = 1 : i64, m = 64 : i64, n = 32 : i64, k = 16 : i64, transpose_a, epilogue = "bgrad_a"} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>) -> (tensor<64x32xf32>, tensor<64xf32>)
  return %a, %d, %dw, %db : tensor<2x8x64xf32>, tensor<2x8x64xf32>, tensor<64x32xf32>, tensor<64xf32>
}
