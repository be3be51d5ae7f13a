// RUN: kiln-opt %s --split-input-file --nn-fuse | FileCheck %s
// RUN: kiln-opt %s --split-input-file --nn-fuse="gemm-epilogue=false" | FileCheck %s --check-prefix=OFF
// RUN: kiln-opt %s --split-input-file --nn-fuse="report" --verify-diagnostics -o /dev/null

// nn-fuse's gemm-epilogue group: GELU (tanh) with the bias of the linear
// layer before it, GELU's input gradient with the input-gradient GEMM
// before it, and a bias gradient with the weight gradient of the same
// output gradient, each one tile.gemm with an epilogue.

// The forward GELU: the GEMM also writes the pre-activation, which the
// backward's gelu_grad reads; that gelu_grad and the GEMM producing its
// gradient become one GEMM with the dgelu_tanh epilogue; the bias gradient
// joins the weight-gradient GEMM (the gradient is A: bgrad_a).
// CHECK-LABEL: func.func @mlp(
// CHECK: %[[A:.+]], %[[PRE:.+]] = tile.gemm %arg0, %arg1 bias(%arg2) {batch = 1 : i64, epilogue = "gelu_tanh", k = 32 : i64, kiln.chunk = "F", m = 16 : i64, n = 64 : i64, {{.*}}transpose_b} : (tensor<2x8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> (tensor<2x8x64xf32>, tensor<2x8x64xf32>)
// CHECK-NOT: nn.gelu
// CHECK: %[[DPRE:.+]] = tile.gemm %arg4, %arg3 aux(%[[PRE]]) {batch = 1 : i64, epilogue = "dgelu_tanh", k = 32 : i64, kiln.chunk = "B", m = 16 : i64, n = 64 : i64{{.*}}} : (tensor<2x8x32xf32>, tensor<32x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
// CHECK-NOT: nn.gelu_grad
// CHECK: %[[DW:.+]], %[[DB:.+]] = tile.gemm %[[DPRE]], %arg0 {batch = 1 : i64, epilogue = "bgrad_a", k = 16 : i64, kiln.chunk = "W", m = 64 : i64, n = 32 : i64, {{.*}}transpose_a} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>) -> (tensor<64x32xf32>, tensor<64xf32>)
// CHECK-NOT: nn.column_sum
// CHECK: return %[[A]], %[[DW]], %[[DB]]
// OFF-LABEL: func.func @mlp(
// OFF-NOT: tile.gemm
// OFF: nn.gelu
// OFF: nn.gelu_grad
// OFF: nn.column_sum
func.func @mlp(%x: tensor<2x8x32xf32>, %w: tensor<64x32xf32>, %b: tensor<64xf32>, %w2: tensor<32x64xf32>, %dy: tensor<2x8x32xf32>) -> (tensor<2x8x64xf32>, tensor<64x32xf32>, tensor<64xf32>) {
  // expected-remark @+1 {{nn-fuse: forward: linear + bias + gelu as one GEMM (gemm-epilogue gelu_tanh), which also writes the pre-activation the backward reads}}
  %h = nn.linear %x, %w, %b {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %a = nn.gelu %h approximate = tanh {kiln.chunk = "F"} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %dh = nn.linear %dy, %w2 {kiln.chunk = "B", transpose_weight} : (tensor<2x8x32xf32>, tensor<32x64xf32>) -> tensor<2x8x64xf32>
  // expected-remark @+1 {{nn-fuse: backward: input-gradient GEMM + gelu_grad as one GEMM (gemm-epilogue dgelu_tanh)}}
  %dpre = nn.gelu_grad %dh, %h approximate = tanh {kiln.chunk = "B"} : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %dw = nn.linear_weight_grad %dpre, %x {kiln.chunk = "W"} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>) -> tensor<64x32xf32>
  // expected-remark @+1 {{nn-fuse: backward: linear_weight_grad + the bias gradient (column_sum) as one GEMM (gemm-epilogue bgrad_a)}}
  %db = nn.column_sum %dpre {kiln.chunk = "W"} : (tensor<2x8x64xf32>) -> tensor<64xf32>
  return %a, %dw, %db : tensor<2x8x64xf32>, tensor<64x32xf32>, tensor<64xf32>
}

// -----

// Without a backward the GEMM writes only the activation; a weight stored
// [in, out] (GPT-2's Conv1D, transpose_weight) has the gradient as the
// weight-gradient GEMM's B: bgrad_b.
// CHECK-LABEL: func.func @inference_and_conv1d(
// CHECK: %[[A:.+]] = tile.gemm %arg0, %arg1 {batch = 1 : i64, epilogue = "gelu_tanh", {{.*}}} : (tensor<2x8x32xf32>, tensor<32x64xf32>) -> tensor<2x8x64xf32>
// CHECK: %[[DW:.+]], %[[DB:.+]] = tile.gemm %arg2, %arg3 {batch = 1 : i64, epilogue = "bgrad_b", k = 16 : i64, kiln.chunk = "W", m = 32 : i64, n = 64 : i64, {{.*}}transpose_a} : (tensor<2x8x32xf32>, tensor<2x8x64xf32>) -> (tensor<32x64xf32>, tensor<64xf32>)
// CHECK: return %[[A]], %[[DW]], %[[DB]]
func.func @inference_and_conv1d(%x: tensor<2x8x32xf32>, %w: tensor<32x64xf32>, %x2: tensor<2x8x32xf32>, %dy: tensor<2x8x64xf32>) -> (tensor<2x8x64xf32>, tensor<32x64xf32>, tensor<64xf32>) {
  // expected-remark @+1 {{nn-fuse: forward: linear + gelu as one GEMM (gemm-epilogue gelu_tanh)}}
  %h = nn.linear %x, %w {kiln.chunk = "F", transpose_weight} : (tensor<2x8x32xf32>, tensor<32x64xf32>) -> tensor<2x8x64xf32>
  %a = nn.gelu %h approximate = tanh {kiln.chunk = "F"} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  // expected-remark @+1 {{nn-fuse: backward: linear_weight_grad + the bias gradient (column_sum) as one GEMM (gemm-epilogue bgrad_b)}}
  %db = nn.column_sum %dy {kiln.chunk = "W"} : (tensor<2x8x64xf32>) -> tensor<64xf32>
  %dw = nn.linear_weight_grad %dy, %x2 {kiln.chunk = "W", transpose_weight} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>) -> tensor<32x64xf32>
  return %a, %dw, %db : tensor<2x8x64xf32>, tensor<32x64xf32>, tensor<64xf32>
}

// -----

// What must not fuse: the exact GELU (cuBLASLt's is the tanh one); a GEMM
// of 36 columns (cuBLASLt's aux matrix needs a multiple of 8); a GEMM
// output that something else reads besides gelu_grad; a bias gradient and
// a weight gradient in different chunks; a bias gradient read before the
// weight gradient's input exists.
// CHECK-LABEL: func.func @refused(
// CHECK-NOT: epilogue = "gelu_tanh"
// CHECK-NOT: epilogue = "dgelu_tanh"
// CHECK-NOT: epilogue = "bgrad
// CHECK: return
func.func @refused(%x: tensor<2x8x32xf32>, %w: tensor<64x32xf32>, %w36: tensor<36x32xf32>, %w2: tensor<32x64xf32>, %dy: tensor<2x8x32xf32>, %g: tensor<2x8x64xf32>) -> (tensor<2x8x64xf32>, tensor<2x8x36xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>, tensor<64x32xf32>, tensor<64xf32>) {
  %h = nn.linear %x, %w {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<64x32xf32>) -> tensor<2x8x64xf32>
  // expected-remark @+1 {{nn-fuse: forward: the exact GELU stays a kernel of its own (gemm-epilogue): cuBLASLt's GELU epilogue is the tanh approximation}}
  %a = nn.gelu %h {kiln.chunk = "F"} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %h36 = nn.linear %x, %w36 {kiln.chunk = "F"} : (tensor<2x8x32xf32>, tensor<36x32xf32>) -> tensor<2x8x36xf32>
  // expected-remark @+1 {{nn-fuse: forward: gelu stays a kernel of its own (gemm-epilogue): the GEMM's 36 columns are not a multiple of 8, which cuBLASLt's GELU epilogues need}}
  %a36 = nn.gelu %h36 approximate = tanh {kiln.chunk = "F"} : (tensor<2x8x36xf32>) -> tensor<2x8x36xf32>
  %dh = nn.linear %dy, %w2 {kiln.chunk = "B", transpose_weight} : (tensor<2x8x32xf32>, tensor<32x64xf32>) -> tensor<2x8x64xf32>
  // expected-remark @+1 {{nn-fuse: backward: gelu_grad stays a kernel of its own (gemm-epilogue): the GEMM's output it scales has another consumer}}
  %dpre = nn.gelu_grad %dh, %h approximate = tanh {kiln.chunk = "B"} : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %dw = nn.linear_weight_grad %g, %x {kiln.chunk = "W"} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>) -> tensor<64x32xf32>
  %db = nn.column_sum %g {kiln.chunk = "B"} : (tensor<2x8x64xf32>) -> tensor<64xf32>
  return %a, %a36, %dpre, %dh, %dw, %db : tensor<2x8x64xf32>, tensor<2x8x36xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>, tensor<64x32xf32>, tensor<64xf32>
}

// -----

// CHECK-LABEL: func.func @late_input(
// CHECK: nn.column_sum
// CHECK: nn.linear_weight_grad
func.func @late_input(%dy: tensor<2x8x64xf32>, %x: tensor<2x8x32xf32>) -> (tensor<64x32xf32>, tensor<64xf32>) {
  // expected-remark @+1 {{nn-fuse: backward: the bias gradient stays a kernel of its own (gemm-epilogue): the weight gradient's input comes after it and its result is read before the weight gradient}}
  %db = nn.column_sum %dy {kiln.chunk = "W"} : (tensor<2x8x64xf32>) -> tensor<64xf32>
  %dbb = nn.add %db, %db {kiln.chunk = "W"} : (tensor<64xf32>, tensor<64xf32>) -> tensor<64xf32>
  %x2 = nn.add %x, %x {kiln.chunk = "W"} : (tensor<2x8x32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %dw = nn.linear_weight_grad %dy, %x2 {kiln.chunk = "W"} : (tensor<2x8x64xf32>, tensor<2x8x32xf32>) -> tensor<64x32xf32>
  return %dw, %dbb : tensor<64x32xf32>, tensor<64xf32>
}
