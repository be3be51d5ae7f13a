// RUN: kiln-opt %s --split-input-file --nn-fuse=report --verify-diagnostics -o /dev/null

// nn-fuse's report: one remark per kind of region, at its anchor op (the
// norm, else the first op), with what it writes to memory and what it
// keeps on chip.

func.func @one(%h: tensor<2x8x32xf32>, %o: tensor<2x8x32xf32>, %w: tensor<32xf32>) -> tensor<2x8x32xf32> {
  %s = nn.add %h, %o {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  // expected-remark @+1 {{nn-fuse: forward: add + rms_norm as one kernel (residual-norm): 1 written, 1 kept on chip}}
  %n = nn.rms_norm %s, %w {epsilon = 1.0e-05 : f64, kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
  return %n : tensor<2x8x32xf32>
}

// -----

// Layers whose regions agree are one remark at the first layer's location;
// the GEMM between them keeps the layers' regions apart.
// expected-remark @unknown {{nn-fuse: forward, layers 0-1: add + rms_norm as one kernel (residual-norm): 2 written, 0 kept on chip}}
// expected-remark @unknown {{nn-fuse: backward, layer 1: rope + rope as one kernel (rope): 2 written, 0 kept on chip}}
func.func @layers(%h: tensor<2x8x32xf32>, %o: tensor<2x8x32xf32>, %w: tensor<32xf32>, %wq: tensor<32x32xf32>, %p: tensor<2x8xi32>) -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) {
  %s0 = nn.add %h, %o {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32> loc("model.layers.0")
  %n0 = nn.rms_norm %s0, %w {epsilon = 1.0e-05 : f64, kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32> loc("model.layers.0.post_attention_layernorm")
  %y = nn.linear %n0, %wq {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<32x32xf32>) -> tensor<2x8x32xf32> loc("model.layers.0.mlp")
  %s1 = nn.add %s0, %y {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32> loc("model.layers.1")
  %n1 = nn.rms_norm %s1, %w {epsilon = 1.0e-05 : f64, kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32> loc("model.layers.1.post_attention_layernorm")
  %q = nn.rope %n1 positions(%p) {inverse, kiln.chunk = "B", num_heads = 2 : i64} : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32> loc("model.layers.1.self_attn")
  %k = nn.rope %y positions(%p) {inverse, kiln.chunk = "B", num_heads = 2 : i64} : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32> loc("model.layers.1.self_attn")
  return %s1, %q, %k : tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>
}
