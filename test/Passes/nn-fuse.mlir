// RUN: kiln-opt %s --split-input-file --nn-fuse | FileCheck %s
// RUN: kiln-opt %s --split-input-file --nn-fuse="residual-norm=false" | FileCheck %s --check-prefix=NORES
// RUN: kiln-opt %s --split-input-file --nn-fuse="rope=false" | FileCheck %s --check-prefix=NOROPE
// RUN: kiln-opt %s --split-input-file --nn-fuse="elementwise=false" | FileCheck %s --check-prefix=NOEW
// RUN: kiln-opt %s --split-input-file --nn-fuse="epilogue=false" | FileCheck %s --check-prefix=NOEPI
// RUN: kiln-opt %s --split-input-file --nn-fuse="gemm-epilogue=false" | FileCheck %s --check-prefix=NOGEMM
// RUN: kiln-opt %s --split-input-file --nn-fuse="norm-param-grads=false" | FileCheck %s --check-prefix=NONORM
// RUN: kiln-opt %s --split-input-file --nn-fuse="optimizer=false" | FileCheck %s --check-prefix=NOOPT
// RUN: kiln-opt %s --split-input-file --nn-fuse="linear-cross-entropy=false" | FileCheck %s --check-prefix=NOLCE
// RUN: kiln-opt %s --split-input-file --nn-fuse="cross-entropy-chunk-rows=3" | FileCheck %s --check-prefix=CHUNK3
// RUN: kiln-opt %s --split-input-file --nn-fuse="cross-entropy-fp32-logits" | FileCheck %s --check-prefix=FP32LOGITS
// RUN: kiln-opt %s --split-input-file --nn-fuse="compute-copies=false" | FileCheck %s --check-prefix=NOCOPIES

// nn-fuse groups row-local ops into tile.fused regions, one kernel each.

// The residual add and the norm of its sum: one region that writes both.
// CHECK-LABEL: func.func @residual_norm(
// CHECK: %[[R:.+]]:2 = tile.fused %arg0, %arg1, %arg2 {kiln.chunk = "F"}
// CHECK-NEXT: ^bb0(%[[H:.+]]: tensor<2x8x32xf32>, %[[O:.+]]: tensor<2x8x32xf32>, %[[W:.+]]: tensor<32xf32>):
// CHECK-NEXT: %[[S:.+]] = nn.add %[[H]], %[[O]] :
// CHECK-NEXT: %[[N:.+]] = nn.rms_norm %[[S]], %[[W]] {epsilon
// CHECK-NEXT: tile.yield %[[S]], %[[N]]
// CHECK: nn.linear %[[R]]#1, %arg3
// CHECK: return %[[R]]#0,
// NORES-LABEL: func.func @residual_norm(
// NORES-NOT: tile.fused
// NORES: return
func.func @residual_norm(%h: tensor<2x8x32xf32>, %o: tensor<2x8x32xf32>, %w: tensor<32xf32>, %wq: tensor<32x32xf32>) -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>) {
  %s = nn.add %h, %o {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %n = nn.rms_norm %s, %w {epsilon = 1.0e-05 : f64, kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
  %y = nn.linear %n, %wq {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<32x32xf32>) -> tensor<2x8x32xf32>
  return %s, %y : tensor<2x8x32xf32>, tensor<2x8x32xf32>
}

// -----

// Backward: the branch gradients' sum, the norm's input gradient and the
// residual gradient it adds to; the sum also feeds the weight gradient,
// which comes first in program order and moves after the region.
// CHECK-LABEL: func.func @residual_norm_grad(
// CHECK: %[[R:.+]]:2 = tile.fused %arg0, %arg1, %arg2, %arg3, %arg4 {kiln.chunk = "B"}
// CHECK: %[[A:.+]] = nn.add
// CHECK-NEXT: %[[D:.+]] = nn.rms_norm_grad %[[A]],
// CHECK-NEXT: %[[S:.+]] = nn.add %{{.+}}, %[[D]]
// CHECK-NEXT: tile.yield %[[A]], %[[S]]
// CHECK: %[[DW:.+]] = nn.rms_norm_weight_grad %[[R]]#0, %arg2 {{{.*}}kiln.chunk = "W"}
// CHECK: return %[[R]]#1, %[[DW]]
// With the elementwise group off, the norm group still fuses these.
// NOEW-LABEL: func.func @residual_norm_grad(
// NOEW: tile.fused
// NOEW-NEXT: ^bb0
// NOEW-NEXT: nn.add
// NOEW-NEXT: nn.rms_norm_grad
// NOEW-NEXT: nn.add
// NORES-LABEL: func.func @residual_norm_grad(
// NORES-NOT: tile.fused
// NORES: return
func.func @residual_norm_grad(%g1: tensor<2x8x32xf32>, %g2: tensor<2x8x32xf32>, %x: tensor<2x8x32xf32>, %w: tensor<32xf32>, %res: tensor<2x8x32xf32>) -> (tensor<2x8x32xf32>, tensor<32xf32>) {
  %a = nn.add %g1, %g2 {kiln.chunk = "B"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %d = nn.rms_norm_grad %a, %x, %w {epsilon = 1.0e-05 : f64, kiln.chunk = "B"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
  %dw = nn.rms_norm_weight_grad %a, %x {epsilon = 1.0e-05 : f64, kiln.chunk = "W"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<32xf32>
  %r = nn.add %res, %d {kiln.chunk = "B"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  return %r, %dw : tensor<2x8x32xf32>, tensor<32xf32>
}

// -----

// The RoPE of Q and K, which read the same positions.
// CHECK-LABEL: func.func @rope(
// CHECK: %[[R:.+]]:2 = tile.fused %arg1, %arg2, %arg0 {kiln.chunk = "F"}
// CHECK-NEXT: ^bb0(%[[K:.+]]: tensor<2x8x16xf32>, %[[P:.+]]: tensor<2x8xi32>, %[[Q:.+]]: tensor<2x8x32xf32>):
// CHECK-NEXT: %[[KR:.+]] = nn.rope %[[K]] positions(%[[P]]) {num_heads = 1 : i64}
// CHECK-NEXT: %[[QR:.+]] = nn.rope %[[Q]] positions(%[[P]]) {num_heads = 2 : i64}
// CHECK-NEXT: tile.yield %[[KR]], %[[QR]]
// CHECK: return %[[R]]#1, %[[R]]#0
// NOROPE-LABEL: func.func @rope(
// NOROPE-NOT: tile.fused
// NOROPE: return
func.func @rope(%q: tensor<2x8x32xf32>, %k: tensor<2x8x16xf32>, %p: tensor<2x8xi32>) -> (tensor<2x8x32xf32>, tensor<2x8x16xf32>) {
  %kr = nn.rope %k positions(%p) {kiln.chunk = "F", num_heads = 1 : i64} : (tensor<2x8x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %qr = nn.rope %q positions(%p) {kiln.chunk = "F", num_heads = 2 : i64} : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  return %qr, %kr : tensor<2x8x32xf32>, tensor<2x8x16xf32>
}

// -----

// GPT-2's token and position gathers and their sum.
// CHECK-LABEL: func.func @embeddings(
// CHECK: %[[R:.+]] = tile.fused %arg0, %arg2, %arg1, %arg3 {kiln.chunk = "F"}
// CHECK: nn.embedding
// CHECK-NEXT: nn.embedding
// CHECK-NEXT: nn.add
// CHECK-NEXT: tile.yield
// CHECK: return %[[R]]
// NOEW-LABEL: func.func @embeddings(
// NOEW-NOT: tile.fused
// NOEW: return
func.func @embeddings(%wte: tensor<64x32xf32>, %wpe: tensor<16x32xf32>, %tok: tensor<2x8xi32>, %pos: tensor<2x8xi32>) -> tensor<2x8x32xf32> {
  %e = nn.embedding %wte, %tok {kiln.chunk = "F"} : (tensor<64x32xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  %p = nn.embedding %wpe, %pos {kiln.chunk = "F"} : (tensor<16x32xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  %h = nn.add %e, %p {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  return %h : tensor<2x8x32xf32>
}

// -----

// Must not fuse: the GEMM needs %s in memory before the second add can run
// (one region would feed itself through the GEMM).
// CHECK-LABEL: func.func @through_gemm(
// CHECK-NOT: tile.fused
// CHECK: return
func.func @through_gemm(%h: tensor<2x8x32xf32>, %o: tensor<2x8x32xf32>, %wq: tensor<32x32xf32>) -> tensor<2x8x32xf32> {
  %s = nn.add %h, %o {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %y = nn.linear %s, %wq {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<32x32xf32>) -> tensor<2x8x32xf32>
  %t = nn.add %s, %y {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  return %t : tensor<2x8x32xf32>
}

// -----

// Must not fuse: ops of different chunks (a pipeline schedules them
// apart), and a norm whose weight a region would compute (it is read whole,
// over other rows).
// CHECK-LABEL: func.func @chunks_and_weights(
// CHECK-NOT: tile.fused
// CHECK: return
func.func @chunks_and_weights(%x: tensor<2x8x32xf32>, %w: tensor<32xf32>, %dy: tensor<2x8x32xf32>) -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>) {
  %s = nn.add %x, %x {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %d = nn.rms_norm_grad %dy, %s, %w {epsilon = 1.0e-05 : f64, kiln.chunk = "B"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
  %w2 = nn.mul %w, %w {kiln.chunk = "F"} : (tensor<32xf32>, tensor<32xf32>) -> tensor<32xf32>
  %n = nn.rms_norm %x, %w2 {epsilon = 1.0e-05 : f64, kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
  return %d, %n : tensor<2x8x32xf32>, tensor<2x8x32xf32>
}

// -----

// The epilogue group: a BF16 weight or bias gradient whose one use widens
// it for the optimizer is written in FP32 by its kernel; one that is also
// used in BF16 keeps its type and its cast. The FP32 weight and bias
// gradients of one output gradient are then one GEMM (gemm-epilogue).
// CHECK-LABEL: func.func @fp32_gradients(
// CHECK: %[[DW:.+]], %[[DB:.+]] = tile.gemm %arg0, %arg1 {batch = 1 : i64, epilogue = "bgrad_a", k = 16 : i64, kiln.chunk = "W", m = 64 : i64, n = 32 : i64, {{.*}}transpose_a} : (tensor<2x8x64xbf16>, tensor<2x8x32xbf16>) -> (tensor<64x32xf32>, tensor<64xf32>)
// CHECK: %[[KEPT:.+]] = nn.column_sum %arg2 {kiln.chunk = "W"} : (tensor<2x8x32xbf16>) -> tensor<32xbf16>
// CHECK: %[[WIDE:.+]] = nn.cast %[[KEPT]]
// CHECK: return %[[DW]], %[[DB]], %[[WIDE]], %[[KEPT]]
// NOGEMM-LABEL: func.func @fp32_gradients(
// NOGEMM: nn.linear_weight_grad %arg0, %arg1 {kiln.chunk = "W"} : (tensor<2x8x64xbf16>, tensor<2x8x32xbf16>) -> tensor<64x32xf32>
// NOGEMM: nn.column_sum %arg0 {kiln.chunk = "W"} : (tensor<2x8x64xbf16>) -> tensor<64xf32>
// NOEPI-LABEL: func.func @fp32_gradients(
// NOEPI: tile.gemm {{.*}}epilogue = "bgrad_a"{{.*}} -> (tensor<64x32xbf16>, tensor<64xbf16>)
// NOEPI: nn.cast
func.func @fp32_gradients(%dy: tensor<2x8x64xbf16>, %x: tensor<2x8x32xbf16>, %dz: tensor<2x8x32xbf16>) -> (tensor<64x32xf32>, tensor<64xf32>, tensor<32xf32>, tensor<32xbf16>) {
  %dw = nn.linear_weight_grad %dy, %x {kiln.chunk = "W"} : (tensor<2x8x64xbf16>, tensor<2x8x32xbf16>) -> tensor<64x32xbf16>
  %dw32 = nn.cast %dw {kiln.chunk = "W"} : (tensor<64x32xbf16>) -> tensor<64x32xf32>
  %db = nn.column_sum %dy {kiln.chunk = "W"} : (tensor<2x8x64xbf16>) -> tensor<64xbf16>
  %db32 = nn.cast %db {kiln.chunk = "W"} : (tensor<64xbf16>) -> tensor<64xf32>
  %dc = nn.column_sum %dz {kiln.chunk = "W"} : (tensor<2x8x32xbf16>) -> tensor<32xbf16>
  %dc32 = nn.cast %dc {kiln.chunk = "W"} : (tensor<32xbf16>) -> tensor<32xf32>
  return %dw32, %db32, %dc32, %dc : tensor<64x32xf32>, tensor<64xf32>, tensor<32xf32>, tensor<32xbf16>
}

// -----

// The optimizer group: updates that share their scalars and hyperparameters
// are one multi-tensor tile.adamw (params, grads, first moments, second
// moments, then the scalars) at the last of them; one with another weight
// decay is a group of its own, and a group of one stays as it is.
// CHECK-LABEL: func.func @optimizer(
// CHECK: %[[B:.+]], %{{.+}}, %{{.+}} = nn.adamw_update %arg2, %arg5, %arg8, %arg11, %arg12, %arg13, %arg14 {{{.*}}weight_decay = 0.000000e+00 : f64}
// CHECK-NEXT: %[[A:.+]]:6 = tile.adamw %arg0, %arg1, %arg3, %arg4, %arg6, %arg7, %arg9, %arg10, %arg12, %arg13, %arg14 {{{.*}}kiln.chunk = "O"{{.*}}weight_decay = 1.000000e-01 : f64}
// CHECK: return %[[A]]#0, %[[A]]#1, %[[B]], %[[A]]#2, %[[A]]#5
// NOOPT-LABEL: func.func @optimizer(
// NOOPT-NOT: tile.adamw
// NOOPT: return
func.func @optimizer(%p0: tensor<8x4xf32>, %p1: tensor<4x4xf32>, %p2: tensor<4xf32>,
                     %g0: tensor<8x4xf32>, %g1: tensor<4x4xf32>, %g2: tensor<4xf32>,
                     %m0: tensor<8x4xf32>, %m1: tensor<4x4xf32>, %m2: tensor<4xf32>,
                     %v0: tensor<8x4xf32>, %v1: tensor<4x4xf32>, %v2: tensor<4xf32>,
                     %lr: tensor<f32>, %step: tensor<f32>, %norm: tensor<f32>)
    -> (tensor<8x4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<8x4xf32>, tensor<4x4xf32>) {
  %a0, %a1, %a2 = nn.adamw_update %p0, %g0, %m0, %v0, %lr, %step, %norm {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-08 : f64, kiln.chunk = "O", max_grad_norm = 1.0 : f64, weight_decay = 0.1 : f64}
      : (tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>)
  %c0, %c1, %c2 = nn.adamw_update %p2, %g2, %m2, %v2, %lr, %step, %norm {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-08 : f64, kiln.chunk = "O", max_grad_norm = 1.0 : f64, weight_decay = 0.0 : f64}
      : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  %b0, %b1, %b2 = nn.adamw_update %p1, %g1, %m1, %v1, %lr, %step, %norm {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-08 : f64, kiln.chunk = "O", max_grad_norm = 1.0 : f64, weight_decay = 0.1 : f64}
      : (tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>)
  return %a0, %b0, %c0, %a1, %b2 : tensor<8x4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<8x4xf32>, tensor<4x4xf32>
}

// -----

// In a BF16 step the optimizer keeps each parameter's BF16 compute copy: the
// forward's casts of the parameters become new arguments of the step
// (kiln.compute_copy), which the multi-tensor update writes (rounded from
// the new masters) and the step returns.
// CHECK-LABEL: func.func @compute_copies(
// CHECK-SAME: %[[C0:[^:]+]]: tensor<8x4xbf16> {kiln.compute_copy = "w0"}, %[[C1:[^:]+]]: tensor<4x4xbf16> {kiln.compute_copy = "w1"})
// CHECK-SAME: -> (tensor<2x4xbf16>, tensor<8x4xf32>, tensor<4x4xf32>, tensor<8x4xbf16> {kiln.compute_copy = "w0"}, tensor<4x4xbf16> {kiln.compute_copy = "w1"})
// CHECK-NOT: nn.cast
// CHECK: nn.linear %{{.+}}, %[[C0]]
// CHECK: nn.linear %{{.+}}, %[[C1]]
// CHECK: %[[A:.+]]:8 = tile.adamw %arg0, %arg1, %arg3, %arg4, %arg5, %arg6, %arg7, %arg8, %[[C0]], %[[C1]], %arg9, %arg10, %arg11 {{{.*}}compute_copies{{.*}}} : {{.*}} -> (tensor<8x4xf32>, tensor<4x4xf32>, tensor<8x4xf32>, tensor<4x4xf32>, tensor<8x4xf32>, tensor<4x4xf32>, tensor<8x4xbf16>, tensor<4x4xbf16>)
// CHECK: return %{{.+}}, %[[A]]#0, %[[A]]#1, %[[A]]#6, %[[A]]#7
// compute-copies=false: one multi-tensor update still, but the casts stay
// kernels of the step and nothing new persists.
// NOCOPIES-LABEL: func.func @compute_copies(
// NOCOPIES-SAME: %arg11: tensor<f32>)
// NOCOPIES-SAME: -> (tensor<2x4xbf16>, tensor<8x4xf32>, tensor<4x4xf32>) {
// NOCOPIES-COUNT-2: nn.cast
// NOCOPIES: %[[A:.+]]:6 = tile.adamw
// NOCOPIES-NOT: compute_copies
// NOCOPIES: return %{{.+}}, %[[A]]#0, %[[A]]#1 :
func.func @compute_copies(%w0: tensor<8x4xf32> {kiln.param = "w0"}, %w1: tensor<4x4xf32> {kiln.param = "w1"}, %x: tensor<2x4xbf16>,
                          %g0: tensor<8x4xf32>, %g1: tensor<4x4xf32>,
                          %m0: tensor<8x4xf32>, %m1: tensor<4x4xf32>, %v0: tensor<8x4xf32>, %v1: tensor<4x4xf32>,
                          %lr: tensor<f32>, %step: tensor<f32>, %norm: tensor<f32>)
    -> (tensor<2x4xbf16>, tensor<8x4xf32>, tensor<4x4xf32>) {
  %c0 = nn.cast %w0 {kiln.chunk = "F"} : (tensor<8x4xf32>) -> tensor<8x4xbf16>
  %c1 = nn.cast %w1 {kiln.chunk = "F"} : (tensor<4x4xf32>) -> tensor<4x4xbf16>
  %h = nn.linear %x, %c0 {kiln.chunk = "F"} : (tensor<2x4xbf16>, tensor<8x4xbf16>) -> tensor<2x8xbf16>
  %y = nn.linear %x, %c1 {kiln.chunk = "F"} : (tensor<2x4xbf16>, tensor<4x4xbf16>) -> tensor<2x4xbf16>
  %a0, %a1, %a2 = nn.adamw_update %w0, %g0, %m0, %v0, %lr, %step, %norm {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-08 : f64, kiln.chunk = "O", max_grad_norm = 1.0 : f64, weight_decay = 0.1 : f64}
      : (tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>)
  %b0, %b1, %b2 = nn.adamw_update %w1, %g1, %m1, %v1, %lr, %step, %norm {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-08 : f64, kiln.chunk = "O", max_grad_norm = 1.0 : f64, weight_decay = 0.1 : f64}
      : (tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>)
  return %y, %a0, %b0 : tensor<2x4xbf16>, tensor<8x4xf32>, tensor<4x4xf32>
}


// -----

// linear-cross-entropy: the LM head, its loss, the loss gradient and the
// two GEMMs that read the logits' gradient become one op at the loss
// gradient; the [128, 512] logits are gone. The chunk: 128 tokens x 32
// hidden x 4 bytes fit 8 rows of 512 FP32 logits, but a chunk takes at
// least 64.
// CHECK-LABEL: func.func @linear_cross_entropy(
// CHECK-NOT: nn.cross_entropy
// CHECK: %[[ONE:.+]] = arith.constant
// CHECK-NEXT: %[[LOSS:.+]], %[[DH:.+]], %[[DW:.+]], %{{.+}} = tile.linear_cross_entropy %arg0, %arg1, %arg2, %[[ONE]] {chunk_rows = 64 : i64, kiln.chunk = "B"} : (tensor<2x64x32xf32>, tensor<512x32xf32>, tensor<2x64xi32>, tensor<f32>) -> (tensor<f32>, tensor<2x64x32xf32>, tensor<512x32xf32>, tensor<64x512xf32>)
// CHECK-NOT: nn.linear
// CHECK: return %[[LOSS]], %[[DH]], %[[DW]]
// The option off keeps the five ops.
// NOLCE-LABEL: func.func @linear_cross_entropy(
// NOLCE-NOT: tile.linear_cross_entropy
// NOLCE: nn.cross_entropy
// NOLCE: nn.cross_entropy_grad
// NOLCE: nn.linear_weight_grad
// The chunk option sets the rows of a chunk.
// CHUNK3-LABEL: func.func @linear_cross_entropy(
// CHUNK3: tile.linear_cross_entropy {{.*}}chunk_rows = 3 : i64{{.*}} -> (tensor<f32>, tensor<2x64x32xf32>, tensor<512x32xf32>, tensor<3x512xf32>)
func.func @linear_cross_entropy(%h: tensor<2x64x32xf32>, %w: tensor<512x32xf32>, %t: tensor<2x64xi32>) -> (tensor<f32>, tensor<2x64x32xf32>, tensor<512x32xf32>) {
  %logits = nn.linear %h, %w {kiln.chunk = "F"} : (tensor<2x64x32xf32>, tensor<512x32xf32>) -> tensor<2x64x512xf32>
  %loss = nn.cross_entropy %logits, %t {kiln.chunk = "F"} : (tensor<2x64x512xf32>, tensor<2x64xi32>) -> tensor<f32>
  %one = arith.constant {kiln.chunk = "B"} dense<1.0> : tensor<f32>
  %dl = nn.cross_entropy_grad %one, %logits, %t {kiln.chunk = "B"} : (tensor<f32>, tensor<2x64x512xf32>, tensor<2x64xi32>) -> tensor<2x64x512xf32>
  %dh = nn.linear %dl, %w {kiln.chunk = "B", transpose_weight} : (tensor<2x64x512xf32>, tensor<512x32xf32>) -> tensor<2x64x32xf32>
  %dw = nn.linear_weight_grad %dl, %h {kiln.chunk = "W"} : (tensor<2x64x512xf32>, tensor<2x64x32xf32>) -> tensor<512x32xf32>
  return %loss, %dh, %dw : tensor<f32>, tensor<2x64x32xf32>, tensor<512x32xf32>
}

// -----

// A BF16 LM head tied to the embedding (GPT-2): its weight gradient adds
// to the table's in BF16, so the op's FP32 accumulator is rounded once by a
// cast, a kernel of its own right after the op (so that the accumulator
// does not live until the sum); the add and the widening cast are one
// region. 256 tokens x 64 hidden x 2 bytes fit 32 rows of 256 FP32
// logits: the chunk takes the least, 64.
// The option keeps a BF16 step's logits FP32; an FP32 step has no flag.
// FP32LOGITS-LABEL: func.func @linear_cross_entropy(
// FP32LOGITS-NOT: fp32_logits
// FP32LOGITS-LABEL: func.func @tied_bf16(
// FP32LOGITS: tile.linear_cross_entropy {{.*}}fp32_logits
// CHECK-LABEL: func.func @tied_bf16(
// CHECK: %{{.+}}, %{{.+}}, %[[DW:.+]], %{{.+}} = tile.linear_cross_entropy %arg0, %arg1, %arg2, %{{.+}} {chunk_rows = 64 : i64, {{.*}}} : (tensor<256x64xbf16>, tensor<256x64xbf16>, tensor<256xi32>, tensor<f32>) -> (tensor<f32>, tensor<256x64xbf16>, tensor<256x64xf32>, tensor<64x256xf32>)
// CHECK-NEXT: %[[R:.+]] = tile.fused %[[DW]] {kiln.chunk = "W"}
// CHECK-NEXT: ^bb0
// CHECK-NEXT: nn.cast %{{.+}} : (tensor<256x64xf32>) -> tensor<256x64xbf16>
// CHECK-NEXT: tile.yield
// CHECK: tile.fused %[[R]], %arg3
// CHECK-NEXT: ^bb0
// CHECK-NEXT: nn.add
// CHECK-NEXT: nn.cast %{{.+}} : (tensor<256x64xbf16>) -> tensor<256x64xf32>
func.func @tied_bf16(%h: tensor<256x64xbf16>, %w: tensor<256x64xbf16>, %t: tensor<256xi32>, %demb: tensor<256x64xbf16>) -> (tensor<f32>, tensor<256x64xbf16>, tensor<256x64xf32>) {
  %logits = nn.linear %h, %w {kiln.chunk = "F"} : (tensor<256x64xbf16>, tensor<256x64xbf16>) -> tensor<256x256xbf16>
  %loss = nn.cross_entropy %logits, %t {kiln.chunk = "F"} : (tensor<256x256xbf16>, tensor<256xi32>) -> tensor<f32>
  %one = arith.constant {kiln.chunk = "B"} dense<1.0> : tensor<f32>
  %dl = nn.cross_entropy_grad %one, %logits, %t {kiln.chunk = "B"} : (tensor<f32>, tensor<256x256xbf16>, tensor<256xi32>) -> tensor<256x256xbf16>
  %dh = nn.linear %dl, %w {kiln.chunk = "B", transpose_weight} : (tensor<256x256xbf16>, tensor<256x64xbf16>) -> tensor<256x64xbf16>
  %dw = nn.linear_weight_grad %dl, %h {kiln.chunk = "W"} : (tensor<256x256xbf16>, tensor<256x64xbf16>) -> tensor<256x64xbf16>
  %sum = nn.add %dw, %demb {kiln.chunk = "W"} : (tensor<256x64xbf16>, tensor<256x64xbf16>) -> tensor<256x64xbf16>
  %wide = nn.cast %sum {kiln.chunk = "W"} : (tensor<256x64xbf16>) -> tensor<256x64xf32>
  return %loss, %dh, %wide : tensor<f32>, tensor<256x64xbf16>, tensor<256x64xf32>
}

// -----

// Logits that something besides the loss reads (here they are returned)
// must exist: nothing fuses.
// CHECK-LABEL: func.func @logits_escape(
// CHECK-NOT: tile.linear_cross_entropy
// CHECK: nn.cross_entropy_grad
func.func @logits_escape(%h: tensor<8x16xf32>, %w: tensor<32x16xf32>, %t: tensor<8xi32>) -> (tensor<f32>, tensor<8x32xf32>, tensor<8x16xf32>, tensor<32x16xf32>) {
  %logits = nn.linear %h, %w {kiln.chunk = "F"} : (tensor<8x16xf32>, tensor<32x16xf32>) -> tensor<8x32xf32>
  %loss = nn.cross_entropy %logits, %t {kiln.chunk = "F"} : (tensor<8x32xf32>, tensor<8xi32>) -> tensor<f32>
  %one = arith.constant {kiln.chunk = "B"} dense<1.0> : tensor<f32>
  %dl = nn.cross_entropy_grad %one, %logits, %t {kiln.chunk = "B"} : (tensor<f32>, tensor<8x32xf32>, tensor<8xi32>) -> tensor<8x32xf32>
  %dh = nn.linear %dl, %w {kiln.chunk = "B", transpose_weight} : (tensor<8x32xf32>, tensor<32x16xf32>) -> tensor<8x16xf32>
  %dw = nn.linear_weight_grad %dl, %h {kiln.chunk = "W"} : (tensor<8x32xf32>, tensor<8x16xf32>) -> tensor<32x16xf32>
  return %loss, %logits, %dh, %dw : tensor<f32>, tensor<8x32xf32>, tensor<8x16xf32>, tensor<32x16xf32>
}

// -----

// The chunk of a larger step: 1024 tokens x 16 hidden x 4 bytes fit 170
// rows of 96 FP32 logits, rounded down to a multiple of 64.
// CHECK-LABEL: func.func @chunk_rows(
// CHECK: tile.linear_cross_entropy {{.*}}{chunk_rows = 128 : i64, {{.*}} -> (tensor<f32>, tensor<1024x16xf32>, tensor<96x16xf32>, tensor<128x96xf32>)
func.func @chunk_rows(%h: tensor<1024x16xf32>, %w: tensor<96x16xf32>, %t: tensor<1024xi32>) -> (tensor<f32>, tensor<1024x16xf32>, tensor<96x16xf32>) {
  %logits = nn.linear %h, %w {kiln.chunk = "F"} : (tensor<1024x16xf32>, tensor<96x16xf32>) -> tensor<1024x96xf32>
  %loss = nn.cross_entropy %logits, %t {kiln.chunk = "F"} : (tensor<1024x96xf32>, tensor<1024xi32>) -> tensor<f32>
  %one = arith.constant {kiln.chunk = "B"} dense<1.0> : tensor<f32>
  %dl = nn.cross_entropy_grad %one, %logits, %t {kiln.chunk = "B"} : (tensor<f32>, tensor<1024x96xf32>, tensor<1024xi32>) -> tensor<1024x96xf32>
  %dh = nn.linear %dl, %w {kiln.chunk = "B", transpose_weight} : (tensor<1024x96xf32>, tensor<96x16xf32>) -> tensor<1024x16xf32>
  %dw = nn.linear_weight_grad %dl, %h {kiln.chunk = "W"} : (tensor<1024x96xf32>, tensor<1024x16xf32>) -> tensor<96x16xf32>
  return %loss, %dh, %dw : tensor<f32>, tensor<1024x16xf32>, tensor<96x16xf32>
}

// -----

// norm-param-grads: a LayerNorm's weight gradient and the column sum of
// the same gradient (its bias gradient) as one region, at the first of
// them; a column sum of another gradient stays apart.
// CHECK-LABEL: func.func @layer_norm_param_grads(
// CHECK: %[[G:.+]]:2 = tile.fused %arg0, %arg1 {kiln.chunk = "W"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> (tensor<32xf32>, tensor<32xf32>)
// CHECK-NEXT: ^bb0(%[[DY:.+]]: tensor<2x8x32xf32>, %[[X:.+]]: tensor<2x8x32xf32>):
// CHECK-NEXT: %[[W:.+]] = nn.layer_norm_weight_grad %[[DY]], %[[X]]
// CHECK-NEXT: %[[B:.+]] = nn.column_sum %[[DY]]
// CHECK-NEXT: tile.yield %[[W]], %[[B]]
// CHECK: %[[OTHER:.+]] = nn.column_sum %arg2
// CHECK: return %[[G]]#0, %[[G]]#1, %[[OTHER]]
// NONORM-LABEL: func.func @layer_norm_param_grads(
// NONORM-NOT: tile.fused
// NONORM: return
func.func @layer_norm_param_grads(%dy: tensor<2x8x32xf32>, %x: tensor<2x8x32xf32>, %dz: tensor<2x8x32xf32>) -> (tensor<32xf32>, tensor<32xf32>, tensor<32xf32>) {
  %dw = nn.layer_norm_weight_grad %dy, %x {epsilon = 1.0e-05 : f64, kiln.chunk = "W"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<32xf32>
  %db = nn.column_sum %dy {kiln.chunk = "W"} : (tensor<2x8x32xf32>) -> tensor<32xf32>
  %dc = nn.column_sum %dz {kiln.chunk = "W"} : (tensor<2x8x32xf32>) -> tensor<32xf32>
  return %dw, %db, %dc : tensor<32xf32>, tensor<32xf32>, tensor<32xf32>
}
