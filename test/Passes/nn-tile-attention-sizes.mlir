// RUN: kiln-opt %s --split-input-file --nn-tile-attention --verify-diagnostics | FileCheck %s

// The cost model's sizes are computed in checked arithmetic: a head of 2^62
// dims has a working set too large for 64 bits, so no block fits the cache
// and the host takes the smallest (its working set wrapped to 64 KiB and
// took 128x128 blocks).
// CHECK-LABEL: func.func @huge_head
// CHECK: tile.flash_attention_fwd {{.*}}{block_k = 16 : i64, block_q = 16 : i64, causal
func.func @huge_head(%q: tensor<1x1024x4611686018427387904xbf16>) -> tensor<1x1024x4611686018427387904xbf16> {
  %o = nn.attention %q, %q, %q {causal, num_heads = 1 : i64, num_kv_heads = 1 : i64} : (tensor<1x1024x4611686018427387904xbf16>, tensor<1x1024x4611686018427387904xbf16>, tensor<1x1024x4611686018427387904xbf16>) -> tensor<1x1024x4611686018427387904xbf16>
  return %o : tensor<1x1024x4611686018427387904xbf16>
}
