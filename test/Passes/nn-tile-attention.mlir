// RUN: kiln-opt %s --split-input-file --nn-tile-attention --verify-diagnostics | FileCheck %s --check-prefix=HOST
// RUN: kiln-opt %s --split-input-file --nn-tile-attention="target=h100" --verify-diagnostics | FileCheck %s --check-prefix=H100
// RUN: kiln-opt %s --split-input-file --nn-tile-attention="target=h100 tuning-db=%S/Inputs/tuning.json" --verify-diagnostics | FileCheck %s --check-prefix=TUNED
// RUN: not kiln-opt %s --split-input-file --nn-tile-attention="target=tpu" 2>&1 | FileCheck %s --check-prefix=TARGET
// RUN: not kiln-opt %s --split-input-file --nn-tile-attention="target=h100 tuning-db=%t.missing.json" 2>&1 | FileCheck %s --check-prefix=NODB

// Causal GQA attention with head_dim 128 (4 query heads on 2 kv heads). On
// the host the cost model keeps each tile's FP32 working set in L2 (64x64);
// on an H100 it takes 128-query blocks and 64-key blocks, double-buffered
// (96 KiB of shared memory), 8 warps. The backward reuses the forward's
// output and log-sum-exp.
// HOST-LABEL: func.func @gqa_causal
// HOST: %[[O:.+]], %[[LSE:.+]] = tile.flash_attention_fwd %arg0, %arg1, %arg2 {block_k = 64 : i64, block_q = 64 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64, num_stages = 1 : i64, num_warps = 1 : i64} : (tensor<1x1024x512xbf16>, tensor<1x1024x256xbf16>, tensor<1x1024x256xbf16>) -> (tensor<1x1024x512xbf16>, tensor<1x4x1024xf32>)
// HOST-NOT: tile.flash_attention_fwd
// HOST: tile.flash_attention_bwd %arg3, %arg0, %arg1, %arg2, %[[O]], %[[LSE]] {block_k = 64 : i64, block_q = 64 : i64, causal,
// H100-LABEL: func.func @gqa_causal
// H100: tile.flash_attention_fwd {{.*}}{block_k = 64 : i64, block_q = 128 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64, num_stages = 2 : i64, num_warps = 8 : i64}
// The backward owns 128-key blocks (a warp per 16 keys) against 64-query
// tiles, one stage.
// H100: tile.flash_attention_bwd {{.*}}{block_k = 128 : i64, block_q = 64 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64, num_stages = 1 : i64, num_warps = 8 : i64}
// The tuning database's entry nearest in sequence length wins over the model.
// TUNED-LABEL: func.func @gqa_causal
// TUNED: tile.flash_attention_fwd {{.*}}{block_k = 32 : i64, block_q = 64 : i64, causal, num_heads = 4 : i64, num_kv_heads = 2 : i64, num_stages = 3 : i64, num_warps = 4 : i64}
func.func @gqa_causal(%q: tensor<1x1024x512xbf16>, %k: tensor<1x1024x256xbf16>, %v: tensor<1x1024x256xbf16>, %do: tensor<1x1024x512xbf16>)
    -> (tensor<1x1024x512xbf16>, tensor<1x1024x512xbf16>) {
  %o = nn.attention %q, %k, %v {causal, num_heads = 4 : i64, num_kv_heads = 2 : i64} : (tensor<1x1024x512xbf16>, tensor<1x1024x256xbf16>, tensor<1x1024x256xbf16>) -> tensor<1x1024x512xbf16>
  %dq, %dk, %dv = nn.attention_grad %do, %q, %k, %v {causal, num_heads = 4 : i64, num_kv_heads = 2 : i64}
      : (tensor<1x1024x512xbf16>, tensor<1x1024x512xbf16>, tensor<1x1024x256xbf16>, tensor<1x1024x256xbf16>) -> (tensor<1x1024x512xbf16>, tensor<1x1024x256xbf16>, tensor<1x1024x256xbf16>)
  return %o, %dq : tensor<1x1024x512xbf16>, tensor<1x1024x512xbf16>
}

// -----

// Head dim 64, not causal: the host affords 128x128 tiles; an H100 128-key
// blocks. A short sequence caps the blocks (24 rounds up to 32).
// HOST-LABEL: func.func @mha
// HOST: tile.flash_attention_fwd {{.*}}{block_k = 128 : i64, block_q = 128 : i64, num_heads = 2 : i64, num_kv_heads = 2 : i64
// HOST: tile.flash_attention_fwd {{.*}}{block_k = 32 : i64, block_q = 32 : i64, num_heads = 2 : i64
// H100-LABEL: func.func @mha
// H100: tile.flash_attention_fwd {{.*}}{block_k = 128 : i64, block_q = 128 : i64, num_heads = 2 : i64, num_kv_heads = 2 : i64, num_stages = 2 : i64, num_warps = 8 : i64}
// H100: tile.flash_attention_fwd {{.*}}{block_k = 32 : i64, block_q = 32 : i64, num_heads = 2 : i64, num_kv_heads = 2 : i64, num_stages = 2 : i64, num_warps = 2 : i64}
func.func @mha(%q: tensor<2x512x128xf32>, %s: tensor<2x24x128xf32>) -> (tensor<2x512x128xf32>, tensor<2x24x128xf32>) {
  %o = nn.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<2x512x128xf32>, tensor<2x512x128xf32>, tensor<2x512x128xf32>) -> tensor<2x512x128xf32>
  %p = nn.attention %s, %s, %s {num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<2x24x128xf32>, tensor<2x24x128xf32>, tensor<2x24x128xf32>) -> tensor<2x24x128xf32>
  return %o, %p : tensor<2x512x128xf32>, tensor<2x24x128xf32>
}

// -----

// Packed sequences keep their document offsets; an attention_grad with no
// forward to reuse recomputes the statistics with its own forward kernel.
// HOST-LABEL: func.func @varlen_grad_alone
// HOST: %[[O:.+]], %[[LSE:.+]] = tile.flash_attention_fwd %arg1, %arg2, %arg2 cu_seqlens(%arg3)
// HOST: tile.flash_attention_bwd %arg0, %arg1, %arg2, %arg2, %[[O]], %[[LSE]] cu_seqlens(%arg3) {block_k = 128 : i64, block_q = 128 : i64, causal
func.func @varlen_grad_alone(%do: tensor<1x256x64xf32>, %q: tensor<1x256x64xf32>, %k: tensor<1x256x64xf32>, %cu: tensor<4xi32>) -> tensor<1x256x64xf32> {
  %dq, %dk, %dv = nn.attention_grad %do, %q, %k, %k cu_seqlens(%cu) {causal, num_heads = 1 : i64, num_kv_heads = 1 : i64}
      : (tensor<1x256x64xf32>, tensor<1x256x64xf32>, tensor<1x256x64xf32>, tensor<1x256x64xf32>, tensor<4xi32>) -> (tensor<1x256x64xf32>, tensor<1x256x64xf32>, tensor<1x256x64xf32>)
  return %dq : tensor<1x256x64xf32>
}

// -----

func.func @dynamic(%q: tensor<1x?x64xf32>) -> tensor<1x?x64xf32> {
  // expected-error @+1 {{nn-tile-attention needs static shapes, got 'tensor<1x?x64xf32>'}}
  %o = nn.attention %q, %q, %q {num_heads = 1 : i64, num_kv_heads = 1 : i64} : (tensor<1x?x64xf32>, tensor<1x?x64xf32>, tensor<1x?x64xf32>) -> tensor<1x?x64xf32>
  return %o : tensor<1x?x64xf32>
}

// TARGET: error: nn-tile-attention: unknown target 'tpu' (known: host, a100, h100, h200)
// NODB: error: nn-tile-attention: {{.*}}missing.json: cannot read the tuning database
