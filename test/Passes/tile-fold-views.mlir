// RUN: kiln-opt %s --split-input-file --tile-fold-views | FileCheck %s
// RUN: kiln-opt %s --split-input-file --tile-fold-views=report --verify-diagnostics -o /dev/null
// RUN: kiln-opt %s --split-input-file --tile-fold-views --tile-plan-memory="function=step" | FileCheck %s --check-prefix=MEM

// GPT-2's attention: the packed QKV is read in place (three views), and
// the attention backward writes the three gradients into the packed
// gradient (a tile.concat), which the backward GEMM reads.
// CHECK-LABEL: func.func @step
// CHECK-NOT: nn.split
// CHECK: %[[Q:.+]] = tile.view %[[QKV:.+]] {dim = 2 : i64, start = 0 : i64} : (tensor<2x16x192xf32>) -> tensor<2x16x64xf32>
// CHECK: %[[K:.+]] = tile.view %[[QKV]] {dim = 2 : i64, start = 64 : i64}
// CHECK: %[[V:.+]] = tile.view %[[QKV]] {dim = 2 : i64, start = 128 : i64}
// CHECK: tile.flash_attention_fwd %[[Q]], %[[K]], %[[V]]
// CHECK: %[[DQ:.+]], %[[DK:.+]], %[[DV:.+]] = tile.flash_attention_bwd
// CHECK-NOT: nn.concat
// CHECK: %[[DQKV:.+]] = tile.concat %[[DQ]], %[[DK]], %[[DV]] {dim = 2 : i64}
// CHECK: tile.gemm %[[DQKV]]

// The views are offsets into the packed buffer (64 f32 = 256 bytes per
// part), the gradients offsets into theirs: no buffer of their own.
// MEM-LABEL: func.func @step
// MEM: %[[QKV:.+]] = tile.gemm {{.*}}kiln.offsets = array<i64: [[BASE:[0-9]+]]>
// MEM: tile.view %[[QKV]] {dim = 2 : i64, kiln.offsets = array<i64: [[BASE]]>, start = 0 : i64}
// MEM: tile.view %[[QKV]] {dim = 2 : i64, kiln.offsets = array<i64: [[K:[0-9]+]]>, start = 64 : i64}
// MEM: tile.flash_attention_bwd {{.*}}kiln.offsets = array<i64: [[DQ:[0-9]+]], [[DK:[0-9]+]], [[DV:[0-9]+]]>
// MEM: tile.concat {{.*}}kiln.offsets = array<i64: [[DQ]]>
func.func @step(%x: tensor<2x16x64xf32>, %w: tensor<192x64xf32>, %dout: tensor<2x16x64xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>) {
  %qkv = tile.gemm %x, %w {batch = 1 : i64, m = 32 : i64, n = 192 : i64, k = 64 : i64, transpose_b} : (tensor<2x16x64xf32>, tensor<192x64xf32>) -> tensor<2x16x192xf32>
  // expected-remark @+1 {{tile-fold-views: forward: split read in place: row-strided views of the packed tensor, no kernel}}
  %q, %k, %v = tile.fused %qkv : (tensor<2x16x192xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) {
  ^bb0(%a: tensor<2x16x192xf32>):
    %p:3 = nn.split %a : (tensor<2x16x192xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>)
    tile.yield %p#0, %p#1, %p#2 : tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>
  }
  %o, %lse = tile.flash_attention_fwd %q, %k, %v {block_q = 16 : i64, block_k = 16 : i64, num_warps = 1 : i64, num_stages = 1 : i64, causal, num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> (tensor<2x16x64xf32>, tensor<2x2x16xf32>)
  %dq, %dk, %dv = tile.flash_attention_bwd %dout, %q, %k, %v, %o, %lse {block_q = 16 : i64, block_k = 16 : i64, num_warps = 1 : i64, num_stages = 1 : i64, causal, num_heads = 2 : i64, num_kv_heads = 2 : i64}
      : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x2x16xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>)
  // expected-remark @+1 {{tile-fold-views: backward: concat written in place: its inputs' kernels write them row-strided into the packed tensor, no kernel}}
  %dqkv = tile.fused %dq, %dk, %dv {kiln.chunk = "B"} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x192xf32> {
  ^bb0(%a: tensor<2x16x64xf32>, %b: tensor<2x16x64xf32>, %c: tensor<2x16x64xf32>):
    %r = nn.concat %a, %b, %c : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x192xf32>
    tile.yield %r : tensor<2x16x192xf32>
  }
  %dx = tile.gemm %dqkv, %w {batch = 1 : i64, m = 32 : i64, n = 64 : i64, k = 192 : i64} : (tensor<2x16x192xf32>, tensor<192x64xf32>) -> tensor<2x16x64xf32>
  return %o, %dx : tensor<2x16x64xf32>, tensor<2x16x64xf32>
}

// -----

// A row-wise region reads a view in place; a GEMM reads it contiguous, so
// the second split stays a copy.
// CHECK-LABEL: func.func @step
// CHECK: tile.view
// CHECK: tile.fused
// CHECK: nn.split
func.func @step(%x: tensor<8x128xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  // expected-remark @+1 {{tile-fold-views: forward: split read in place: row-strided views of the packed tensor, no kernel}}
  %g, %u = tile.fused %x : (tensor<8x128xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  ^bb0(%a: tensor<8x128xf32>):
    %p:2 = nn.split %a : (tensor<8x128xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>)
    tile.yield %p#0, %p#1 : tensor<8x64xf32>, tensor<8x64xf32>
  }
  %s = tile.fused %g, %u : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%a: tensor<8x64xf32>, %b: tensor<8x64xf32>):
    %y = nn.swiglu %a, %b : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
    tile.yield %y : tensor<8x64xf32>
  }
  // expected-remark @+1 {{tile-fold-views: forward: split stays a copy: 'tile.gemm' reads operand #0 contiguous}}
  %a2, %b2 = tile.fused %x : (tensor<8x128xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  ^bb0(%a: tensor<8x128xf32>):
    %p:2 = nn.split %a : (tensor<8x128xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>)
    tile.yield %p#0, %p#1 : tensor<8x64xf32>, tensor<8x64xf32>
  }
  %m = tile.gemm %a2, %b2 {batch = 1 : i64, m = 8 : i64, n = 8 : i64, k = 64 : i64, transpose_b} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x8xf32>
  return %s, %b2 : tensor<8x64xf32>, tensor<8x64xf32>
}

// -----

// Parts whose rows would start off a 16-byte boundary (2 f32 wide) stay
// copies: the GPU kernels load and store 16 bytes at a time. A concat of a
// GEMM's result (cuBLASLt writes it contiguous) stays a copy too.
// CHECK-LABEL: func.func @step
// CHECK-NOT: tile.view
// CHECK-NOT: tile.concat
func.func @step(%x: tensor<8x6xf32>, %z: tensor<8x8xf32>, %w: tensor<4x8xf32>) -> (tensor<8x2xf32>, tensor<8x8xf32>) {
  // expected-remark @+1 {{tile-fold-views: forward: split stays a copy: a part would not start 16-byte aligned}}
  %a, %b, %c = tile.fused %x : (tensor<8x6xf32>) -> (tensor<8x2xf32>, tensor<8x2xf32>, tensor<8x2xf32>) {
  ^bb0(%i: tensor<8x6xf32>):
    %p:3 = nn.split %i : (tensor<8x6xf32>) -> (tensor<8x2xf32>, tensor<8x2xf32>, tensor<8x2xf32>)
    tile.yield %p#0, %p#1, %p#2 : tensor<8x2xf32>, tensor<8x2xf32>, tensor<8x2xf32>
  }
  %s = tile.fused %a, %b : (tensor<8x2xf32>, tensor<8x2xf32>) -> tensor<8x2xf32> {
  ^bb0(%i: tensor<8x2xf32>, %j: tensor<8x2xf32>):
    %y = nn.add %i, %j : (tensor<8x2xf32>, tensor<8x2xf32>) -> tensor<8x2xf32>
    tile.yield %y : tensor<8x2xf32>
  }
  %g = tile.gemm %z, %w {batch = 1 : i64, m = 8 : i64, n = 4 : i64, k = 8 : i64, transpose_b} : (tensor<8x8xf32>, tensor<4x8xf32>) -> tensor<8x4xf32>
  // expected-remark @+1 {{tile-fold-views: forward: concat stays a copy: input #0 comes from 'tile.gemm', which writes it contiguous}}
  %cat = tile.fused %g, %g : (tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<8x8xf32> {
  ^bb0(%i: tensor<8x4xf32>, %j: tensor<8x4xf32>):
    %r = nn.concat %i, %j : (tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<8x8xf32>
    tile.yield %r : tensor<8x8xf32>
  }
  return %s, %cat : tensor<8x2xf32>, tensor<8x8xf32>
}
