// RUN: kiln-opt %s --split-input-file --nn-pack-projections | FileCheck %s
// RUN: kiln-opt %s --split-input-file --nn-pack-projections=report -o /dev/null 2>&1 | FileCheck %s --check-prefix=REPORT

// Q, K and V of one input (GQA: K and V narrower) become one GEMM over the
// weights side by side, split back; their BF16 casts move before it.
// CHECK-LABEL: func.func @forward
// CHECK-DAG: %[[CQ:.+]] = nn.cast %arg3 : (tensor<64x64xf32>) -> tensor<64x64xbf16>
// CHECK-DAG: %[[CK:.+]] = nn.cast %arg4 : (tensor<32x64xf32>) -> tensor<32x64xbf16>
// CHECK-DAG: %[[CV:.+]] = nn.cast %arg5 : (tensor<32x64xf32>) -> tensor<32x64xbf16>
// CHECK: %[[W:.+]] = nn.concat %[[CQ]], %[[CK]], %[[CV]] {dim = 0 : i64} : (tensor<64x64xbf16>, tensor<32x64xbf16>, tensor<32x64xbf16>) -> tensor<128x64xbf16>
// CHECK: %[[Y:.+]] = nn.linear %[[H:.+]], %[[W]] : (tensor<2x8x64xbf16>, tensor<128x64xbf16>) -> tensor<2x8x128xbf16>
// CHECK: %[[P:.+]]:3 = nn.split %[[Y]] : (tensor<2x8x128xbf16>) -> (tensor<2x8x64xbf16>, tensor<2x8x32xbf16>, tensor<2x8x32xbf16>)
// CHECK-NOT: nn.linear %[[H]],
// CHECK: nn.attention %[[P]]#0, %[[P]]#1, %[[P]]#2

// The report, at the first projection, layers grouped.
// REPORT: "model.layers.0.self_attn.q_proj"{{.*}}: nn-pack-projections: forward, layer 0: q_proj, k_proj, v_proj in one GEMM over their weights side by side (128 outputs); the backward is one input-gradient and one weight-gradient GEMM
// REPORT: "g"{{.*}}: nn-pack-projections: forward: g, u in one GEMM over their weights side by side (32 outputs); the backward is one input-gradient and one weight-gradient GEMM
// REPORT-NOT: remark

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

// -----

// Biases (Qwen2) are packed with their weights; FP32 parameters are read
// as they are.
// CHECK-LABEL: func.func @biases
// CHECK: %[[W:.+]] = nn.concat %arg1, %arg3 {dim = 0 : i64} : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<32x16xf32>
// CHECK: %[[B:.+]] = nn.concat %arg2, %arg4 {dim = 0 : i64} : (tensor<16xf32>, tensor<16xf32>) -> tensor<32xf32>
// CHECK: nn.linear %arg0, %[[W]], %[[B]] : (tensor<4x16xf32>, tensor<32x16xf32>, tensor<32xf32>) -> tensor<4x32xf32>
func.func @biases(%x: tensor<4x16xf32>,
                  %wg: tensor<16x16xf32> {kiln.param = "g.weight"}, %bg: tensor<16xf32> {kiln.param = "g.bias"},
                  %wu: tensor<16x16xf32> {kiln.param = "u.weight"}, %bu: tensor<16xf32> {kiln.param = "u.bias"}) -> (tensor<4x16xf32>, tensor<4x16xf32>) {
  %g = nn.linear %x, %wg, %bg : (tensor<4x16xf32>, tensor<16x16xf32>, tensor<16xf32>) -> tensor<4x16xf32> loc("g")
  %u = nn.linear %x, %wu, %bu : (tensor<4x16xf32>, tensor<16x16xf32>, tensor<16xf32>) -> tensor<4x16xf32> loc("u")
  return %g, %u : tensor<4x16xf32>, tensor<4x16xf32>
}

// -----

// What is not packed: a single projection; a weight that is not a
// parameter; one stored [in, out] (GPT-2's Conv1D, already packed); a cast
// that another op also reads (it could not move).
// CHECK-LABEL: func.func @unpacked
// CHECK-NOT: nn.concat
// CHECK-NOT: nn.split
func.func @unpacked(%x: tensor<4x16xf32>, %w: tensor<16x16xf32>,
                    %p: tensor<16x16xf32> {kiln.param = "p.weight"},
                    %t: tensor<16x32xf32> {kiln.param = "t.weight"},
                    %c: tensor<16x16xf32> {kiln.param = "c.weight"}) -> (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x32xf32>, tensor<4x16xbf16>, tensor<16x16xbf16>) {
  %a = nn.linear %x, %w : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
  %b = nn.linear %x, %p : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
  %d = nn.linear %x, %t {transpose_weight} : (tensor<4x16xf32>, tensor<16x32xf32>) -> tensor<4x32xf32>
  %x16 = nn.cast %x : (tensor<4x16xf32>) -> tensor<4x16xbf16>
  %c16 = nn.cast %c : (tensor<16x16xf32>) -> tensor<16x16xbf16>
  %e = nn.linear %x16, %c16 : (tensor<4x16xbf16>, tensor<16x16xbf16>) -> tensor<4x16xbf16>
  return %a, %b, %d, %e, %c16 : tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x32xf32>, tensor<4x16xbf16>, tensor<16x16xbf16>
}
