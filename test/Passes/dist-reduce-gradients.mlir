// RUN: kiln-opt %s --nn-autodiff --dist-reduce-gradients="dp=4 bucket-mb=0.0002 report=true" 2>&1 | FileCheck %s
// RUN: kiln-opt %s --nn-autodiff --dist-reduce-gradients=dp=2 | FileCheck %s --check-prefix=ONEBUCKET
// RUN: kiln-opt %s --nn-autodiff --nn-accumulate-gradients=micro-batches=2 --dist-reduce-gradients=dp=2 | FileCheck %s --check-prefix=ACCUMULATE
// RUN: kiln-opt %s --nn-autodiff --dist-reduce-gradients=dp=2 --nn-lower-to-tile --tile-plan-memory | FileCheck %s --check-prefix=TILE
// RUN: kiln-opt %s --nn-autodiff --dist-reduce-gradients | FileCheck %s --check-prefix=ONE
// RUN: kiln-opt %s --nn-autodiff --dist-reduce-gradients=single-rank=true | FileCheck %s --check-prefix=SINGLE
// RUN: kiln-opt %s --nn-autodiff --dist-reduce-gradients="dp=4 zero=1 report=true" 2>&1 | FileCheck %s --check-prefix=ZERO1
// RUN: kiln-opt %s --nn-autodiff --dist-reduce-gradients="dp=4 zero=1" --nn-fuse --nn-lower-to-tile --tile-plan-memory | FileCheck %s --check-prefix=ZERO1-TILE
// RUN: kiln-opt %S/Inputs/bf16-step.mlir --nn-autodiff --dist-reduce-gradients="dp=4 zero=1" | FileCheck %s --check-prefix=MASTER
// RUN: not kiln-opt %s --nn-autodiff --dist-reduce-gradients="dp=2 zero=2" 2>&1 | FileCheck %s --check-prefix=STAGE
// RUN: not kiln-opt %s --nn-autodiff --dist-reduce-gradients=dp=0 2>&1 | FileCheck %s --check-prefix=ZERO
// RUN: not kiln-opt %s --dist-reduce-gradients=dp=2 2>&1 | FileCheck %s --check-prefix=NOSTEP
// RUN: not kiln-opt %s --nn-autodiff --dist-reduce-gradients=dp=2 --dist-reduce-gradients=dp=2 2>&1 | FileCheck %s --check-prefix=TWICE

// Two layers and a bias. Buckets of about 210 bytes: the last layer's
// weight gradient (256 bytes) is reduced as soon as it is computed, before
// the first layer's weight gradient is; the bias and the first layer's
// weight share the second bucket. The optimizer reads the sums.

// CHECK: remark: dist-reduce-gradients: bucket 0 of 2: 1 gradients, 256 bytes (0.00 MiB), reduced over 4 ranks after the op that produces the last
// CHECK: remark: dist-reduce-gradients: bucket 1 of 2: 2 gradients, 288 bytes
// CHECK: kiln.model = {{{.*}}data_parallel = 4 : i64
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: %[[W1:[^:]+]]: tensor<8x8xf32> {kiln.param = "w1"}
// CHECK-SAME: %[[W2:[^:]+]]: tensor<8x8xf32> {kiln.param = "w2"}
// CHECK-SAME: %[[B:[^:]+]]: tensor<8xf32> {kiln.param = "b"}
// CHECK: %[[GW2:.+]] = nn.linear_weight_grad {{.*}}kiln.chunk = "W"
// CHECK-NEXT: %[[RW2:.+]] = dist.all_reduce sum %[[GW2]] : tensor<8x8xf32> over #dist.group<"dp", 4> {kiln.chunk = "W"}
// CHECK: %[[GB:.+]] = nn.column_sum
// CHECK: %[[GW1:.+]] = nn.linear_weight_grad {{.*}}kiln.chunk = "W"
// CHECK-NEXT: %[[R:.+]]:2 = dist.all_reduce sum %[[GB]], %[[GW1]] : tensor<8xf32>, tensor<8x8xf32> over #dist.group<"dp", 4> {kiln.chunk = "W"}
// CHECK-NEXT: nn.global_norm %[[R]]#1, %[[RW2]], %[[R]]#0 {kiln.chunk = "O"}
// CHECK: nn.adamw_update %[[W1]], %[[R]]#1,
// CHECK: nn.adamw_update %[[W2]], %[[RW2]],
// CHECK: nn.adamw_update %[[B]], %[[R]]#0,

// The default bucket (25 MiB) holds all three.
// ONEBUCKET: dist.all_reduce sum %{{.+}}, %{{.+}}, %{{.+}} : tensor<8x8xf32>, tensor<8xf32>, tensor<8x8xf32> over #dist.group<"dp", 2> {kiln.chunk = "W"}
// ONEBUCKET-NOT: dist.all_reduce

// Under gradient accumulation the sums are reduced, in the last
// micro-batch only.
// ACCUMULATE: %[[ACC:.+]]:3 = nn.grad_accumulate
// ACCUMULATE-NEXT: %[[SUM:.+]]:3 = dist.all_reduce sum %[[ACC]]#0, %[[ACC]]#1, %[[ACC]]#2 : {{.*}} over #dist.group<"dp", 2> {kiln.chunk = "W", last_micro_step}
// ACCUMULATE-NEXT: nn.global_norm %[[SUM]]#0, %[[SUM]]#1, %[[SUM]]#2
// ACCUMULATE: return {{.*}}, %[[SUM]]#0, %[[SUM]]#1, %[[SUM]]#2 :

// After memory planning the reduction is in place: each result at its
// operand's offset.
// TILE: %[[G1:.+]] = tile.gemm {{.*}}kiln.chunk = "W", kiln.offsets = array<i64: [[O1:[0-9]+]]>
// TILE: %[[GB:.+]] = tile.fused {{.*}}kiln.offsets = array<i64: [[O2:[0-9]+]]>
// TILE: %[[G2:.+]] = tile.gemm {{.*}}kiln.chunk = "W", kiln.offsets = array<i64: [[O3:[0-9]+]]>
// TILE: dist.all_reduce sum %[[G1]], %[[GB]], %[[G2]] : {{.*}} kiln.offsets = array<i64: [[O1]], [[O2]], [[O3]]>

// ONE: kiln.model = {{{.*}}data_parallel = 1 : i64
// ONE-NOT: dist.all_reduce

// single-rank: the reductions with one rank (each the identity), for the
// communication path's cost.
// SINGLE: kiln.model = {{{.*}}data_parallel = 1 : i64
// SINGLE: dist.all_reduce sum {{.*}} over #dist.group<"dp", 1> {kiln.chunk = "W"}

// ZeRO-1: the bucket is reduce-scattered; every update is of this rank's
// shard, with moments of ceil(n / 4) elements (64 -> 16, the bias's 8 -> 2)
// that the step takes and returns; the norm sums the ranks' shards; one
// gather after the last update gives every rank the new parameters, which
// the step returns.
// ZERO1: remark: dist-reduce-gradients: bucket 0 of 1: 3 gradients, 544 bytes (0.00 MiB), reduce-scattered over 4 ranks
// ZERO1: kiln.model = {{{.*}}data_parallel = 4 : i64{{.*}}zero = 1 : i64
// ZERO1-LABEL: func.func @train_step(
// ZERO1-SAME: tensor<16xf32> {kiln.exp_avg = "w1"}
// ZERO1-SAME: tensor<2xf32> {kiln.exp_avg = "b"}
// ZERO1: %[[S:.+]]:3 = dist.reduce_scatter sum %{{.+}}, %{{.+}}, %{{.+}} : tensor<8x8xf32>, tensor<8xf32>, tensor<8x8xf32> over #dist.group<"dp", 4> {kiln.chunk = "W"}
// ZERO1-NEXT: nn.global_norm %[[S]]#2, %[[S]]#0, %[[S]]#1 {kiln.chunk = "O", shards = 4 : i64}
// ZERO1: %[[P1:.+]], %{{.+}}, %{{.+}} = nn.adamw_update %{{.+}}, %[[S]]#2, {{.*}}shards = 4 : i64{{.*}} -> (tensor<8x8xf32>, tensor<16xf32>, tensor<16xf32>)
// ZERO1: %[[P2:.+]], %{{.+}}, %{{.+}} = nn.adamw_update
// ZERO1: %[[P3:.+]], %{{.+}}, %{{.+}} = nn.adamw_update {{.*}} -> (tensor<8xf32>, tensor<2xf32>, tensor<2xf32>)
// ZERO1-NEXT: %[[G:.+]]:3 = dist.all_gather %[[P2]], %[[P3]], %[[P1]] : tensor<8x8xf32>, tensor<8xf32>, tensor<8x8xf32> over #dist.group<"dp", 4> {kiln.chunk = "O"}
// ZERO1: return {{.*}}%[[G]]#2, %[[G]]#0, %[[G]]#1

// Fused into one multi-tensor AdamW (sharded, no compute copies) and
// planned: the gather writes the parameters in place.
// ZERO1-TILE: func.func @train_step(
// ZERO1-TILE-SAME: kiln.offset = [[W1:[0-9]+]] : i64, kiln.param = "w1"
// ZERO1-TILE-SAME: kiln.offset = [[W2:[0-9]+]] : i64, kiln.param = "w2"
// ZERO1-TILE-SAME: kiln.offset = [[B:[0-9]+]] : i64, kiln.param = "b"
// ZERO1-TILE: tile.adamw {{.*}}shards = 4 : i64
// ZERO1-TILE-NOT: compute_copies
// ZERO1-TILE: dist.all_gather {{.*}}kiln.offsets = array<i64: [[W2]], [[B]], [[W1]]>

// A master read only through one BF16 cast is sharded too (w: 30
// elements, shards of 8): the step takes its whole BF16 compute copy
// instead of the cast and the master as a shard; the new shard is rounded
// and gathered into the copy, which the step returns. v, read in FP32,
// stays whole and is gathered in place.
// MASTER-LABEL: func.func @train_step(
// MASTER-SAME: %[[W:[^:]+]]: tensor<8xf32> {kiln.param = "w"}
// MASTER-SAME: %{{[^:]+}}: tensor<10x10xf32> {kiln.param = "v"}
// MASTER-SAME: %[[COPY:[^:]+]]: tensor<10x3xbf16> {kiln.compute_copy = "w"}
// MASTER-SAME: tensor<10x3xbf16> {kiln.compute_copy = "w"})
// MASTER-NOT: nn.cast %[[W]]
// MASTER: nn.linear %{{.+}}, %[[COPY]]
// MASTER: %[[NEW:[^,]+]], %{{.+}}, %{{.+}} = nn.adamw_update %[[W]], {{.*}}shards = 4 : i64{{.*}} : (tensor<8xf32>, tensor<10x3xf32>, tensor<8xf32>, tensor<8xf32>,
// MASTER: %[[ROUNDED:.+]] = nn.cast %[[NEW]] {kiln.chunk = "O"} : (tensor<8xf32>) -> tensor<8xbf16>
// MASTER: dist.all_gather %{{.+}} : tensor<10x10xf32> over #dist.group<"dp", 4>
// MASTER: %[[GATHERED:.+]] = dist.all_gather_into %[[ROUNDED]] into %[[COPY]] : tensor<8xbf16> into tensor<10x3xbf16> -> tensor<10x3xbf16> over #dist.group<"dp", 4> {kiln.chunk = "O"}
// MASTER: return {{.*}}%[[NEW]], {{.*}}, %[[GATHERED]] :

// STAGE: dist-reduce-gradients: zero must be 0 or 1 (ZeRO stage), got 2
// ZERO: dist-reduce-gradients: dp must be at least 1, got 0
// NOSTEP: dist-reduce-gradients: no function @train_step (run nn-autodiff first)
// TWICE: dist-reduce-gradients: @train_step already reduces its gradients

module attributes {kiln.model = {batch = 1 : i64}} {
func.func @forward(%x: tensor<1x4x8xf32> {kiln.input = "x"}, %t: tensor<1x4xi32> {kiln.input = "targets"},
                   %w1: tensor<8x8xf32> {kiln.param = "w1"}, %w2: tensor<8x8xf32> {kiln.param = "w2"}, %b: tensor<8xf32> {kiln.param = "b"}) -> tensor<f32> {
  %h = nn.linear %x, %w1 : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %y = nn.linear %h, %w2, %b : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %loss = nn.cross_entropy %y, %t : (tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
}
