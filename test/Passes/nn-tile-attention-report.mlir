// RUN: kiln-opt %s --split-input-file --nn-tile-attention="target=h100 report" --verify-diagnostics -o /dev/null

// nn-tile-attention's report: one remark per decision at the attention it
// sizes, with the source of the sizes and the cost model's prediction.

// The forward and the backward kernel of one attention, each at its op.
func.func @gqa_causal(%q: tensor<1x1024x512xbf16>, %k: tensor<1x1024x256xbf16>, %v: tensor<1x1024x256xbf16>, %do: tensor<1x1024x512xbf16>)
    -> (tensor<1x1024x512xbf16>, tensor<1x1024x512xbf16>) {
  // expected-remark-re @+1 {{nn-tile-attention: forward: batch 1, seq 1024, 4 heads (2 kv), head_dim 128, causal: block_q 128, block_k 64, 8 warps, 2 stages — cost model for h100: Q tile 128x128 + 2 stages of K and V tiles 64x128 use 96 KiB of 227 KiB shared memory; 8 warps of 16 query rows; predicted 1.07 GFLOP in {{[0-9.]+}} ms on h100}}
  %o = nn.attention %q, %k, %v {causal, num_heads = 4 : i64, num_kv_heads = 2 : i64} : (tensor<1x1024x512xbf16>, tensor<1x1024x256xbf16>, tensor<1x1024x256xbf16>) -> tensor<1x1024x512xbf16>
  // expected-remark-re @+1 {{nn-tile-attention: backward: batch 1, seq 1024, 4 heads (2 kv), head_dim 128, causal: block_q 64, block_k 128, 8 warps, 1 stages — cost model for h100: blocks of 128 keys (a warp per 16) against 64-query tiles; K, V, Q, dO and dS tiles use 113 KiB of 227 KiB shared memory{{.*}}}}
  %dq, %dk, %dv = nn.attention_grad %do, %q, %k, %v {causal, num_heads = 4 : i64, num_kv_heads = 2 : i64}
      : (tensor<1x1024x512xbf16>, tensor<1x1024x512xbf16>, tensor<1x1024x256xbf16>, tensor<1x1024x256xbf16>) -> (tensor<1x1024x512xbf16>, tensor<1x1024x256xbf16>, tensor<1x1024x256xbf16>)
  return %o, %dq : tensor<1x1024x512xbf16>, tensor<1x1024x512xbf16>
}

// -----

// The front end names every op after its Hugging Face module. Layers whose
// decisions agree are one remark that lists them (at the first layer's
// location); a layer that differs has its own. An attention that both the
// forward function and the training step hold is reported once.
// expected-remark-re @unknown {{nn-tile-attention: forward, layers 0-1, 3: batch 1, seq 128, 2 heads (2 kv), head_dim 32, causal: block_q {{.*}}}}
// expected-remark-re @unknown {{nn-tile-attention: forward, layer 2: batch 1, seq 64, 2 heads (2 kv), head_dim 32, causal: block_q {{.*}}}}
// expected-remark-re @unknown {{nn-tile-attention: backward, layers 0-1: batch 1, seq 128, 2 heads (2 kv), head_dim 32, causal: block_q {{.*}}}}
func.func @forward(%x: tensor<1x128x64xbf16>, %y: tensor<1x64x64xbf16>) -> (tensor<1x128x64xbf16>, tensor<1x64x64xbf16>) {
  %0 = nn.attention %x, %x, %x {causal, num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) -> tensor<1x128x64xbf16> loc("model.layers.0.self_attn")
  %1 = nn.attention %0, %0, %0 {causal, num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) -> tensor<1x128x64xbf16> loc("model.layers.1.self_attn")
  %2 = nn.attention %y, %y, %y {causal, num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<1x64x64xbf16>, tensor<1x64x64xbf16>, tensor<1x64x64xbf16>) -> tensor<1x64x64xbf16> loc("model.layers.2.self_attn")
  %3 = nn.attention %1, %1, %1 {causal, num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) -> tensor<1x128x64xbf16> loc("model.layers.3.self_attn")
  return %3, %2 : tensor<1x128x64xbf16>, tensor<1x64x64xbf16>
}
func.func @train_step(%x: tensor<1x128x64xbf16>, %d: tensor<1x128x64xbf16>) -> (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) {
  %0 = nn.attention %x, %x, %x {causal, num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) -> tensor<1x128x64xbf16> loc("model.layers.0.self_attn")
  %1 = nn.attention %0, %0, %0 {causal, num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) -> tensor<1x128x64xbf16> loc("model.layers.1.self_attn")
  %dq1, %dk1, %dv1 = nn.attention_grad %d, %0, %0, %0 {causal, num_heads = 2 : i64, num_kv_heads = 2 : i64}
      : (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) -> (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) loc("model.layers.1.self_attn")
  %dq0, %dk0, %dv0 = nn.attention_grad %dq1, %x, %x, %x {causal, num_heads = 2 : i64, num_kv_heads = 2 : i64}
      : (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) -> (tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>) loc("model.layers.0.self_attn")
  return %1, %dq0 : tensor<1x128x64xbf16>, tensor<1x128x64xbf16>
}

// -----

// Without layer names, agreeing attentions are still one remark, at the
// first, with a note at each of the others.
func.func @same_twice(%q: tensor<2x256x128xf32>, %k: tensor<2x256x128xf32>) -> (tensor<2x256x128xf32>, tensor<2x256x128xf32>) {
  // expected-remark-re @+1 {{nn-tile-attention: forward, 2 attentions: batch 2, seq 256, 2 heads (2 kv), head_dim 64: block_q {{.*}}}}
  %o = nn.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<2x256x128xf32>, tensor<2x256x128xf32>, tensor<2x256x128xf32>) -> tensor<2x256x128xf32>
  // expected-note @+1 {{the same for this attention}}
  %p = nn.attention %k, %k, %k {num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<2x256x128xf32>, tensor<2x256x128xf32>, tensor<2x256x128xf32>) -> tensor<2x256x128xf32>
  return %o, %p : tensor<2x256x128xf32>, tensor<2x256x128xf32>
}
