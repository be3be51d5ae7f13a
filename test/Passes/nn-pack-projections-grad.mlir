// RUN: kiln-opt %s --nn-pack-projections --nn-autodiff | FileCheck %s

// nn-autodiff of packed projections (nn-pack-projections.mlir's first
// case): the backward is one input-gradient GEMM over the packed gradient, one
// weight-gradient GEMM whose rows are the three parameters' gradients.
// CHECK-LABEL: func.func @train_step
// CHECK: %[[DQKV:.+]] = nn.concat {{.*}} : (tensor<2x8x64xbf16>, tensor<2x8x32xbf16>, tensor<2x8x32xbf16>) -> tensor<2x8x128xbf16>
// CHECK-DAG: nn.linear %[[DQKV]], %{{[^ ]+}} {{.*}}transpose_weight{{.*}} : (tensor<2x8x128xbf16>, tensor<128x64xbf16>) -> tensor<2x8x64xbf16>
// CHECK-DAG: %[[DW:.+]] = nn.linear_weight_grad %[[DQKV]], {{.*}} -> tensor<128x64xbf16>
// CHECK-DAG: nn.split %[[DW]] {dim = 0 : i64{{.*}}} : (tensor<128x64xbf16>) -> (tensor<64x64xbf16>, tensor<32x64xbf16>, tensor<32x64xbf16>)
func.func @forward(%tokens: tensor<2x8xi32> {kiln.input = "tokens"}, %targets: tensor<2x8xi32> {kiln.input = "targets"},
                   %wte: tensor<16x64xf32> {kiln.param = "model.embed_tokens.weight"},
                   %wq: tensor<64x64xf32> {kiln.param = "model.layers.0.self_attn.q_proj.weight"},
                   %wk: tensor<32x64xf32> {kiln.param = "model.layers.0.self_attn.k_proj.weight"},
                   %wv: tensor<32x64xf32> {kiln.param = "model.layers.0.self_attn.v_proj.weight"}) -> tensor<f32> {
  %wte16 = nn.cast %wte : (tensor<16x64xf32>) -> tensor<16x64xbf16>
  %x = nn.embedding %wte16, %tokens : (tensor<16x64xbf16>, tensor<2x8xi32>) -> tensor<2x8x64xbf16>
  %cq = nn.cast %wq : (tensor<64x64xf32>) -> tensor<64x64xbf16>
  %q = nn.linear %x, %cq : (tensor<2x8x64xbf16>, tensor<64x64xbf16>) -> tensor<2x8x64xbf16> loc("model.layers.0.self_attn.q_proj")
  %ck = nn.cast %wk : (tensor<32x64xf32>) -> tensor<32x64xbf16>
  %k = nn.linear %x, %ck : (tensor<2x8x64xbf16>, tensor<32x64xbf16>) -> tensor<2x8x32xbf16> loc("model.layers.0.self_attn.k_proj")
  %cv = nn.cast %wv : (tensor<32x64xf32>) -> tensor<32x64xbf16>
  %v = nn.linear %x, %cv : (tensor<2x8x64xbf16>, tensor<32x64xbf16>) -> tensor<2x8x32xbf16> loc("model.layers.0.self_attn.v_proj")
  %a = nn.attention %q, %k, %v {causal, num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x64xbf16>, tensor<2x8x32xbf16>, tensor<2x8x32xbf16>) -> tensor<2x8x64xbf16>
  %logits = nn.linear %a, %wte16 : (tensor<2x8x64xbf16>, tensor<16x64xbf16>) -> tensor<2x8x16xbf16>
  %loss = nn.cross_entropy %logits, %targets : (tensor<2x8x16xbf16>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

