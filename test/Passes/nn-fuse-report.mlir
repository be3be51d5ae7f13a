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

// -----

// linear-cross-entropy: the fused LM head at the head's location, with its
// chunks and the bytes it does not store.
func.func @lm_head(%h: tensor<2x64x32xf32>, %w: tensor<512x32xf32>, %t: tensor<2x64xi32>) -> (tensor<f32>, tensor<2x64x32xf32>, tensor<512x32xf32>) {
  // expected-remark @+1 {{nn-fuse: backward: LM head + cross_entropy + their gradients as one op over 2 chunks of 64 tokens (linear-cross-entropy): the [128, 512] logits and their gradient (262144 bytes each) never stored, 131072 bytes of FP32 scratch}}
  %logits = nn.linear %h, %w {kiln.chunk = "F"} : (tensor<2x64x32xf32>, tensor<512x32xf32>) -> tensor<2x64x512xf32>
  %loss = nn.cross_entropy %logits, %t {kiln.chunk = "F"} : (tensor<2x64x512xf32>, tensor<2x64xi32>) -> tensor<f32>
  %one = arith.constant {kiln.chunk = "B"} dense<1.0> : tensor<f32>
  %dl = nn.cross_entropy_grad %one, %logits, %t {kiln.chunk = "B"} : (tensor<f32>, tensor<2x64x512xf32>, tensor<2x64xi32>) -> tensor<2x64x512xf32>
  %dh = nn.linear %dl, %w {kiln.chunk = "B", transpose_weight} : (tensor<2x64x512xf32>, tensor<512x32xf32>) -> tensor<2x64x32xf32>
  %dw = nn.linear_weight_grad %dl, %h {kiln.chunk = "W"} : (tensor<2x64x512xf32>, tensor<2x64x32xf32>) -> tensor<512x32xf32>
  return %loss, %dh, %dw : tensor<f32>, tensor<2x64x32xf32>, tensor<512x32xf32>
}

// -----

// What may not fuse says why, at the loss gradient: a bias on the LM head,
// and logits that another op reads.
func.func @biased_head(%h: tensor<8x16xf32>, %w: tensor<32x16xf32>, %b: tensor<32xf32>, %t: tensor<8xi32>) -> (tensor<f32>, tensor<8x32xf32>) {
  %logits = nn.linear %h, %w, %b {kiln.chunk = "F"} : (tensor<8x16xf32>, tensor<32x16xf32>, tensor<32xf32>) -> tensor<8x32xf32>
  %loss = nn.cross_entropy %logits, %t {kiln.chunk = "F"} : (tensor<8x32xf32>, tensor<8xi32>) -> tensor<f32>
  %one = arith.constant {kiln.chunk = "B"} dense<1.0> : tensor<f32>
  // expected-remark @+1 {{nn-fuse: backward: the LM head, its loss and their gradients stay apart (linear-cross-entropy): the LM head has a bias}}
  %dl = nn.cross_entropy_grad %one, %logits, %t {kiln.chunk = "B"} : (tensor<f32>, tensor<8x32xf32>, tensor<8xi32>) -> tensor<8x32xf32>
  return %loss, %dl : tensor<f32>, tensor<8x32xf32>
}

// -----

func.func @logits_escape(%h: tensor<8x16xf32>, %w: tensor<32x16xf32>, %t: tensor<8xi32>) -> (tensor<f32>, tensor<8x32xf32>, tensor<8x32xf32>) {
  %logits = nn.linear %h, %w {kiln.chunk = "F"} : (tensor<8x16xf32>, tensor<32x16xf32>) -> tensor<8x32xf32>
  %loss = nn.cross_entropy %logits, %t {kiln.chunk = "F"} : (tensor<8x32xf32>, tensor<8xi32>) -> tensor<f32>
  %one = arith.constant {kiln.chunk = "B"} dense<1.0> : tensor<f32>
  // expected-remark @+1 {{nn-fuse: backward: the LM head, its loss and their gradients stay apart (linear-cross-entropy): the logits have another consumer, 'func.return'}}
  %dl = nn.cross_entropy_grad %one, %logits, %t {kiln.chunk = "B"} : (tensor<f32>, tensor<8x32xf32>, tensor<8xi32>) -> tensor<8x32xf32>
  return %loss, %logits, %dl : tensor<f32>, tensor<8x32xf32>, tensor<8x32xf32>
}

// -----

func.func @dynamic_tokens(%h: tensor<?x16xf32>, %w: tensor<32x16xf32>, %t: tensor<?xi32>) -> (tensor<f32>, tensor<?x16xf32>, tensor<32x16xf32>) {
  %logits = nn.linear %h, %w {kiln.chunk = "F"} : (tensor<?x16xf32>, tensor<32x16xf32>) -> tensor<?x32xf32>
  %loss = nn.cross_entropy %logits, %t {kiln.chunk = "F"} : (tensor<?x32xf32>, tensor<?xi32>) -> tensor<f32>
  %one = arith.constant {kiln.chunk = "B"} dense<1.0> : tensor<f32>
  // expected-remark @+1 {{nn-fuse: backward: the LM head, its loss and their gradients stay apart (linear-cross-entropy): the LM head has a dynamic shape}}
  %dl = nn.cross_entropy_grad %one, %logits, %t {kiln.chunk = "B"} : (tensor<f32>, tensor<?x32xf32>, tensor<?xi32>) -> tensor<?x32xf32>
  %dh = nn.linear %dl, %w {kiln.chunk = "B", transpose_weight} : (tensor<?x32xf32>, tensor<32x16xf32>) -> tensor<?x16xf32>
  %dw = nn.linear_weight_grad %dl, %h {kiln.chunk = "W"} : (tensor<?x32xf32>, tensor<?x16xf32>) -> tensor<32x16xf32>
  return %loss, %dh, %dw : tensor<f32>, tensor<?x16xf32>, tensor<32x16xf32>
}

// -----

func.func @layer_norm_param_grads(%dy: tensor<2x8x32xf32>, %x: tensor<2x8x32xf32>) -> (tensor<32xf32>, tensor<32xf32>) {
  // expected-remark @+1 {{nn-fuse: backward: layer_norm_weight_grad + the bias gradient (column_sum) as one kernel (norm-param-grads): the gradient read once}}
  %dw = nn.layer_norm_weight_grad %dy, %x {epsilon = 1.0e-05 : f64, kiln.chunk = "W"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<32xf32>
  %db = nn.column_sum %dy {kiln.chunk = "W"} : (tensor<2x8x32xf32>) -> tensor<32xf32>
  return %dw, %db : tensor<32xf32>, tensor<32xf32>
}
