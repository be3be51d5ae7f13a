// RUN: kiln-opt %s --tile-plan-memory="function=step alignment=256" | FileCheck %s
// RUN: kiln-opt %s --tile-plan-memory="function=step report" --verify-diagnostics -o /dev/null
// RUN: not kiln-opt %s --tile-plan-memory="function=missing" 2>&1 | FileCheck %s --check-prefix=MISSING
// RUN: kiln-opt %s --tile-plan-memory="function=big" | FileCheck %s --check-prefix=BIG
// RUN: kiln-opt %s --tile-plan-memory="function=multi" | FileCheck %s --check-prefix=MULTI
// RUN: kiln-opt %s --tile-plan-memory="function=packed" | FileCheck %s --check-prefix=PACKED
// RUN: kiln-opt %s --tile-plan-memory="function=lm_head" | FileCheck %s --check-prefix=LMHEAD

// Arguments are persistent: 1 KiB each (16x16 f32), then the scalar in one
// 256-byte block at 3072, so temporaries start at 3328.
// CHECK-LABEL: func.func @step(
// CHECK-SAME: {kiln.offset = 0 : i64}
// CHECK-SAME: {kiln.offset = 1024 : i64}
// CHECK-SAME: {kiln.offset = 2048 : i64}
// CHECK-SAME: {kiln.offset = 3072 : i64}
// CHECK-SAME: kiln.arena_bytes = 6400 : i64, kiln.largest_buffer_bytes = 1024 : i64, kiln.persistent_bytes = 3328 : i64
// %a and %b are live together.
// CHECK: %[[A:.+]] = tile.fused {{.*}}kiln.offsets = array<i64: 3328>
// CHECK: %[[B:.+]] = tile.fused {{.*}}kiln.offsets = array<i64: 4352>
// A result never shares memory with its op's operands: %c gets new space;
// %a and %b die there, so %d reuses %a's.
// CHECK: %[[C:.+]] = tile.fused {{.*}}kiln.offsets = array<i64: 5376>
// CHECK: %[[D:.+]] = tile.fused {{.*}}kiln.offsets = array<i64: 3328>
// AdamW updates in place: its results take the offsets of param, exp_avg and exp_avg_sq.
// CHECK: tile.adamw {{.*}}kiln.offsets = array<i64: 0, 1024, 2048>

// MISSING: error: tile-plan-memory: no function @missing

// With `report`, a remark at the function sums the arena up, and a note
// points at the largest buffer's producer (the first of the equal ones).
// expected-remark @+1 {{tile-plan-memory: @step: arena 6400 bytes = 3328 persistent (parameters, optimizer state, inputs) + 3072 peak temporaries}}
func.func @step(%p: tensor<16x16xf32>, %m: tensor<16x16xf32>, %v: tensor<16x16xf32>, %s: tensor<f32>) -> (tensor<16x16xf32>, tensor<16x16xf32>) {
  // expected-note @+1 {{largest buffer 1024 bytes (tensor<16x16xf32>), from tile.fused}}
  %a = tile.fused %p : (tensor<16x16xf32>) -> tensor<16x16xf32> {
  ^bb0(%x: tensor<16x16xf32>):
    %y = nn.add %x, %x : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32>
    tile.yield %y : tensor<16x16xf32>
  }
  %b = tile.fused %a : (tensor<16x16xf32>) -> tensor<16x16xf32> {
  ^bb0(%x: tensor<16x16xf32>):
    %y = nn.mul %x, %x : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32>
    tile.yield %y : tensor<16x16xf32>
  }
  %c = tile.fused %a, %b : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32> {
  ^bb0(%x: tensor<16x16xf32>, %y: tensor<16x16xf32>):
    %z = nn.add %x, %y : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32>
    tile.yield %z : tensor<16x16xf32>
  }
  %d = tile.fused %c : (tensor<16x16xf32>) -> tensor<16x16xf32> {
  ^bb0(%x: tensor<16x16xf32>):
    %y = nn.add %x, %x : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32>
    tile.yield %y : tensor<16x16xf32>
  }
  %p2, %m2, %v2 = tile.adamw %p, %d, %m, %v, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 0.0 : f64}
      : (tensor<16x16xf32>, tensor<16x16xf32>, tensor<16x16xf32>, tensor<16x16xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<16x16xf32>, tensor<16x16xf32>, tensor<16x16xf32>)
  return %p2, %m2 : tensor<16x16xf32>, tensor<16x16xf32>
}

// Sizes are exact up to 2^63 bytes: two 4e18-byte buffers (a batch of 2e14
// sequences of 10^4 BF16 values) lie 4e18 bytes apart, not 256 (their bit
// counts overflow 64 bits; tile-plan-memory-invalid.mlir has what does not
// fit).
// BIG-LABEL: func.func @big(
// BIG-SAME: kiln.arena_bytes = 8000000000000000000 : i64, kiln.largest_buffer_bytes = 4000000000000000000 : i64, kiln.persistent_bytes = 0 : i64
// BIG: tensor.empty() {kiln.offsets = array<i64: 0>}
// BIG: tensor.empty() {kiln.offsets = array<i64: 4000000000000000000>}
func.func @big() -> (tensor<200000000000000x10000xbf16>, tensor<200000000000000x10000xbf16>) {
  %a = tensor.empty() : tensor<200000000000000x10000xbf16>
  %b = tensor.empty() : tensor<200000000000000x10000xbf16>
  return %a, %b : tensor<200000000000000x10000xbf16>, tensor<200000000000000x10000xbf16>
}

// A multi-tensor AdamW updates every parameter and moment in place: its
// results (new params, then first moments, then second moments) take the
// offsets of the tensors they replace, and the gradient is the one
// temporary.
// MULTI-LABEL: func.func @multi(
// MULTI: tile.fused {{.*}}kiln.offsets = array<i64: 2048>
// MULTI: tile.adamw {{.*}}kiln.offsets = array<i64: 0, 256, 512, 768, 1024, 1280>
func.func @multi(%p0: tensor<64xf32>, %p1: tensor<64xf32>, %m0: tensor<64xf32>, %m1: tensor<64xf32>,
                 %v0: tensor<64xf32>, %v1: tensor<64xf32>, %g1: tensor<64xf32>, %s: tensor<f32>)
    -> (tensor<64xf32>, tensor<64xf32>) {
  %g0 = tile.fused %p0 : (tensor<64xf32>) -> tensor<64xf32> {
  ^bb0(%x: tensor<64xf32>):
    %y = nn.add %x, %x : (tensor<64xf32>, tensor<64xf32>) -> tensor<64xf32>
    tile.yield %y : tensor<64xf32>
  }
  %r:6 = tile.adamw %p0, %p1, %g0, %g1, %m0, %m1, %v0, %v1, %s, %s, %s {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 0.0 : f64}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>)
      -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return %r#0, %r#1 : tensor<64xf32>, tensor<64xf32>
}

// Arguments a tile.concat places side by side (a packed weight) are laid
// out back to back from the first of them, whatever the alignment, so the
// concat is their buffer; the next argument starts aligned again. A
// tile.view of a temporary is an offset into its buffer, which lives as
// long as the view is used; a tile.concat's inputs are written into its
// buffer, allocated with the first of them.
// PACKED-LABEL: func.func @packed(
// PACKED-SAME: {kiln.offset = 0 : i64}
// PACKED-SAME: {kiln.offset = 256 : i64}
// PACKED-SAME: {kiln.offset = 96 : i64}
// PACKED-SAME: kiln.persistent_bytes = 512 : i64
// PACKED: %[[W:.+]] = tile.concat {{.*}}kiln.offsets = array<i64: 0>
// PACKED: %[[Y:.+]] = tile.gemm {{.*}}kiln.offsets = array<i64: 512>
// PACKED: %[[V:.+]] = tile.view %[[Y]] {dim = 1 : i64, kiln.offsets = array<i64: 520>, start = 2 : i64}
// The view is used last by %a: %y's buffer is free only after it.
// PACKED: %[[A:.+]] = tile.fused {{.*}}kiln.offsets = array<i64: 768>
// PACKED: %[[B:.+]] = tile.fused {{.*}}kiln.offsets = array<i64: 784>
// PACKED: tile.concat %[[A]], %[[B]] {dim = 1 : i64, kiln.offsets = array<i64: 768>}
func.func @packed(%wq: tensor<3x8xf32>, %x: tensor<4x8xf32>, %wk: tensor<1x8xf32>) -> tensor<4x8xf32> {
  %w = tile.concat %wq, %wk {dim = 0 : i64} : (tensor<3x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32>
  %y = tile.gemm %x, %w {batch = 1 : i64, m = 4 : i64, n = 4 : i64, k = 8 : i64, transpose_b} : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x4xf32>
  %k = tile.view %y {dim = 1 : i64, start = 2 : i64} : (tensor<4x4xf32>) -> tensor<4x2xf32>
  %a = tile.fused %x, %k : (tensor<4x8xf32>, tensor<4x2xf32>) -> tensor<4x4xf32> {
  ^bb0(%i: tensor<4x8xf32>, %j: tensor<4x2xf32>):
    %p:2 = nn.split %i : (tensor<4x8xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
    tile.yield %p#0 : tensor<4x4xf32>
  }
  %b = tile.fused %a : (tensor<4x4xf32>) -> tensor<4x4xf32> {
  ^bb0(%i: tensor<4x4xf32>):
    %s = nn.add %i, %i : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    tile.yield %s : tensor<4x4xf32>
  }
  %ab = tile.concat %a, %b {dim = 1 : i64} : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x8xf32>
  return %ab : tensor<4x8xf32>
}

// tile.linear_cross_entropy's logits scratch is a result nobody reads: it
// has room while the op runs (16x32 f32, 2 KiB after the loss and the two
// 8 KiB gradients) and is free at once, so the next op's result reuses it.
// Arguments: 8 KiB, 8 KiB, 256 B, 256 B: temporaries start at 16896.
// LMHEAD-LABEL: func.func @lm_head(
// LMHEAD: tile.linear_cross_entropy {{.*}}kiln.offsets = array<i64: 16896, 17152, 25344, 33536>
// LMHEAD: tile.fused {{.*}}kiln.offsets = array<i64: 33536>
func.func @lm_head(%x: tensor<32x64xf32>, %w: tensor<32x64xf32>, %t: tensor<32xi32>, %one: tensor<f32>) -> (tensor<f32>, tensor<32x64xf32>, tensor<32x64xf32>) {
  %loss, %dx, %dw, %scratch = tile.linear_cross_entropy %x, %w, %t, %one {chunk_rows = 16 : i64}
      : (tensor<32x64xf32>, tensor<32x64xf32>, tensor<32xi32>, tensor<f32>) -> (tensor<f32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<16x32xf32>)
  %l2 = tile.fused %loss : (tensor<f32>) -> tensor<f32> {
  ^bb0(%a: tensor<f32>):
    %b = nn.add %a, %a : (tensor<f32>, tensor<f32>) -> tensor<f32>
    tile.yield %b : tensor<f32>
  }
  return %l2, %dx, %dw : tensor<f32>, tensor<32x64xf32>, tensor<32x64xf32>
}
