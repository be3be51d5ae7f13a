// RUN: kiln-opt %s --split-input-file --nn-autodiff --verify-diagnostics | FileCheck %s
// RUN: kiln-opt %s --split-input-file --nn-autodiff="max-grad-norm=0.5 weight-decay=0.01 beta2=0.999" --verify-diagnostics | FileCheck %s --check-prefix=OPTS

// A tied embedding, an RMSNorm and a residual projection in BF16 with FP32
// master weights: the gradient of the tied table sums its two uses, every op
// is tagged with its chunk, and the weight gradients are W work.

// CHECK-LABEL: func.func @forward(
// CHECK-NOT: kiln.chunk
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: %[[TOK:[^:]+]]: tensor<2x4xi32> {kiln.input = "tokens"}
// CHECK-SAME: %[[WTE:[^:]+]]: tensor<16x8xf32> {kiln.param = "wte"}
// CHECK-SAME: %[[G:[^:]+]]: tensor<8xf32> {kiln.param = "norm"}
// CHECK-SAME: %[[W:[^:]+]]: tensor<8x8xf32> {kiln.param = "proj"}
// CHECK-SAME: %[[M0:[^:]+]]: tensor<16x8xf32> {kiln.exp_avg = "wte"}
// CHECK-SAME: %[[V0:[^:]+]]: tensor<16x8xf32> {kiln.exp_avg_sq = "wte"}
// CHECK-SAME: %[[LR:[^:]+]]: tensor<f32> {kiln.input = "lr"}, %[[STEP:[^:]+]]: tensor<f32> {kiln.input = "step"}, %[[SCALE:[^:]+]]: tensor<f32> {kiln.input = "loss_scale"}
// CHECK-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<f32> {kiln.output = "grad_norm"}, tensor<16x8xf32> {kiln.param = "wte"}
// CHECK-SAME: tensor<8x8xf32> {kiln.exp_avg_sq = "proj"})
// CHECK: %[[WTE16:.+]] = nn.cast %[[WTE]] {kiln.chunk = "F"}
// CHECK: %[[H:.+]] = nn.embedding %[[WTE16]], %[[TOK]] {kiln.chunk = "F"}
// CHECK: %[[N:.+]] = nn.rms_norm %[[H]], %{{.+}} {kiln.chunk = "F"}
// CHECK: %[[R:.+]] = nn.add %[[H]], %{{.+}} {kiln.chunk = "F"}
// CHECK: %[[LOSS:.+]] = nn.cross_entropy {{.*}}kiln.chunk = "F"
// The backward pass starts from d loss = loss_scale (1 for one micro-batch).
// CHECK-NOT: arith.constant {{.*}}dense<1.000000e+00> : tensor<f32>
// CHECK: %[[DLOGITS:.+]] = nn.cross_entropy_grad %[[SCALE]], {{.*}}kiln.chunk = "B"
// Input gradient of the lm_head (B) and its weight gradient (W).
// CHECK: %[[DR:.+]] = nn.linear %[[DLOGITS]], %[[WTE16]] {kiln.chunk = "B", transpose_weight}
// CHECK: %[[DHEAD:.+]] = nn.linear_weight_grad %[[DLOGITS]], %[[R]] {kiln.chunk = "W"}
// CHECK: %[[DN:.+]] = nn.linear %[[DR]], %{{.+}} {kiln.chunk = "B", transpose_weight}
// CHECK: nn.linear_weight_grad %[[DR]], %[[N]] {kiln.chunk = "W"}
// CHECK: %[[DH1:.+]] = nn.rms_norm_grad %[[DN]], %[[H]], %{{.+}} {kiln.chunk = "B"}
// CHECK: nn.rms_norm_weight_grad %[[DN]], %[[H]] {kiln.chunk = "W"}
// The residual stream's two gradients are summed (B), the tied table's two
// gradients too (W).
// CHECK: %[[DH:.+]] = nn.add %[[DR]], %[[DH1]] {kiln.chunk = "B"}
// CHECK: %[[DEMB:.+]] = nn.embedding_grad %[[DH]], %[[TOK]] {kiln.chunk = "W"}
// CHECK: %[[DWTE16:.+]] = nn.add %[[DHEAD]], %[[DEMB]] {kiln.chunk = "W"}
// CHECK: %[[DWTE:.+]] = nn.cast %[[DWTE16]] {kiln.chunk = "W"} : (tensor<16x8xbf16>) -> tensor<16x8xf32>
// CHECK: %[[NORM:.+]] = nn.global_norm %[[DWTE]], {{.*}}kiln.chunk = "O"
// Weight decay for matrices, none for the norm's vector.
// CHECK: %[[P0:.+]], %[[M0N:.+]], %[[V0N:.+]] = nn.adamw_update %[[WTE]], %[[DWTE]], %[[M0]], %[[V0]], %[[LR]], %[[STEP]], %[[NORM]] {{{.*}}kiln.chunk = "O", max_grad_norm = 1.000000e+00 : f64, weight_decay = 1.000000e-01 : f64}
// CHECK: nn.adamw_update %[[G]], {{.*}}weight_decay = 0.000000e+00 : f64}
// CHECK: return %[[LOSS]], %[[NORM]], %[[P0]], {{.*}}, %[[M0N]], {{.*}}, %[[V0N]],

// OPTS-LABEL: func.func @train_step(
// OPTS: nn.adamw_update {{.*}}beta2 = 0.99899999999999999 : f64{{.*}}max_grad_norm = 5.000000e-01 : f64, weight_decay = 1.000000e-02 : f64}

func.func @forward(%tokens: tensor<2x4xi32> {kiln.input = "tokens"}, %targets: tensor<2x4xi32> {kiln.input = "targets"},
                   %wte: tensor<16x8xf32> {kiln.param = "wte"}, %g: tensor<8xf32> {kiln.param = "norm"},
                   %w: tensor<8x8xf32> {kiln.param = "proj"}) -> tensor<f32> {
  %wte16 = nn.cast %wte : (tensor<16x8xf32>) -> tensor<16x8xbf16>
  %g16 = nn.cast %g : (tensor<8xf32>) -> tensor<8xbf16>
  %w16 = nn.cast %w : (tensor<8x8xf32>) -> tensor<8x8xbf16>
  %h = nn.embedding %wte16, %tokens : (tensor<16x8xbf16>, tensor<2x4xi32>) -> tensor<2x4x8xbf16>
  %n = nn.rms_norm %h, %g16 : (tensor<2x4x8xbf16>, tensor<8xbf16>) -> tensor<2x4x8xbf16>
  %p = nn.linear %n, %w16 : (tensor<2x4x8xbf16>, tensor<8x8xbf16>) -> tensor<2x4x8xbf16>
  %r = nn.add %h, %p : (tensor<2x4x8xbf16>, tensor<2x4x8xbf16>) -> tensor<2x4x8xbf16>
  %logits = nn.linear %r, %wte16 : (tensor<2x4x8xbf16>, tensor<16x8xbf16>) -> tensor<2x4x16xbf16>
  %loss = nn.cross_entropy %logits, %targets : (tensor<2x4x16xbf16>, tensor<2x4xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// A GPT-2 style block in FP32: fused qkv split, attention, GELU, LayerNorm
// with bias. The split's gradient concatenates the three parts; the bias
// gradients are column sums (W); the data input gets no gradient.

// CHECK-LABEL: func.func @train_step(
// CHECK: %[[QKV:.+]]:3 = nn.split %{{.+}} {kiln.chunk = "F"}
// CHECK: nn.gelu_grad {{.*}} approximate = tanh {kiln.chunk = "B"}
// CHECK: %[[DQ:.+]], %[[DK:.+]], %[[DV:.+]] = nn.attention_grad %{{.+}}, %[[QKV]]#0, %[[QKV]]#1, %[[QKV]]#2 {causal, kiln.chunk = "B", num_heads = 2 : i64, num_kv_heads = 2 : i64}
// CHECK: %[[DQKV:.+]] = nn.concat %[[DQ]], %[[DK]], %[[DV]] {kiln.chunk = "B"}
// CHECK: nn.linear %[[DQKV]], {{.*}}kiln.chunk = "B"
// CHECK: nn.linear_weight_grad %[[DQKV]], {{.*}}kiln.chunk = "W", transpose_weight}
// CHECK: nn.column_sum %[[DQKV]] {kiln.chunk = "W"}
// The block's input is data, not a parameter: no gradient flows into it.
// CHECK-NOT: nn.layer_norm_grad
// CHECK: nn.layer_norm_weight_grad {{.*}}kiln.chunk = "W"
// CHECK: nn.column_sum {{.*}}kiln.chunk = "W"
func.func @forward(%x: tensor<1x4x8xf32> {kiln.input = "x"}, %t: tensor<1x4xi32>,
                   %lnw: tensor<8xf32> {kiln.param = "ln.weight"}, %lnb: tensor<8xf32> {kiln.param = "ln.bias"},
                   %wqkv: tensor<8x24xf32> {kiln.param = "c_attn.weight"}, %bqkv: tensor<24xf32> {kiln.param = "c_attn.bias"}) -> tensor<f32> {
  %n = nn.layer_norm %x, %lnw, %lnb : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %qkv = nn.linear %n, %wqkv, %bqkv {transpose_weight} : (tensor<1x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<1x4x24xf32>
  %q, %k, %v = nn.split %qkv : (tensor<1x4x24xf32>) -> (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>)
  %a = nn.attention %q, %k, %v {causal, num_heads = 2 : i64, num_kv_heads = 2 : i64} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %g = nn.gelu %a approximate = tanh : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %loss = nn.cross_entropy %g, %t : (tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// RoPE's gradient is the inverse rotation; SwiGLU's gradient has one op for
// both operands; a parameter that never reaches the loss gets a zero
// gradient and a warning.

// CHECK-LABEL: func.func @train_step(
// CHECK: nn.swiglu_grad {{.*}}kiln.chunk = "B"
// CHECK: nn.rope %{{.+}} positions(%{{.+}}) {inverse, kiln.chunk = "B", num_heads = 2 : i64}
// CHECK: %[[ZERO:.+]] = arith.constant {kiln.chunk = "W"} dense<0.000000e+00> : tensor<4xf32>
// CHECK: nn.global_norm {{.*}}%[[ZERO]]
// expected-warning @+1 {{nn-autodiff: parameter 'unused' does not affect the loss; its gradient is 0}}
func.func @forward(%x: tensor<1x4x8xf32>, %pos: tensor<1x4xi32>, %t: tensor<1x4xi32>,
                   %w: tensor<8x8xf32> {kiln.param = "w"}, %unused: tensor<4xf32> {kiln.param = "unused"}) -> tensor<f32> {
  %y = nn.linear %x, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %r = nn.rope %y positions(%pos) {num_heads = 2 : i64} : (tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
  %s = nn.swiglu %r, %y : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %loss = nn.cross_entropy %s, %t : (tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// An op without a gradient on the path from a parameter to the loss.
func.func @forward(%x: tensor<4x128xf32>, %t: tensor<4xi32>, %w: tensor<128x128xf32> {kiln.param = "w"}) -> tensor<f32> {
  %y = nn.linear %x, %w : (tensor<4x128xf32>, tensor<128x128xf32>) -> tensor<4x128xf32>
  %q, %s = nn.quantize %y {tile_shape = array<i64: 1, 128>} : (tensor<4x128xf32>) -> (tensor<4x128xf8E4M3FN>, tensor<4x1xf32>)
  // expected-error @+1 {{'nn.dequantize' op is on the path from a parameter to the loss but has no gradient}}
  %d = nn.dequantize %q, %s {tile_shape = array<i64: 1, 128>} : (tensor<4x128xf8E4M3FN>, tensor<4x1xf32>) -> tensor<4x128xf32>
  %loss = nn.cross_entropy %d, %t : (tensor<4x128xf32>, tensor<4xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Parameters must be FP32 master weights.
// expected-error @+1 {{nn-autodiff: parameter 'w' must be an FP32 tensor (the master weights), got 'tensor<4x4xbf16>'}}
func.func @forward(%x: tensor<1x4xbf16>, %t: tensor<1xi32>, %w: tensor<4x4xbf16> {kiln.param = "w"}) -> tensor<f32> {
  %y = nn.linear %x, %w : (tensor<1x4xbf16>, tensor<4x4xbf16>) -> tensor<1x4xbf16>
  %loss = nn.cross_entropy %y, %t : (tensor<1x4xbf16>, tensor<1xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// The forward function must return the scalar loss.
func.func @forward(%x: tensor<1x4xf32>, %w: tensor<4x4xf32> {kiln.param = "w"}) -> tensor<1x4xf32> {
  %y = nn.linear %x, %w : (tensor<1x4xf32>, tensor<4x4xf32>) -> tensor<1x4xf32>
  // expected-error @+1 {{nn-autodiff: expects the forward function to return the loss, a single tensor<f32>}}
  return %y : tensor<1x4xf32>
}

// -----

// expected-error @+1 {{nn-autodiff: no function @forward to differentiate}}
module {
  func.func @model(%x: tensor<f32>) -> tensor<f32> {
    return %x : tensor<f32>
  }
}

// -----

// expected-error @+1 {{nn-autodiff: no argument is marked kiln.param, so there is nothing to train}}
func.func @forward(%l: tensor<1x4xf32>, %t: tensor<1xi32>) -> tensor<f32> {
  %loss = nn.cross_entropy %l, %t : (tensor<1x4xf32>, tensor<1xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
