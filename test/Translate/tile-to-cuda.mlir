// RUN: kiln-translate --tile-to-cuda %s | FileCheck %s
// RUN: kiln-opt %s --tile-plan-memory | kiln-translate --tile-to-plan | FileCheck %s --check-prefix=PLAN

// Kernels are emitted once per kind, dtypes and compile-time constants and
// shared by every step that launches them (two RMSNorms of one shape, one
// kernel); GEMMs go to cuBLASLt and need no source.

// (Attention kernels: tile-to-cuda-attention.mlir.)
// CHECK-LABEL: // ----- kernel kiln_ew_

// An elementwise region: 16-byte vector loads and stores of 8 elements
// (the device library's, runtime/cuda/device/Elementwise.cuh), FP32
// arithmetic, BF16 rounding of BF16 results.
// CHECK: #include "kiln_device.cuh"
// CHECK: (const __nv_bfloat16 *__restrict__ in0, const __nv_bfloat16 *__restrict__ in1, __nv_bfloat16 *__restrict__ out0, long long n)
// CHECK: constexpr int V = 8;
// CHECK: kiln::dev::loadElements<V>(in0 + base, a0);
// CHECK: t0[e] = kiln::dev::roundBf16(kiln::dev::silu(a0[e]) * a1[e]);
// CHECK: kiln::dev::storeElements<V>(out0 + base, t0);

// CHECK-LABEL: // ----- kernel kiln_rmsNorm_bf16_t32
// CHECK: kiln::dev::rmsNorm<__nv_bfloat16, 32>(x, w, y, rows, (int)dim, eps);
// CHECK-NOT: // ----- kernel kiln_rmsNorm_bf16_t32
// CHECK-NOT: gemm

// The plan carries every kernel once and, per step, its launches: grid,
// block and arguments (plan values, scratch, immediates).
// PLAN: "cuda": {
// PLAN: "header": "kiln_device.cuh",
// PLAN: "kernels": [
// PLAN: "name": "kiln_flash_attention_fwd_d16_q16_k16_s1",
// PLAN: "scratch_bytes": 0
// PLAN: "steps": [
// PLAN: "cuda": {
// PLAN-NEXT: "launches": [
// PLAN-NEXT: {
// PLAN-NEXT: "args": [
// PLAN: "block": [
// PLAN-NEXT: 32,
// PLAN: "grid": [
// PLAN-NEXT: 4,
// PLAN: "kernel": "kiln_rmsNorm_bf16_t32"
// PLAN: "cuda": {
// PLAN-NEXT: "launches": [],
// PLAN-NEXT: "library": "cublasLt"
// PLAN: "kernel": "gemm",

module attributes {kiln.model = {vocab_size = 16 : i64}} {
  func.func @train_step(%x: tensor<1x4x32xbf16> {kiln.input = "x"}, %g: tensor<32xbf16> {kiln.input = "g"},
                        %w: tensor<32x32xbf16> {kiln.input = "w"})
      -> (tensor<1x4x32xbf16> {kiln.output = "o"}) {
    %n = tile.fused %x, %g : (tensor<1x4x32xbf16>, tensor<32xbf16>) -> tensor<1x4x32xbf16> {
    ^bb0(%a: tensor<1x4x32xbf16>, %b: tensor<32xbf16>):
      %r = nn.rms_norm %a, %b : (tensor<1x4x32xbf16>, tensor<32xbf16>) -> tensor<1x4x32xbf16>
      tile.yield %r : tensor<1x4x32xbf16>
    }
    %p = tile.gemm %n, %w {batch = 1 : i64, m = 4 : i64, n = 32 : i64, k = 32 : i64, transpose_b} : (tensor<1x4x32xbf16>, tensor<32x32xbf16>) -> tensor<1x4x32xbf16>
    %o, %lse = tile.flash_attention_fwd %p, %p, %p {block_q = 16 : i64, block_k = 16 : i64, num_warps = 1 : i64, num_stages = 1 : i64, causal, num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<1x4x32xbf16>, tensor<1x4x32xbf16>, tensor<1x4x32xbf16>) -> (tensor<1x4x32xbf16>, tensor<1x2x4xf32>)
    %s = tile.fused %o, %p : (tensor<1x4x32xbf16>, tensor<1x4x32xbf16>) -> tensor<1x4x32xbf16> {
    ^bb0(%a: tensor<1x4x32xbf16>, %b: tensor<1x4x32xbf16>):
      %r = nn.swiglu %a, %b : (tensor<1x4x32xbf16>, tensor<1x4x32xbf16>) -> tensor<1x4x32xbf16>
      tile.yield %r : tensor<1x4x32xbf16>
    }
    %m = tile.fused %s, %g : (tensor<1x4x32xbf16>, tensor<32xbf16>) -> tensor<1x4x32xbf16> {
    ^bb0(%a: tensor<1x4x32xbf16>, %b: tensor<32xbf16>):
      %r = nn.rms_norm %a, %b : (tensor<1x4x32xbf16>, tensor<32xbf16>) -> tensor<1x4x32xbf16>
      tile.yield %r : tensor<1x4x32xbf16>
    }
    return %m : tensor<1x4x32xbf16>
  }
}
