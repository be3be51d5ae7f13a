// RUN: kiln-opt %s --nn-autodiff --nn-accumulate-gradients=micro-batches=4 | FileCheck %s
// RUN: kiln-opt %s --nn-autodiff --nn-accumulate-gradients | FileCheck %s --check-prefix=ONE
// RUN: kiln-opt %s --nn-autodiff --nn-accumulate-gradients=micro-batches=4 --nn-lower-to-tile --tile-plan-memory | FileCheck %s --check-prefix=TILE
// RUN: not kiln-opt %s --nn-autodiff --nn-accumulate-gradients=micro-batches=0 2>&1 | FileCheck %s --check-prefix=ZERO
// RUN: not kiln-opt %s --nn-accumulate-gradients=micro-batches=2 2>&1 | FileCheck %s --check-prefix=NOSTEP

// Two parameters: an accumulator each and the micro-step index become
// arguments, one grad_accumulate ends the W chunk, the gradient norm and
// AdamW read the sums, and the new accumulators are results.

// CHECK: kiln.model = {{{.*}}micro_batches = 4 : i64
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: %[[W:[^:]+]]: tensor<8x8xf32> {kiln.param = "w"}
// CHECK-SAME: %[[B:[^:]+]]: tensor<8xf32> {kiln.param = "b"}
// CHECK-SAME: %[[SCALE:[^:]+]]: tensor<f32> {kiln.input = "loss_scale"}
// CHECK-SAME: %[[AW:[^:]+]]: tensor<8x8xf32> {kiln.grad_accumulator = "w"}
// CHECK-SAME: %[[AB:[^:]+]]: tensor<8xf32> {kiln.grad_accumulator = "b"}
// CHECK-SAME: %[[M:[^:]+]]: tensor<f32> {kiln.input = "micro_step"}
// CHECK-SAME: tensor<8x8xf32> {kiln.grad_accumulator = "w"}, tensor<8xf32> {kiln.grad_accumulator = "b"})
// CHECK: nn.cross_entropy_grad %[[SCALE]]
// CHECK: %[[GW:.+]] = nn.linear_weight_grad {{.*}}kiln.chunk = "W"
// CHECK: %[[GB:.+]] = nn.column_sum {{.*}}kiln.chunk = "W"
// CHECK: %[[ACC:.+]]:2 = nn.grad_accumulate %[[AW]], %[[AB]], %[[GW]], %[[GB]], %[[M]] {kiln.chunk = "W"}
// CHECK-NEXT: %[[NORM:.+]] = nn.global_norm %[[ACC]]#0, %[[ACC]]#1 {kiln.chunk = "O"}
// CHECK: nn.adamw_update %[[W]], %[[ACC]]#0,
// CHECK: nn.adamw_update %[[B]], %[[ACC]]#1,
// CHECK: return {{.*}}, %[[ACC]]#0, %[[ACC]]#1 :

// With one micro-batch nothing changes but the record.
// ONE: kiln.model = {{{.*}}micro_batches = 1 : i64
// ONE-NOT: grad_accumulat
// ONE-NOT: micro_step

// After memory planning the accumulation is in place, in the persistent
// region of its arguments.
// TILE: %{{.+}}:2 = tile.grad_accumulate {{.*}}kiln.offsets = array<i64: [[OW:[0-9]+]], [[OB:[0-9]+]]>
// TILE-NOT: tile.grad_accumulate

// ZERO: nn-accumulate-gradients: micro-batches must be at least 1, got 0
// NOSTEP: nn-accumulate-gradients: no function @train_step (run nn-autodiff first)

module attributes {kiln.model = {batch = 1 : i64}} {
func.func @forward(%x: tensor<1x4x8xf32> {kiln.input = "x"}, %t: tensor<1x4xi32> {kiln.input = "targets"},
                   %w: tensor<8x8xf32> {kiln.param = "w"}, %b: tensor<8xf32> {kiln.param = "b"}) -> tensor<f32> {
  %y = nn.linear %x, %w, %b : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %loss = nn.cross_entropy %y, %t : (tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
}
