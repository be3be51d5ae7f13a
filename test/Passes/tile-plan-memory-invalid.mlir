// RUN: kiln-opt %s --split-input-file --tile-plan-memory --verify-diagnostics

// Sizes and offsets are computed in checked arithmetic: what does not fit
// in 64 bits is an error at the value's op (or argument), never a size that
// wrapped around. (tile-plan-memory.mlir shows that buffers of 4e18 bytes,
// below 2^63, are planned exactly.)

// 2^32 x 2^32 elements: the element count wrapped to 0, a free buffer.
func.func @train_step() -> tensor<4294967296x4294967296xf32> {
  // expected-error @+1 {{'tensor.empty' op tile-plan-memory: result #0 ('tensor<4294967296x4294967296xf32>') takes more than 2^63 bytes}}
  %y = tensor.empty() : tensor<4294967296x4294967296xf32>
  return %y : tensor<4294967296x4294967296xf32>
}

// -----

// An argument of 2^62 f32 elements: 2^64 bytes, which wrapped to 0.
// expected-error @+1 {{tile-plan-memory: argument #0 ('tensor<4611686018427387904xf32>') takes more than 2^63 bytes}}
func.func @train_step(%p: tensor<4611686018427387904xf32>) -> tensor<4611686018427387904xf32> {
  return %p : tensor<4611686018427387904xf32>
}

// -----

// Two 5e18-byte arguments: each fits, but the second ends past 2^63.
// expected-error @+1 {{tile-plan-memory: argument #1 (5000000000000000000 bytes at offset 5000000000000000000) makes the arena larger than 2^63 bytes}}
func.func @train_step(%p: tensor<2500000000000000000xbf16>, %q: tensor<2500000000000000000xbf16>) -> tensor<2500000000000000000xbf16> {
  return %p : tensor<2500000000000000000xbf16>
}

// -----

// Three 4e18-byte temporaries live at once (a batch of 2e14 sequences of
// 10^4 BF16 values each): the third does not fit below 2^63.
func.func @train_step() -> (tensor<200000000000000x10000xbf16>, tensor<200000000000000x10000xbf16>, tensor<200000000000000x10000xbf16>) {
  %a = tensor.empty() : tensor<200000000000000x10000xbf16>
  %b = tensor.empty() : tensor<200000000000000x10000xbf16>
  // expected-error @+1 {{'tensor.empty' op tile-plan-memory: result #0 (4000000000000000000 bytes, with 8000000000000000000 allocated) makes the arena larger than 2^63 bytes}}
  %c = tensor.empty() : tensor<200000000000000x10000xbf16>
  return %a, %b, %c : tensor<200000000000000x10000xbf16>, tensor<200000000000000x10000xbf16>, tensor<200000000000000x10000xbf16>
}

// -----

// A dynamic shape has no size to plan.
func.func @train_step(%x: tensor<4xf32>) -> tensor<?xf32> {
  // expected-error @+1 {{'tensor.cast' op tile-plan-memory: result #0 must be a tensor of static shape, got 'tensor<?xf32>'}}
  %y = tensor.cast %x : tensor<4xf32> to tensor<?xf32>
  return %y : tensor<?xf32>
}
