// RUN: kiln-translate --tile-to-cuda %s | FileCheck %s
// RUN: kiln-opt %s --tile-plan-memory | kiln-translate --tile-to-plan | FileCheck %s --check-prefix=PLAN

// A multi-tensor AdamW is one kernel for up to 64 parameters: a row of
// blocks per parameter (blockIdx.y) runs the device library's grid-stride
// update on it, the scalars and hyperparameters shared.
// CHECK-LABEL: // ----- kernel kiln_adamw_x2
// CHECK: (float *__restrict__ param0, const float *__restrict__ grad0, float *__restrict__ expAvg0, float *__restrict__ expAvgSq0, long long n0, float *__restrict__ param1,
// CHECK: switch (blockIdx.y) {
// CHECK-NEXT: case 0:
// CHECK-NEXT: kiln::dev::adamw(param0, grad0, expAvg0, expAvgSq0, n0, lr, step, gradNorm, beta1, beta2, eps, weightDecay, maxGradNorm);
// CHECK: case 1:
// CHECK-NEXT: kiln::dev::adamw(param1, grad1, expAvg1, expAvgSq1, n1, lr, step, gradNorm, beta1, beta2, eps, weightDecay, maxGradNorm);

// One launch: as many blocks as the largest parameter needs (4096 / 256),
// two rows of them; each result written through its operand's buffer.
// PLAN: "kernel": "global_norm"
// PLAN: "launches": [
// PLAN: "grid": [
// PLAN-NEXT: 16,
// PLAN-NEXT: 2,
// PLAN-NEXT: 1
// PLAN: "kernel": "kiln_adamw_x2"
// PLAN-NOT: "kernel": "kiln_adamw
// PLAN: "kernel": "adamw"
func.func @train_step(%p0: tensor<4096xf32> {kiln.param = "a"}, %p1: tensor<64xf32> {kiln.param = "b"},
                      %m0: tensor<4096xf32> {kiln.exp_avg = "a"}, %m1: tensor<64xf32> {kiln.exp_avg = "b"},
                      %v0: tensor<4096xf32> {kiln.exp_avg_sq = "a"}, %v1: tensor<64xf32> {kiln.exp_avg_sq = "b"},
                      %lr: tensor<f32> {kiln.input = "lr"}, %step: tensor<f32> {kiln.input = "step"})
    -> (tensor<f32>, tensor<4096xf32>, tensor<64xf32>, tensor<4096xf32>, tensor<64xf32>, tensor<4096xf32>, tensor<64xf32>) {
  %g0 = tile.fused %p0 {kiln.chunk = "B"} : (tensor<4096xf32>) -> tensor<4096xf32> {
  ^bb0(%x: tensor<4096xf32>):
    %y = nn.mul %x, %x : (tensor<4096xf32>, tensor<4096xf32>) -> tensor<4096xf32>
    tile.yield %y : tensor<4096xf32>
  }
  %g1 = tile.fused %p1 {kiln.chunk = "B"} : (tensor<64xf32>) -> tensor<64xf32> {
  ^bb0(%x: tensor<64xf32>):
    %y = nn.mul %x, %x : (tensor<64xf32>, tensor<64xf32>) -> tensor<64xf32>
    tile.yield %y : tensor<64xf32>
  }
  %n = tile.global_norm %g0, %g1 {kiln.chunk = "O"} : (tensor<4096xf32>, tensor<64xf32>) -> tensor<f32>
  %r:6 = tile.adamw %p0, %p1, %g0, %g1, %m0, %m1, %v0, %v1, %lr, %step, %n {kiln.chunk = "O", beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64, max_grad_norm = 1.0 : f64}
      : (tensor<4096xf32>, tensor<64xf32>, tensor<4096xf32>, tensor<64xf32>, tensor<4096xf32>, tensor<64xf32>, tensor<4096xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>)
      -> (tensor<4096xf32>, tensor<64xf32>, tensor<4096xf32>, tensor<64xf32>, tensor<4096xf32>, tensor<64xf32>)
  return %n, %r#0, %r#1, %r#2, %r#3, %r#4, %r#5 : tensor<f32>, tensor<4096xf32>, tensor<64xf32>, tensor<4096xf32>, tensor<64xf32>, tensor<4096xf32>, tensor<64xf32>
}
