// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s

// CHECK-LABEL: func.func @collectives
func.func @collectives(%g0: tensor<64x32xf32>, %g1: tensor<32xf32>, %w: tensor<10x3xf32>) -> (tensor<64x32xf32>, tensor<32xf32>, tensor<64x32xf32>, tensor<10x3xf32>) {
  // CHECK: %[[R:.*]]:2 = dist.all_reduce sum %{{.*}}, %{{.*}} : tensor<64x32xf32>, tensor<32xf32> over #dist.group<"dp", 4> {last_micro_step}
  %r:2 = dist.all_reduce sum %g0, %g1 : tensor<64x32xf32>, tensor<32xf32> over #dist.group<"dp", 4> {last_micro_step}
  // Shards need not divide evenly: 30 elements over 4 ranks are 8, 8, 8, 6.
  // CHECK: %[[S:.*]]:2 = dist.reduce_scatter avg %{{.*}}, %{{.*}} : tensor<64x32xf32>, tensor<10x3xf32> over #dist.group<"dp", 4> {last_micro_step}
  %s:2 = dist.reduce_scatter avg %g0, %w : tensor<64x32xf32>, tensor<10x3xf32> over #dist.group<"dp", 4> {last_micro_step}
  // CHECK: dist.all_gather %[[S]]#1 : tensor<10x3xf32> over #dist.group<"dp", 4>
  %ag = dist.all_gather %s#1 : tensor<10x3xf32> over #dist.group<"dp", 4>
  return %r#0, %r#1, %s#0, %ag : tensor<64x32xf32>, tensor<32xf32>, tensor<64x32xf32>, tensor<10x3xf32>
}

// CHECK-LABEL: func.func @gather_into
func.func @gather_into(%s: tensor<8xbf16>, %c: tensor<10x3xbf16>) -> tensor<10x3xbf16> {
  // CHECK: dist.all_gather_into %{{.*}} into %{{.*}} : tensor<8xbf16> into tensor<10x3xbf16> -> tensor<10x3xbf16> over #dist.group<"dp", 4>
  %g = dist.all_gather_into %s into %c : tensor<8xbf16> into tensor<10x3xbf16> -> tensor<10x3xbf16> over #dist.group<"dp", 4>
  return %g : tensor<10x3xbf16>
}

// CHECK-LABEL: func.func @point_to_point
func.func @point_to_point(%x: tensor<2x16x64xbf16>) -> tensor<2x16x64xbf16> {
  // CHECK: dist.send %{{.*}} to 1 tag 7 : tensor<2x16x64xbf16>
  dist.send %x to 1 tag 7 : tensor<2x16x64xbf16>
  // CHECK: dist.recv from 1 tag 8 : tensor<2x16x64xbf16>
  %y = dist.recv from 1 tag 8 : tensor<2x16x64xbf16>
  return %y : tensor<2x16x64xbf16>
}

func.func @train_step() {
  return
}

// One stage on one rank, two micro-batches; and two stages on two ranks
// (1F1B-like order on each).
// CHECK: dist.schedule @train_step stages 1 micro_batches 2 ranks {{\[\[}}#dist.action<F, 0, 0>, #dist.action<B, 0, 0>, #dist.action<W, 0, 0>, #dist.action<F, 0, 1>, #dist.action<B, 0, 1>, #dist.action<W, 0, 1>, #dist.action<O, 0, 0>]]
dist.schedule @train_step stages 1 micro_batches 2 ranks [[
    #dist.action<F, 0, 0>, #dist.action<B, 0, 0>, #dist.action<W, 0, 0>,
    #dist.action<F, 0, 1>, #dist.action<B, 0, 1>, #dist.action<W, 0, 1>,
    #dist.action<O, 0, 0>]]
// CHECK: dist.schedule @train_step stages 2 micro_batches 2
dist.schedule @train_step stages 2 micro_batches 2 ranks [
    [#dist.action<F, 0, 0>, #dist.action<F, 0, 1>, #dist.action<B, 0, 0>,
     #dist.action<B, 0, 1>, #dist.action<W, 0, 0>, #dist.action<W, 0, 1>,
     #dist.action<O, 0, 0>],
    [#dist.action<F, 1, 0>, #dist.action<B, 1, 0>, #dist.action<F, 1, 1>,
     #dist.action<B, 1, 1>, #dist.action<W, 1, 1>, #dist.action<W, 1, 0>,
     #dist.action<O, 1, 0>]]
