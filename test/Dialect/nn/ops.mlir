// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s

// Every nn op in its custom form survives print -> parse -> print, in both the
// custom and the generic form.

// CHECK-LABEL: func.func @embedding
func.func @embedding(%table: tensor<32000x64xbf16>, %ids: tensor<2x16xi32>,
                     %ids64: tensor<?xi64>) -> (tensor<2x16x64xbf16>, tensor<?x64xbf16>) {
  // CHECK: nn.embedding %{{.*}}, %{{.*}} : (tensor<32000x64xbf16>, tensor<2x16xi32>) -> tensor<2x16x64xbf16>
  %0 = nn.embedding %table, %ids : (tensor<32000x64xbf16>, tensor<2x16xi32>) -> tensor<2x16x64xbf16>
  // CHECK: nn.embedding %{{.*}}, %{{.*}} : (tensor<32000x64xbf16>, tensor<?xi64>) -> tensor<?x64xbf16>
  %1 = nn.embedding %table, %ids64 : (tensor<32000x64xbf16>, tensor<?xi64>) -> tensor<?x64xbf16>
  return %0, %1 : tensor<2x16x64xbf16>, tensor<?x64xbf16>
}

// CHECK-LABEL: func.func @linear
func.func @linear(%x: tensor<2x16x64xbf16>, %w: tensor<96x64xbf16>, %b: tensor<96xbf16>,
                  %xf: tensor<?x64xf32>, %wf: tensor<96x64xf32>)
    -> (tensor<2x16x96xbf16>, tensor<2x16x96xbf16>, tensor<?x96xf32>) {
  // CHECK: nn.linear %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<96x64xbf16>) -> tensor<2x16x96xbf16>
  %0 = nn.linear %x, %w : (tensor<2x16x64xbf16>, tensor<96x64xbf16>) -> tensor<2x16x96xbf16>
  // CHECK: nn.linear %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<96x64xbf16>, tensor<96xbf16>) -> tensor<2x16x96xbf16>
  %1 = nn.linear %x, %w, %b : (tensor<2x16x64xbf16>, tensor<96x64xbf16>, tensor<96xbf16>) -> tensor<2x16x96xbf16>
  // CHECK: nn.linear %{{.*}}, %{{.*}} : (tensor<?x64xf32>, tensor<96x64xf32>) -> tensor<?x96xf32>
  %2 = nn.linear %xf, %wf : (tensor<?x64xf32>, tensor<96x64xf32>) -> tensor<?x96xf32>
  return %0, %1, %2 : tensor<2x16x96xbf16>, tensor<2x16x96xbf16>, tensor<?x96xf32>
}

// CHECK-LABEL: func.func @matmul
func.func @matmul(%a: tensor<4x8x16xf32>, %b: tensor<4x16x32xf32>, %bt: tensor<4x32x16xf32>,
                  %at: tensor<4x16x8xf32>)
    -> (tensor<4x8x32xf32>, tensor<4x8x32xf32>, tensor<4x8x32xf32>) {
  // CHECK: nn.matmul %{{.*}}, %{{.*}} : (tensor<4x8x16xf32>, tensor<4x16x32xf32>) -> tensor<4x8x32xf32>
  %0 = nn.matmul %a, %b : (tensor<4x8x16xf32>, tensor<4x16x32xf32>) -> tensor<4x8x32xf32>
  // CHECK: nn.matmul %{{.*}}, %{{.*}} {transpose_rhs} : (tensor<4x8x16xf32>, tensor<4x32x16xf32>) -> tensor<4x8x32xf32>
  %1 = nn.matmul %a, %bt {transpose_rhs} : (tensor<4x8x16xf32>, tensor<4x32x16xf32>) -> tensor<4x8x32xf32>
  // CHECK: nn.matmul %{{.*}}, %{{.*}} {transpose_lhs, transpose_rhs} : (tensor<4x16x8xf32>, tensor<4x32x16xf32>) -> tensor<4x8x32xf32>
  %2 = nn.matmul %at, %bt {transpose_lhs, transpose_rhs} : (tensor<4x16x8xf32>, tensor<4x32x16xf32>) -> tensor<4x8x32xf32>
  return %0, %1, %2 : tensor<4x8x32xf32>, tensor<4x8x32xf32>, tensor<4x8x32xf32>
}

// CHECK-LABEL: func.func @norms
func.func @norms(%x: tensor<2x16x64xbf16>, %g: tensor<64xbf16>, %b: tensor<64xbf16>)
    -> (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) {
  // The default epsilon is not printed.
  // CHECK: nn.rms_norm %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  %0 = nn.rms_norm %x, %g : (tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.rms_norm %{{.*}}, %{{.*}} {epsilon = 1.000000e-05 : f64}
  %1 = nn.rms_norm %x, %g {epsilon = 1.0e-5 : f64} : (tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.layer_norm %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  %2 = nn.layer_norm %x, %g, %b : (tensor<2x16x64xbf16>, tensor<64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.layer_norm %{{.*}}, %{{.*}} {epsilon = 1.000000e-03 : f64} : (tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  %3 = nn.layer_norm %x, %g {epsilon = 1.0e-3 : f64} : (tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  return %0, %1, %2, %3 : tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>
}

// CHECK-LABEL: func.func @rope
func.func @rope(%q: tensor<2x16x64xbf16>, %pos: tensor<2x16xi32>)
    -> (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) {
  // CHECK: nn.rope %{{.*}} {num_heads = 4 : i64} : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  %0 = nn.rope %q {num_heads = 4 : i64} : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.rope %{{.*}} positions(%{{.*}}) {num_heads = 2 : i64, theta = 5.000000e+05 : f64} : (tensor<2x16x64xbf16>, tensor<2x16xi32>) -> tensor<2x16x64xbf16>
  %1 = nn.rope %q positions(%pos) {num_heads = 2 : i64, theta = 500000.0 : f64} : (tensor<2x16x64xbf16>, tensor<2x16xi32>) -> tensor<2x16x64xbf16>
  return %0, %1 : tensor<2x16x64xbf16>, tensor<2x16x64xbf16>
}

// CHECK-LABEL: func.func @attention
func.func @attention(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x16xbf16>, %v: tensor<2x16x16xbf16>,
                     %cu: tensor<4xi32>, %qf: tensor<1x?x32xf32>)
    -> (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<1x?x32xf32>) {
  // GQA: 8 query heads of dimension 8 share 2 key/value heads.
  // CHECK: nn.attention %{{.*}}, %{{.*}}, %{{.*}} {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>) -> tensor<2x16x64xbf16>
  %0 = nn.attention %q, %k, %v {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>) -> tensor<2x16x64xbf16>
  // Packed sequences with an explicit scale.
  // CHECK: nn.attention %{{.*}}, %{{.*}}, %{{.*}} cu_seqlens(%{{.*}}) {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64, scale = 1.250000e-01 : f64} : (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>, tensor<4xi32>) -> tensor<2x16x64xbf16>
  %1 = nn.attention %q, %k, %v cu_seqlens(%cu) {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64, scale = 0.125 : f64} : (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>, tensor<4xi32>) -> tensor<2x16x64xbf16>
  // Multi-head, non-causal, dynamic sequence length.
  // CHECK: nn.attention %{{.*}}, %{{.*}}, %{{.*}} {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<1x?x32xf32>, tensor<1x?x32xf32>, tensor<1x?x32xf32>) -> tensor<1x?x32xf32>
  %2 = nn.attention %qf, %qf, %qf {num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<1x?x32xf32>, tensor<1x?x32xf32>, tensor<1x?x32xf32>) -> tensor<1x?x32xf32>
  return %0, %1, %2 : tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<1x?x32xf32>
}

// CHECK-LABEL: func.func @rope_in_attention
func.func @rope_in_attention(%q: tensor<2x16x64xbf16>, %k: tensor<2x16x16xbf16>, %cu: tensor<4xi32>, %pos: tensor<2x16xi32>)
    -> (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) {
  // The table of the rotation's factors, with and without positions.
  // CHECK: %[[T:.+]] = nn.rope_table {theta = 5.000000e+05 : f64} : () -> tensor<2x16x8xf32>
  %t = nn.rope_table {theta = 5.0e5 : f64} : () -> tensor<2x16x8xf32>
  // CHECK: nn.rope_table positions(%{{.*}}) : (tensor<2x16xi32>) -> tensor<2x16x8xf32>
  %tp = nn.rope_table positions(%pos) : (tensor<2x16xi32>) -> tensor<2x16x8xf32>
  // CHECK: nn.attention %{{.*}}, %{{.*}}, %{{.*}} cu_seqlens(%{{.*}}) rope(%[[T]]) {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>, tensor<4xi32>, tensor<2x16x8xf32>) -> tensor<2x16x64xbf16>
  %0 = nn.attention %q, %k, %k cu_seqlens(%cu) rope(%t) {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>, tensor<4xi32>, tensor<2x16x8xf32>) -> tensor<2x16x64xbf16>
  // CHECK: nn.attention_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} rope(%{{.*}}) {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64}
  %dq, %dk, %dv = nn.attention_grad %0, %q, %k, %k rope(%tp) {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>, tensor<2x16x8xf32>) -> (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>)
  return %0, %dq : tensor<2x16x64xbf16>, tensor<2x16x64xbf16>
}

// CHECK-LABEL: func.func @elementwise
func.func @elementwise(%a: tensor<2x16x64xbf16>, %b: tensor<2x16x64xbf16>)
    -> (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) {
  // CHECK: nn.swiglu %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  %0 = nn.swiglu %a, %b : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.gelu %{{.*}} : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  %1 = nn.gelu %a : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.gelu %{{.*}} approximate = tanh : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  %2 = nn.gelu %a approximate = tanh : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.add %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  %3 = nn.add %a, %b : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.mul %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  %4 = nn.mul %a, %b : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  return %0, %1, %2, %3, %4 : tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>
}

// CHECK-LABEL: func.func @cross_entropy
func.func @cross_entropy(%logits: tensor<2x16x256xf32>, %t: tensor<2x16xi32>,
                         %flat: tensor<32x256xbf16>, %t64: tensor<32xi64>) -> (tensor<f32>, tensor<f32>) {
  // CHECK: nn.cross_entropy %{{.*}}, %{{.*}} : (tensor<2x16x256xf32>, tensor<2x16xi32>) -> tensor<f32>
  %0 = nn.cross_entropy %logits, %t : (tensor<2x16x256xf32>, tensor<2x16xi32>) -> tensor<f32>
  // CHECK: nn.cross_entropy %{{.*}}, %{{.*}} {ignore_index = 0 : i64} : (tensor<32x256xbf16>, tensor<32xi64>) -> tensor<f32>
  %1 = nn.cross_entropy %flat, %t64 {ignore_index = 0 : i64} : (tensor<32x256xbf16>, tensor<32xi64>) -> tensor<f32>
  return %0, %1 : tensor<f32>, tensor<f32>
}

// CHECK-LABEL: func.func @fp8
func.func @fp8(%x: tensor<32x256xbf16>, %w: tensor<256x256xf32>)
    -> (tensor<32x256xbf16>, tensor<256x256xf32>) {
  // Activations: 1x128 tiles, E4M3.
  // CHECK: %[[Q:.+]], %[[S:.+]] = nn.quantize %{{.*}} {tile_shape = array<i64: 1, 128>} : (tensor<32x256xbf16>) -> (tensor<32x256xf8E4M3FN>, tensor<32x2xf32>)
  %q, %s = nn.quantize %x {tile_shape = array<i64: 1, 128>} : (tensor<32x256xbf16>) -> (tensor<32x256xf8E4M3FN>, tensor<32x2xf32>)
  // CHECK: nn.dequantize %[[Q]], %[[S]] {tile_shape = array<i64: 1, 128>} : (tensor<32x256xf8E4M3FN>, tensor<32x2xf32>) -> tensor<32x256xbf16>
  %x2 = nn.dequantize %q, %s {tile_shape = array<i64: 1, 128>} : (tensor<32x256xf8E4M3FN>, tensor<32x2xf32>) -> tensor<32x256xbf16>
  // Weights: 128x128 blocks, E5M2.
  // CHECK: nn.quantize %{{.*}} {tile_shape = array<i64: 128, 128>} : (tensor<256x256xf32>) -> (tensor<256x256xf8E5M2>, tensor<2x2xf32>)
  %wq, %ws = nn.quantize %w {tile_shape = array<i64: 128, 128>} : (tensor<256x256xf32>) -> (tensor<256x256xf8E5M2>, tensor<2x2xf32>)
  // CHECK: nn.dequantize %{{.*}}, %{{.*}} {tile_shape = array<i64: 128, 128>} : (tensor<256x256xf8E5M2>, tensor<2x2xf32>) -> tensor<256x256xf32>
  %w2 = nn.dequantize %wq, %ws {tile_shape = array<i64: 128, 128>} : (tensor<256x256xf8E5M2>, tensor<2x2xf32>) -> tensor<256x256xf32>
  return %x2, %w2 : tensor<32x256xbf16>, tensor<256x256xf32>
}

// CHECK-LABEL: func.func @layout_and_precision
func.func @layout_and_precision(%x: tensor<2x16x64xf32>, %wt: tensor<64x96xf32>, %q: tensor<2x16x64xbf16>)
    -> (tensor<2x16x96xf32>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x96xf32>) {
  // GPT-2's Conv1D stores the weight [in, out].
  // CHECK: nn.linear %{{.*}}, %{{.*}} {transpose_weight} : (tensor<2x16x64xf32>, tensor<64x96xf32>) -> tensor<2x16x96xf32>
  %0 = nn.linear %x, %wt {transpose_weight} : (tensor<2x16x64xf32>, tensor<64x96xf32>) -> tensor<2x16x96xf32>
  // CHECK: nn.cast %{{.*}} : (tensor<2x16x64xf32>) -> tensor<2x16x64xbf16>
  %1 = nn.cast %x : (tensor<2x16x64xf32>) -> tensor<2x16x64xbf16>
  // CHECK: nn.rope %{{.*}} {inverse, num_heads = 4 : i64}
  %2 = nn.rope %q {inverse, num_heads = 4 : i64} : (tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: %[[S:.+]]:2 = nn.split %{{.*}} : (tensor<2x16x96xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x32xf32>)
  %a, %b = nn.split %0 : (tensor<2x16x96xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x32xf32>)
  // CHECK: nn.concat %[[S]]#0, %[[S]]#1 : (tensor<2x16x64xf32>, tensor<2x16x32xf32>) -> tensor<2x16x96xf32>
  %3 = nn.concat %a, %b : (tensor<2x16x64xf32>, tensor<2x16x32xf32>) -> tensor<2x16x96xf32>
  // Along the first dimension: a packed weight and its gradient's parts.
  // CHECK: %[[W:.+]] = nn.concat %{{.*}}, %{{.*}} {dim = 0 : i64} : (tensor<64x96xf32>, tensor<64x96xf32>) -> tensor<128x96xf32>
  %w2 = nn.concat %wt, %wt {dim = 0 : i64} : (tensor<64x96xf32>, tensor<64x96xf32>) -> tensor<128x96xf32>
  // CHECK: nn.split %[[W]] {dim = 0 : i64} : (tensor<128x96xf32>) -> (tensor<96x96xf32>, tensor<32x96xf32>)
  %p:2 = nn.split %w2 {dim = 0 : i64} : (tensor<128x96xf32>) -> (tensor<96x96xf32>, tensor<32x96xf32>)
  return %0, %1, %2, %3 : tensor<2x16x96xf32>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x96xf32>
}

// CHECK-LABEL: func.func @gradients
func.func @gradients(%dy: tensor<2x16x64xbf16>, %x: tensor<2x16x64xbf16>, %w: tensor<64xbf16>,
                     %ids: tensor<2x16xi32>, %k: tensor<2x16x16xbf16>, %dk: tensor<2x16x96xbf16>,
                     %dl: tensor<f32>, %logits: tensor<2x16x256xbf16>) {
  // CHECK: nn.embedding_grad %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<2x16xi32>) -> tensor<100x64xbf16>
  %0 = nn.embedding_grad %dy, %ids : (tensor<2x16x64xbf16>, tensor<2x16xi32>) -> tensor<100x64xbf16>
  // CHECK: nn.linear_weight_grad %{{.*}}, %{{.*}} : (tensor<2x16x96xbf16>, tensor<2x16x64xbf16>) -> tensor<96x64xbf16>
  %1 = nn.linear_weight_grad %dk, %x : (tensor<2x16x96xbf16>, tensor<2x16x64xbf16>) -> tensor<96x64xbf16>
  // The FP32 accumulator may be the result.
  // CHECK: nn.linear_weight_grad %{{.*}}, %{{.*}} : (tensor<2x16x96xbf16>, tensor<2x16x64xbf16>) -> tensor<96x64xf32>
  %acc = nn.linear_weight_grad %dk, %x : (tensor<2x16x96xbf16>, tensor<2x16x64xbf16>) -> tensor<96x64xf32>
  // CHECK: nn.linear_weight_grad %{{.*}}, %{{.*}} {transpose_weight} : (tensor<2x16x96xbf16>, tensor<2x16x64xbf16>) -> tensor<64x96xbf16>
  %2 = nn.linear_weight_grad %dk, %x {transpose_weight} : (tensor<2x16x96xbf16>, tensor<2x16x64xbf16>) -> tensor<64x96xbf16>
  // CHECK: nn.column_sum %{{.*}} : (tensor<2x16x96xbf16>) -> tensor<96xbf16>
  %3 = nn.column_sum %dk : (tensor<2x16x96xbf16>) -> tensor<96xbf16>
  // CHECK: nn.rms_norm_grad %{{.*}}, %{{.*}}, %{{.*}} {epsilon = 1.000000e-05 : f64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  %4 = nn.rms_norm_grad %dy, %x, %w {epsilon = 1.0e-5 : f64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.rms_norm_weight_grad %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<64xbf16>
  %5 = nn.rms_norm_weight_grad %dy, %x : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<64xbf16>
  // CHECK: nn.layer_norm_grad %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  %6 = nn.layer_norm_grad %dy, %x, %w : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.layer_norm_weight_grad %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<64xbf16>
  %7 = nn.layer_norm_weight_grad %dy, %x : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<64xbf16>
  // CHECK: nn.attention_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>)
  %dq, %dkk, %dv = nn.attention_grad %dy, %x, %k, %k {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x16x16xbf16>, tensor<2x16x16xbf16>)
  // CHECK: nn.swiglu_grad %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>)
  %dg, %du = nn.swiglu_grad %dy, %x, %x : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>)
  // CHECK: nn.gelu_grad %{{.*}}, %{{.*}} approximate = tanh : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  %8 = nn.gelu_grad %dy, %x approximate = tanh : (tensor<2x16x64xbf16>, tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16>
  // CHECK: nn.cross_entropy_grad %{{.*}}, %{{.*}}, %{{.*}} {ignore_index = -1 : i64} : (tensor<f32>, tensor<2x16x256xbf16>, tensor<2x16xi32>) -> tensor<2x16x256xbf16>
  %9 = nn.cross_entropy_grad %dl, %logits, %ids {ignore_index = -1 : i64} : (tensor<f32>, tensor<2x16x256xbf16>, tensor<2x16xi32>) -> tensor<2x16x256xbf16>
  return
}

// CHECK-LABEL: func.func @optimizer
func.func @optimizer(%p: tensor<64x64xf32>, %g: tensor<64x64xf32>, %b: tensor<64xf32>, %s: tensor<f32>)
    -> (tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>) {
  // CHECK: %[[N:.+]] = nn.global_norm %{{.*}}, %{{.*}} : (tensor<64x64xf32>, tensor<64xf32>) -> tensor<f32>
  %n = nn.global_norm %g, %b : (tensor<64x64xf32>, tensor<64xf32>) -> tensor<f32>
  // CHECK: nn.adamw_update %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[N]] {beta1 = 9.000000e-01 : f64, beta2 = 5.000000e-01 : f64, epsilon = 1.000000e-08 : f64, max_grad_norm = 1.000000e+00 : f64, weight_decay = 1.000000e-01 : f64}
  %p2, %m2, %v2 = nn.adamw_update %p, %g, %g, %g, %s, %s, %n {beta1 = 0.9 : f64, beta2 = 0.5 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>)
  return %p2, %m2, %v2 : tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>
}
