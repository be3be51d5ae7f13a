// RUN: kiln-translate --tile-to-cuda %s | FileCheck %s
// RUN: kiln-opt %s --tile-plan-memory | kiln-translate --tile-to-plan | FileCheck %s --check-prefix=PLAN

// BF16 attention with a tensor-core head dim lowers to the FlashAttention-2
// kernels with the op's tile sizes as compile-time constants: a warp per 16
// query rows forward, per 16 keys backward. The backward zeroes an FP32 dq
// accumulator in the delta kernel and finishes dq after the main kernel.
// FP32 storage keeps the exact per-row kernels.

// CHECK-LABEL: // ----- kernel kiln_attention_bwd_delta_bf16
// CHECK: (const __nv_bfloat16 *__restrict__ dout, const __nv_bfloat16 *__restrict__ out, float *delta, long long batch, long long seq, long long heads, long long headDim, float *dqAccum)
// CHECK-NEXT: kiln::dev::attentionBackwardPreprocess<__nv_bfloat16, 32>(dout, out, delta, (int)batch, (int)seq, (int)heads, (int)headDim, dqAccum);
// CHECK-LABEL: // ----- kernel kiln_attention_bwd_delta_f32
// CHECK: (const float *__restrict__ dout, const float *__restrict__ out, float *delta, long long batch, long long seq, long long heads, long long headDim)
// CHECK-NEXT: kiln::dev::attentionBackwardPreprocess<float, 32>(dout, out, delta, (int)batch, (int)seq, (int)heads, (int)headDim, nullptr);
// CHECK-LABEL: // ----- kernel kiln_attention_bwd_kv_f32_d64
// CHECK: kiln::dev::attentionBackwardKeyValue<float, 64, 128>(
// CHECK-LABEL: // ----- kernel kiln_attention_bwd_q_f32_d64
// CHECK-LABEL: // ----- kernel kiln_attention_fwd_f32_d64
// CHECK: kiln::dev::attentionForward<float, 64, 128>(

// CHECK-LABEL: // ----- kernel kiln_flash_attention_bwd_d64_q32_k64
// CHECK: extern "C" __global__ void __launch_bounds__(128, 1)
// CHECK-NEXT: kiln_flash_attention_bwd_d64_q32_k64(const __nv_bfloat16 *__restrict__ dout, const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ v, const float *__restrict__ lse, const float *delta, float *dqAccum, __nv_bfloat16 *__restrict__ dk, __nv_bfloat16 *__restrict__ dv, long long batch, long long seq, long long heads, long long kvHeads, float scale, long long causal, const int *cuSeqlens, long long numCuSeqlens)
// CHECK-NEXT: kiln::dev::flashAttentionBackward<64, 32, 64>(dout, q, k, v, lse, delta, dqAccum, dk, dv, (int)batch, (int)seq, (int)heads, (int)kvHeads, scale, causal != 0, cuSeqlens, (int)numCuSeqlens);

// Host-planned tiles (48x48, one warp) are fitted to the kernels: the
// backward's key block to a power of two, warps to the rows.
// CHECK-LABEL: // ----- kernel kiln_flash_attention_bwd_d64_q48_k32
// CHECK: __launch_bounds__(64, 1)
// CHECK-LABEL: // ----- kernel kiln_flash_attention_bwd_dq_bf16
// CHECK: kiln::dev::flashAttentionFinishDq<__nv_bfloat16>(dqAccum, dq, n, scale);
// CHECK-LABEL: // ----- kernel kiln_flash_attention_fwd_d64_q48_k48_s1
// CHECK: __launch_bounds__(96, 1)
// CHECK-LABEL: // ----- kernel kiln_flash_attention_fwd_d64_q64_k32_s2
// CHECK: extern "C" __global__ void __launch_bounds__(128, 1)
// CHECK: kiln::dev::flashAttentionForward<64, 64, 32, 2>(q, k, v, out, lse, (int)batch, (int)seq, (int)heads, (int)kvHeads, scale, causal != 0, cuSeqlens, (int)numCuSeqlens);

// Launches: forward grid (ceil(100 / 64), heads, batch) with (64 + 2 x 2 x
// 32) x 64 x 2 bytes of dynamic shared memory; backward grid (ceil(100 /
// 64), kv heads, batch) with the K, V, Q, dO and dS tiles and 16 bytes of
// statistics per query row; the dq accumulator after delta at a 256-byte
// boundary (2 x 4 x 100 x 4 = 3200 -> 3328) in the step's scratch, which
// the plan's scratch covers (3328 + 2 x 100 x 256 x 4).
// PLAN: "scratch_bytes": 208128
// PLAN: "grid": [
// PLAN-NEXT: 2,
// PLAN-NEXT: 4,
// PLAN-NEXT: 2
// PLAN: "kernel": "kiln_flash_attention_fwd_d64_q64_k32_s2",
// PLAN-NEXT: "min_compute_capability": 80,
// PLAN-NEXT: "shared_bytes": 24576
// PLAN: "kernel": "flash_attention_fwd"
// PLAN: "scratch": 3328
// PLAN: "kernel": "kiln_attention_bwd_delta_bf16"
// PLAN: "scratch": 3328
// PLAN: "grid": [
// PLAN-NEXT: 2,
// PLAN-NEXT: 2,
// PLAN-NEXT: 2
// PLAN: "kernel": "kiln_flash_attention_bwd_d64_q32_k64",
// PLAN-NEXT: "min_compute_capability": 80,
// PLAN-NEXT: "shared_bytes": 29184
// PLAN: "scratch": 3328
// PLAN: "kernel": "kiln_flash_attention_bwd_dq_bf16"
// PLAN: "kernel": "flash_attention_bwd"
// PLAN: "scratch_bytes": 208128

module attributes {kiln.model = {vocab_size = 16 : i64}} {
  func.func @train_step(%q: tensor<2x100x256xbf16> {kiln.input = "q"}, %k: tensor<2x100x128xbf16> {kiln.input = "k"},
                        %qf: tensor<2x100x256xf32> {kiln.input = "qf"})
      -> (tensor<2x100x256xbf16> {kiln.output = "dq"}, tensor<2x100x128xbf16> {kiln.output = "dk"},
          tensor<2x100x256xbf16> {kiln.output = "dq2"}, tensor<2x100x256xf32> {kiln.output = "dqf"}) {
    %o, %lse = tile.flash_attention_fwd %q, %k, %k {block_q = 64 : i64, block_k = 32 : i64, num_warps = 4 : i64, num_stages = 2 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64} : (tensor<2x100x256xbf16>, tensor<2x100x128xbf16>, tensor<2x100x128xbf16>) -> (tensor<2x100x256xbf16>, tensor<2x4x100xf32>)
    %dq, %dk, %dv = tile.flash_attention_bwd %o, %q, %k, %k, %o, %lse {block_q = 32 : i64, block_k = 64 : i64, num_warps = 4 : i64, num_stages = 1 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64}
        : (tensor<2x100x256xbf16>, tensor<2x100x256xbf16>, tensor<2x100x128xbf16>, tensor<2x100x128xbf16>, tensor<2x100x256xbf16>, tensor<2x4x100xf32>)
        -> (tensor<2x100x256xbf16>, tensor<2x100x128xbf16>, tensor<2x100x128xbf16>)
    %o2, %lse2 = tile.flash_attention_fwd %q, %k, %k {block_q = 48 : i64, block_k = 48 : i64, num_warps = 1 : i64, num_stages = 1 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : (tensor<2x100x256xbf16>, tensor<2x100x128xbf16>, tensor<2x100x128xbf16>) -> (tensor<2x100x256xbf16>, tensor<2x4x100xf32>)
    %dq2, %dk2, %dv2 = tile.flash_attention_bwd %o2, %q, %k, %k, %o2, %lse2 {block_q = 48 : i64, block_k = 48 : i64, num_warps = 1 : i64, num_stages = 1 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64}
        : (tensor<2x100x256xbf16>, tensor<2x100x256xbf16>, tensor<2x100x128xbf16>, tensor<2x100x128xbf16>, tensor<2x100x256xbf16>, tensor<2x4x100xf32>)
        -> (tensor<2x100x256xbf16>, tensor<2x100x128xbf16>, tensor<2x100x128xbf16>)
    %of, %lsef = tile.flash_attention_fwd %qf, %qf, %qf {block_q = 64 : i64, block_k = 64 : i64, num_warps = 4 : i64, num_stages = 2 : i64, num_heads = 4 : i64, num_kv_heads = 4 : i64} : (tensor<2x100x256xf32>, tensor<2x100x256xf32>, tensor<2x100x256xf32>) -> (tensor<2x100x256xf32>, tensor<2x4x100xf32>)
    %dqf, %dkf, %dvf = tile.flash_attention_bwd %of, %qf, %qf, %qf, %of, %lsef {block_q = 64 : i64, block_k = 64 : i64, num_warps = 4 : i64, num_stages = 1 : i64, num_heads = 4 : i64, num_kv_heads = 4 : i64}
        : (tensor<2x100x256xf32>, tensor<2x100x256xf32>, tensor<2x100x256xf32>, tensor<2x100x256xf32>, tensor<2x100x256xf32>, tensor<2x4x100xf32>)
        -> (tensor<2x100x256xf32>, tensor<2x100x256xf32>, tensor<2x100x256xf32>)
    return %dq, %dk, %dq2, %dqf : tensor<2x100x256xbf16>, tensor<2x100x128xbf16>, tensor<2x100x256xbf16>, tensor<2x100x256xf32>
  }
}
