// RUN: kiln-opt %s --nn-tile-attention="tuning-db=%S/Inputs/tuning-huge-blocks.json" --verify-diagnostics

// A tuning database's tile sizes are bounded far above any kernel's, so
// that the kernels' workspaces (block_q x block_k scores) cannot overflow:
// a block_q of 2^40 is refused, naming the entry (it went into the IR).
func.func @attention(%q: tensor<1x128x64xbf16>) -> tensor<1x128x64xbf16> {
  // expected-error @+1 {{attention entry 0 needs target, head_dim and block_q, block_k in [1, 4096], num_warps in [1, 32] and num_stages in [1, 8]}}
  %o = nn.attention %q, %q, %q {causal, num_heads = 1 : i64, num_kv_heads = 1 : i64} : (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) -> tensor<1x128x64xbf16>
  return %o : tensor<1x128x64xbf16>
}
