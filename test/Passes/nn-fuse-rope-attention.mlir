// RUN: kiln-opt %s --split-input-file --nn-fuse | FileCheck %s
// RUN: kiln-opt %s --split-input-file --nn-fuse="rope-attention=false" | FileCheck %s --check-prefix=OFF
// RUN: kiln-opt %s --split-input-file --nn-fuse="report" --verify-diagnostics -o /dev/null

// nn-fuse's rope-attention group: the RoPE of Q and K moves into the
// attention's load and the inverse RoPE of dq and dk into its gradient's
// store, all reading one nn.rope_table per step.

// Two layers' attentions with the same positions share one table, built at
// the top of the step; the gradients take it too and return the gradients
// of the unrotated projections.
// CHECK-LABEL: func.func @layers(
// CHECK-NEXT: %[[T:.+]] = nn.rope_table positions(%arg3) {kiln.chunk = "F", theta = 5.000000e+05 : f64} : (tensor<2x8xi32>) -> tensor<2x8x16xf32>
// CHECK-NOT: nn.rope_table
// CHECK-NOT: nn.rope {{[%]}}
// CHECK: %[[O:.+]] = nn.attention %arg0, %arg1, %arg2 rope(%[[T]]) {causal, kiln.chunk = "F", num_heads = 2 : i64, num_kv_heads = 1 : i64}
// CHECK: %[[O2:.+]] = nn.attention %[[O]], %arg1, %arg2 rope(%[[T]])
// CHECK: %[[DQ:[^,]+]], %[[DK:[^,]+]], %[[DV:[^ ]+]] = nn.attention_grad %arg4, %arg0, %arg1, %arg2 rope(%[[T]]) {causal, kiln.chunk = "B", num_heads = 2 : i64, num_kv_heads = 1 : i64}
// CHECK-NOT: nn.rope {{[%]}}
// CHECK: return %[[O2]], %[[DQ]], %[[DK]], %[[DV]]
// OFF-LABEL: func.func @layers(
// OFF-NOT: nn.rope_table
// OFF-COUNT-6: nn.rope
// OFF-NOT: rope(
func.func @layers(%q: tensor<2x8x32xf32>, %k: tensor<2x8x16xf32>, %v: tensor<2x8x16xf32>, %p: tensor<2x8xi32>, %do: tensor<2x8x32xf32>) -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) {
  // expected-remark @+1 {{nn-fuse: forward: the RoPE of Q and K inside the attention's load (rope-attention); backward: the inverse RoPE of dq and dk in the gradient's store: no kernel, the rotated Q and K never stored}}
  %qr = nn.rope %q positions(%p) {kiln.chunk = "F", num_heads = 2 : i64, theta = 5.0e5 : f64} : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  %kr = nn.rope %k positions(%p) {kiln.chunk = "F", num_heads = 1 : i64, theta = 5.0e5 : f64} : (tensor<2x8x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %o = nn.attention %qr, %kr, %v {causal, kiln.chunk = "F", num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  // expected-remark @+1 {{nn-fuse: forward: the RoPE of Q and K inside the attention's load (rope-attention): no kernel, the rotated Q and K never stored}}
  %qr2 = nn.rope %o positions(%p) {kiln.chunk = "F", num_heads = 2 : i64, theta = 5.0e5 : f64} : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  %kr2 = nn.rope %k positions(%p) {kiln.chunk = "F", num_heads = 1 : i64, theta = 5.0e5 : f64} : (tensor<2x8x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %o2 = nn.attention %qr2, %kr2, %v {causal, kiln.chunk = "F", num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  %dqr, %dkr, %dv = nn.attention_grad %do, %qr, %kr, %v {causal, kiln.chunk = "B", num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>)
  %dq = nn.rope %dqr positions(%p) {inverse, kiln.chunk = "B", num_heads = 2 : i64, theta = 5.0e5 : f64} : (tensor<2x8x32xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  %dk = nn.rope %dkr positions(%p) {inverse, kiln.chunk = "B", num_heads = 1 : i64, theta = 5.0e5 : f64} : (tensor<2x8x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  return %o2, %dq, %dk, %dv : tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>
}

// -----

// Without positions the table's rows are the positions within each
// sequence; a different angle base makes a second table.
// CHECK-LABEL: func.func @no_positions(
// CHECK-DAG: nn.rope_table : () -> tensor<2x8x16xf32>
// CHECK-DAG: nn.rope_table {theta = 1.000000e+06 : f64} : () -> tensor<2x8x16xf32>
// CHECK-NOT: nn.rope {{[%]}}
func.func @no_positions(%q: tensor<2x8x32xf32>, %k: tensor<2x8x16xf32>, %v: tensor<2x8x16xf32>) -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>) {
  // expected-remark @+1 {{nn-fuse: forward, 2 kernels: the RoPE of Q and K inside the attention's load (rope-attention): no kernel, the rotated Q and K never stored}}
  %qr = nn.rope %q {num_heads = 2 : i64} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %kr = nn.rope %k {num_heads = 1 : i64} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %o = nn.attention %qr, %kr, %v {num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  // expected-note @+1 {{the same for this kernel}}
  %qr2 = nn.rope %q {num_heads = 2 : i64, theta = 1.0e6 : f64} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %kr2 = nn.rope %k {num_heads = 1 : i64, theta = 1.0e6 : f64} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %o2 = nn.attention %qr2, %kr2, %v {num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  return %o, %o2 : tensor<2x8x32xf32>, tensor<2x8x32xf32>
}

// -----

// Not fused: the rotated Q is read by more than the attention (it is
// returned), and Q and K rotated by different angle bases. The RoPEs then
// stay kernels (the rope group pairs the first two into one).
// CHECK-LABEL: func.func @refused(
// CHECK-NOT: nn.rope_table
// CHECK-NOT: rope(
// CHECK: return
func.func @refused(%q: tensor<2x8x32xf32>, %k: tensor<2x8x16xf32>, %v: tensor<2x8x16xf32>) -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>) {
  %qr = nn.rope %q {num_heads = 2 : i64} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %kr = nn.rope %k {num_heads = 1 : i64} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // expected-remark @+1 {{nn-fuse: forward: RoPE stays a kernel of its own (rope-attention): the rotated Q or K is read by more than this attention and its gradient, or a gradient is not rotated back alone}}
  %o = nn.attention %qr, %kr, %v {num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  %qr2 = nn.rope %q {num_heads = 2 : i64, theta = 1.0e6 : f64} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %kr2 = nn.rope %k {num_heads = 1 : i64} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // expected-remark @+1 {{nn-fuse: forward: RoPE stays a kernel of its own (rope-attention): Q and K rotate by different positions or angles, or the shapes are dynamic}}
  %o2 = nn.attention %qr2, %kr2, %v {num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  return %o, %o2, %qr : tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>
}

// -----

// Not fused: the gradient's dq is read by more than its inverse RoPE, so
// the rotated gradient has to be stored.
// CHECK-LABEL: func.func @gradient_read_twice(
// CHECK-NOT: nn.rope_table
// CHECK: nn.attention_grad
// CHECK-NOT: rope(
func.func @gradient_read_twice(%q: tensor<2x8x32xf32>, %k: tensor<2x8x16xf32>, %v: tensor<2x8x16xf32>, %do: tensor<2x8x32xf32>) -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x16xf32>) {
  %qr = nn.rope %q {kiln.chunk = "F", num_heads = 2 : i64} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %kr = nn.rope %k {kiln.chunk = "F", num_heads = 1 : i64} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // expected-remark @+1 {{nn-fuse: forward: RoPE stays a kernel of its own (rope-attention): the rotated Q or K is read by more than this attention and its gradient, or a gradient is not rotated back alone}}
  %o = nn.attention %qr, %kr, %v {kiln.chunk = "F", num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  %dqr, %dkr, %dv = nn.attention_grad %do, %qr, %kr, %v {kiln.chunk = "B", num_heads = 2 : i64, num_kv_heads = 1 : i64} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> (tensor<2x8x32xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>)
  %dq = nn.rope %dqr {inverse, kiln.chunk = "B", num_heads = 2 : i64} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %dk = nn.rope %dkr {inverse, kiln.chunk = "B", num_heads = 1 : i64} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  return %o, %dq, %dqr, %dk : tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x32xf32>, tensor<2x8x16xf32>
}
