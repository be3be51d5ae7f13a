// RUN: kiln-opt %s --split-input-file --nn-lower-to-tile --verify-diagnostics | FileCheck %s

// A linear layer is one GEMM over the flattened tokens (m = batch * seq) with
// the bias as its epilogue; its weight gradient contracts over the tokens
// (k = 32); chunk tags carry over.
// CHECK-LABEL: func.func @linear
// CHECK: %[[Y:.+]] = tile.gemm %arg0, %arg1 bias(%arg2) {batch = 1 : i64, k = 64 : i64, kiln.chunk = "F", m = 32 : i64, n = 96 : i64, transpose_b}
// CHECK: %[[DX:.+]] = tile.gemm %arg3, %arg1 {batch = 1 : i64, k = 96 : i64, kiln.chunk = "B", m = 32 : i64, n = 64 : i64}
// CHECK: %[[DW:.+]] = tile.gemm %arg3, %arg0 {batch = 1 : i64, k = 32 : i64, kiln.chunk = "W", m = 96 : i64, n = 64 : i64, transpose_a}
// GPT-2's [in, out] weights: dW = x^T dy.
// CHECK: tile.gemm %arg0, %arg3 {batch = 1 : i64, k = 32 : i64, m = 64 : i64, n = 96 : i64, transpose_a}
func.func @linear(%x: tensor<2x16x64xbf16>, %w: tensor<96x64xbf16>, %b: tensor<96xbf16>, %dy: tensor<2x16x96xbf16>)
    -> (tensor<2x16x96xbf16>, tensor<2x16x64xbf16>, tensor<96x64xbf16>, tensor<64x96xbf16>) {
  %y = nn.linear %x, %w, %b {kiln.chunk = "F"} : (tensor<2x16x64xbf16>, tensor<96x64xbf16>, tensor<96xbf16>) -> tensor<2x16x96xbf16>
  %dx = nn.linear %dy, %w {kiln.chunk = "B", transpose_weight} : (tensor<2x16x96xbf16>, tensor<96x64xbf16>) -> tensor<2x16x64xbf16>
  %dw = nn.linear_weight_grad %dy, %x {kiln.chunk = "W"} : (tensor<2x16x96xbf16>, tensor<2x16x64xbf16>) -> tensor<96x64xbf16>
  %dwt = nn.linear_weight_grad %dy, %x {transpose_weight} : (tensor<2x16x96xbf16>, tensor<2x16x64xbf16>) -> tensor<64x96xbf16>
  return %y, %dx, %dw, %dwt : tensor<2x16x96xbf16>, tensor<2x16x64xbf16>, tensor<96x64xbf16>, tensor<64x96xbf16>
}

// -----

// Batched matmul: the batch dimensions multiply into `batch`.
// CHECK-LABEL: func.func @matmul
// CHECK: tile.gemm %arg0, %arg1 {batch = 6 : i64, k = 16 : i64, m = 8 : i64, n = 32 : i64, transpose_b}
func.func @matmul(%a: tensor<2x3x8x16xf32>, %b: tensor<2x3x32x16xf32>) -> tensor<2x3x8x32xf32> {
  %0 = nn.matmul %a, %b {transpose_rhs} : (tensor<2x3x8x16xf32>, tensor<2x3x32x16xf32>) -> tensor<2x3x8x32xf32>
  return %0 : tensor<2x3x8x32xf32>
}

// -----

// Elementwise and row-wise ops each become a one-op fused region; losses,
// embedding gradients and the optimizer become their kernels.
// CHECK-LABEL: func.func @kernels
// CHECK: %[[N:.+]] = tile.fused %arg0, %arg1 {kiln.chunk = "F"} : (tensor<4x64xf32>, tensor<64xf32>) -> tensor<4x64xf32> {
// CHECK-NEXT: ^bb0(%[[X:.+]]: tensor<4x64xf32>, %[[W:.+]]: tensor<64xf32>):
// CHECK-NEXT: %[[Y:.+]] = nn.rms_norm %[[X]], %[[W]] : (tensor<4x64xf32>, tensor<64xf32>) -> tensor<4x64xf32>
// CHECK-NEXT: tile.yield %[[Y]]
// CHECK: tile.cross_entropy %[[N]], %arg2 {kiln.chunk = "F"}
// CHECK: tile.cross_entropy_grad
// CHECK: tile.embedding_grad
// CHECK: tile.global_norm
// CHECK: tile.adamw
// CHECK-NOT: nn.cross_entropy
func.func @kernels(%x: tensor<4x64xf32>, %g: tensor<64xf32>, %t: tensor<4xi32>, %s: tensor<f32>,
                   %w: tensor<64xf32>, %m0: tensor<64xf32>, %v0: tensor<64xf32>)
    -> (tensor<64xf32>, tensor<10x64xf32>) {
  %n = nn.rms_norm %x, %g {kiln.chunk = "F"} : (tensor<4x64xf32>, tensor<64xf32>) -> tensor<4x64xf32>
  %l = nn.cross_entropy %n, %t {kiln.chunk = "F"} : (tensor<4x64xf32>, tensor<4xi32>) -> tensor<f32>
  %dl = nn.cross_entropy_grad %l, %n, %t : (tensor<f32>, tensor<4x64xf32>, tensor<4xi32>) -> tensor<4x64xf32>
  %de = nn.embedding_grad %dl, %t : (tensor<4x64xf32>, tensor<4xi32>) -> tensor<10x64xf32>
  %norm = nn.global_norm %g : (tensor<64xf32>) -> tensor<f32>
  %p, %m, %v = nn.adamw_update %w, %g, %m0, %v0, %s, %s, %norm {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return %p, %de : tensor<64xf32>, tensor<10x64xf32>
}

// -----

func.func @attention(%q: tensor<1x8x16xf32>) -> tensor<1x8x16xf32> {
  // expected-error @+1 {{'nn.attention' op is lowered by nn-tile-attention, which must run before nn-lower-to-tile}}
  %o = nn.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  return %o : tensor<1x8x16xf32>
}

// -----

// A BF16 embedding gradient accumulates in FP32, then is rounded once.
// CHECK-LABEL: func.func @embedding_grad
// CHECK: %[[G:.+]] = tile.embedding_grad %arg0, %arg1 : (tensor<4x8xbf16>, tensor<4xi32>) -> tensor<16x8xf32>
// CHECK: tile.fused %[[G]] : (tensor<16x8xf32>) -> tensor<16x8xbf16>
// CHECK: nn.cast
func.func @embedding_grad(%dy: tensor<4x8xbf16>, %ids: tensor<4xi32>) -> tensor<16x8xbf16> {
  %0 = nn.embedding_grad %dy, %ids : (tensor<4x8xbf16>, tensor<4xi32>) -> tensor<16x8xbf16>
  return %0 : tensor<16x8xbf16>
}

// -----

func.func @dynamic(%x: tensor<?x64xf32>, %w: tensor<64x64xf32>) -> tensor<?x64xf32> {
  // expected-error @+1 {{nn-lower-to-tile needs static shapes, got 'tensor<?x64xf32>'}}
  %0 = nn.linear %x, %w : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  return %0 : tensor<?x64xf32>
}

// -----

func.func @quantize(%x: tensor<4x128xf32>) -> tensor<4x128xf8E4M3FN> {
  // FP8 quantization has no kernel yet (nn-quantize-fp8 brings it): the
  // conversion fails at the op.
  // expected-error @+1 {{failed to legalize operation 'nn.quantize' that was explicitly marked illegal}}
  %q, %s = nn.quantize %x {tile_shape = array<i64: 1, 128>} : (tensor<4x128xf32>) -> (tensor<4x128xf8E4M3FN>, tensor<4x1xf32>)
  return %q : tensor<4x128xf8E4M3FN>
}
