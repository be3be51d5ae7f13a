// RUN: kiln-opt %s --split-input-file --verify-diagnostics

func.func @group_size(%g: tensor<8xf32>) {
  // expected-error @+1 {{group "dp" must hold at least one rank, got 0}}
  %r = dist.all_reduce sum %g : tensor<8xf32> over #dist.group<"dp", 0>
  return
}

// -----

func.func @reduce_nothing() {
  // expected-error @+1 {{reduces at least one tensor}}
  "dist.all_reduce"() <{group = #dist.group<"dp", 2>, reduction = 0 : i32}> : () -> ()
  return
}

// -----

func.func @reduce_ids(%g: tensor<8xi1>) {
  // expected-error @+1 {{avg needs float operands; operand #0 is 'tensor<8xi1>'}}
  %r = dist.all_reduce avg %g : tensor<8xi1> over #dist.group<"dp", 2>
  return
}

// -----

func.func @reduce_dynamic(%g: tensor<?xf32>) {
  // expected-error @+1 {{operand #0 must have a static shape, got 'tensor<?xf32>'}}
  %r = dist.all_reduce sum %g : tensor<?xf32> over #dist.group<"dp", 2>
  return
}

// -----

func.func @scatter_empty() {
  // expected-error @+1 {{reduces at least one tensor}}
  "dist.reduce_scatter"() <{group = #dist.group<"dp", 4>, reduction = 0 : i32}> : () -> ()
  return
}

// -----

func.func @scatter_avg_int(%g: tensor<16xi32>) {
  // expected-error @+1 {{avg needs float operands; operand #0 is 'tensor<16xi32>'}}
  %s = dist.reduce_scatter avg %g : tensor<16xi32> over #dist.group<"dp", 4>
  return
}

// -----

func.func @gather_empty() {
  // expected-error @+1 {{gathers at least one tensor}}
  "dist.all_gather"() <{group = #dist.group<"dp", 4>}> : () -> ()
  return
}

// -----

func.func @gather_dynamic(%s: tensor<?xf32>) {
  // expected-error @+1 {{operand #0 must have a static shape, got 'tensor<?xf32>'}}
  %g = dist.all_gather %s : tensor<?xf32> over #dist.group<"dp", 4>
  return
}

// -----

func.func @gather_into_shard(%s: tensor<7xbf16>, %c: tensor<10x3xbf16>) {
  // expected-error @+1 {{expects shard #0 to be 'tensor<8xbf16>' (a rank's shard of 'tensor<10x3xbf16>' over 4 ranks), got 'tensor<7xbf16>'}}
  %g = dist.all_gather_into %s into %c : tensor<7xbf16> into tensor<10x3xbf16> -> tensor<10x3xbf16> over #dist.group<"dp", 4>
  return
}

// -----

func.func @gather_into_result(%s: tensor<8xbf16>, %c: tensor<10x3xbf16>) {
  // expected-error @+1 {{expects result #0 to be 'tensor<10x3xbf16>', got 'tensor<30xbf16>'}}
  %g = dist.all_gather_into %s into %c : tensor<8xbf16> into tensor<10x3xbf16> -> tensor<30xbf16> over #dist.group<"dp", 4>
  return
}

// -----

func.func @send_peer(%x: tensor<4xf32>) {
  // expected-error @+1 {{peer must be a rank (at least 0), got -1}}
  dist.send %x to -1 tag 0 : tensor<4xf32>
  return
}

// -----

func.func @recv_tag() {
  // expected-error @+1 {{tag must be at least 0, got -3}}
  %x = dist.recv from 0 tag -3 : tensor<4xf32>
  return
}

// -----

// expected-error @+1 {{schedules @missing, which is not a function of this module}}
dist.schedule @missing stages 1 micro_batches 1 ranks [[#dist.action<F, 0, 0>, #dist.action<B, 0, 0>, #dist.action<W, 0, 0>, #dist.action<O, 0, 0>]]

// -----

func.func @train_step() {
  return
}
// expected-error @+1 {{stage 0, micro-batch 0: B runs before the chunk it needs}}
dist.schedule @train_step stages 1 micro_batches 1 ranks [[#dist.action<B, 0, 0>, #dist.action<F, 0, 0>, #dist.action<W, 0, 0>, #dist.action<O, 0, 0>]]

// -----

func.func @train_step() {
  return
}
// expected-error @+1 {{stage 0 never runs W of micro-batch 1}}
dist.schedule @train_step stages 1 micro_batches 2 ranks [[#dist.action<F, 0, 0>, #dist.action<B, 0, 0>, #dist.action<W, 0, 0>, #dist.action<F, 0, 1>, #dist.action<B, 0, 1>, #dist.action<O, 0, 0>]]

// -----

func.func @train_step() {
  return
}
// expected-error @+1 {{stage 0: O runs before W of micro-batch 0}}
dist.schedule @train_step stages 1 micro_batches 1 ranks [[#dist.action<F, 0, 0>, #dist.action<B, 0, 0>, #dist.action<O, 0, 0>, #dist.action<W, 0, 0>]]

// -----

func.func @train_step() {
  return
}
// expected-error @+1 {{stage 0 runs on rank 0 and on rank 1; a stage lives on one rank}}
dist.schedule @train_step stages 1 micro_batches 1 ranks [[#dist.action<F, 0, 0>, #dist.action<B, 0, 0>], [#dist.action<W, 0, 0>, #dist.action<O, 0, 0>]]

// -----

func.func @train_step() {
  return
}
// expected-error @+1 {{rank 0 runs F of stage 0, micro-batch 0 twice}}
dist.schedule @train_step stages 1 micro_batches 1 ranks [[#dist.action<F, 0, 0>, #dist.action<F, 0, 0>, #dist.action<B, 0, 0>, #dist.action<W, 0, 0>, #dist.action<O, 0, 0>]]

// -----

func.func @train_step() {
  return
}
// expected-error @+1 {{rank 0, action 1 (B): micro-batch 3 is not below the 1 micro-batches}}
dist.schedule @train_step stages 1 micro_batches 1 ranks [[#dist.action<F, 0, 0>, #dist.action<B, 0, 3>]]

// -----

func.func @train_step() {
  return
}
// expected-error @+1 {{action O runs once per step: its micro-batch must be 0, got 2}}
dist.schedule @train_step stages 1 micro_batches 3 ranks [[#dist.action<O, 0, 2>]]
