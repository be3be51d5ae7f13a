// RUN: kiln-opt %s --tile-plan-memory | kiln-translate --tile-to-plan | FileCheck %s
// RUN: not kiln-translate --tile-to-plan %s 2>&1 | FileCheck %s --check-prefix=UNPLANNED

// The plan names every value with its arena offset, dtype and shape; the
// parameters with their optimizer state and gradient; the steps in order,
// fused regions with their bodies.

// CHECK: "format": "kiln-plan",
// CHECK: "inputs": [
// CHECK: "name": "tokens",
// CHECK-NEXT: "value": 0
// CHECK: "name": "lr",
// CHECK: "model": {
// CHECK-NEXT: "micro_batches": 1,
// CHECK-NEXT: "vocab_size": 16
// CHECK: "parameters": [
// CHECK-NEXT: {
// CHECK-NEXT: "exp_avg": 2,
// CHECK-NEXT: "exp_avg_sq": 3,
// CHECK-NEXT: "grad": [[GRAD:[0-9]+]],
// CHECK-NEXT: "init": "normal:0.02",
// CHECK-NEXT: "name": "wte",
// CHECK-NEXT: "value": 1
// CHECK: "steps": [
// CHECK: "body": [
// CHECK: "op": "embedding",
// CHECK-NEXT: "operands": [
// CHECK-NEXT: 0,
// CHECK-NEXT: 1
// CHECK: "chunk": "F",
// CHECK: "kernel": "fused",
// CHECK: "kernel": "fill"
// CHECK: "kernel": "cross_entropy"
// CHECK: "kernel": "embedding_grad"
// CHECK: "chunk": "O",
// CHECK: "kernel": "adamw"
// CHECK: "values": [
// CHECK: "dtype": "i32",
// CHECK-NEXT: "id": 0,
// CHECK-NEXT: "offset": 0,
// CHECK-NEXT: "shape": [
// CHECK-NEXT: 1,
// CHECK-NEXT: 4

// UNPLANNED: error: plan: argument #0 has no kiln.offset; run tile-plan-memory first

module attributes {kiln.model = {vocab_size = 16 : i64}} {
  func.func @train_step(%tokens: tensor<1x4xi32> {kiln.input = "tokens"},
                        %wte: tensor<16x8xf32> {kiln.param = "wte", kiln.init = "normal:0.02"},
                        %m: tensor<16x8xf32> {kiln.exp_avg = "wte"}, %v: tensor<16x8xf32> {kiln.exp_avg_sq = "wte"},
                        %lr: tensor<f32> {kiln.input = "lr"}, %step: tensor<f32> {kiln.input = "step"})
      -> (tensor<f32> {kiln.output = "loss"}, tensor<16x8xf32> {kiln.param = "wte"}) {
    %h = tile.fused %wte, %tokens {kiln.chunk = "F"} : (tensor<16x8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32> {
    ^bb0(%t: tensor<16x8xf32>, %ids: tensor<1x4xi32>):
      %e = nn.embedding %t, %ids : (tensor<16x8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
      tile.yield %e : tensor<1x4x8xf32>
    }
    %one = arith.constant {kiln.chunk = "B"} dense<1.0> : tensor<f32>
    %loss = tile.cross_entropy %h, %tokens {kiln.chunk = "F"} : (tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<f32>
    %dh = tile.cross_entropy_grad %one, %h, %tokens {kiln.chunk = "B"} : (tensor<f32>, tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
    %g = tile.embedding_grad %dh, %tokens {kiln.chunk = "W"} : (tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<16x8xf32>
    %n = tile.global_norm %g {kiln.chunk = "O"} : (tensor<16x8xf32>) -> tensor<f32>
    %p2, %m2, %v2 = tile.adamw %wte, %g, %m, %v, %lr, %step, %n {kiln.chunk = "O", beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64, max_grad_norm = 1.0 : f64}
        : (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>)
    return %loss, %p2 : tensor<f32>, tensor<16x8xf32>
  }
}
