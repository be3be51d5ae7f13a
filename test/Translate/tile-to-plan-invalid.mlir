// RUN: kiln-translate --tile-to-plan %s --split-input-file --verify-diagnostics

// The plan writer checks, in checked arithmetic, that every value lies
// inside the arena before writing a plan the runtime would refuse.

// A planned offset whose buffer ends past the arena.
// expected-error @+1 {{plan: value 0 ('tensor<64xf32>', 256 bytes at offset 9223372036854775807) lies outside the arena (512 bytes)}}
func.func @train_step(%tokens: tensor<64xf32> {kiln.input = "tokens", kiln.offset = 9223372036854775807 : i64}) attributes {kiln.arena_bytes = 512 : i64} {
  return
}

// -----

// A value of 2^62 f32 elements: 2^64 bytes, which wrapped to 0.
// expected-error @+1 {{plan: value 0 ('tensor<4611686018427387904xf32>') takes more than 2^56 bytes, more than any device holds}}
func.func @train_step(%tokens: tensor<4611686018427387904xf32> {kiln.input = "tokens", kiln.offset = 0 : i64}) attributes {kiln.arena_bytes = 512 : i64} {
  return
}

// -----

// 2^57 bytes fit in 64 bits, but the kernels' FP32 scratch for such a
// value would not (and no device holds it).
// expected-error @+1 {{plan: value 0 ('tensor<72057594037927936xbf16>') takes more than 2^56 bytes, more than any device holds}}
func.func @train_step(%tokens: tensor<72057594037927936xbf16> {kiln.input = "tokens", kiln.offset = 0 : i64}) attributes {kiln.arena_bytes = 144115188075855872 : i64} {
  return
}

// -----

// An empty tensor made the kernel emitter divide by its zero last
// dimension (SIGFPE).
// expected-error @+1 {{plan: value 0 ('tensor<4x0xf32>') is empty; the kernels need at least one element}}
func.func @train_step(%logits: tensor<4x0xf32> {kiln.input = "logits", kiln.offset = 0 : i64}, %targets: tensor<4xi32> {kiln.input = "targets", kiln.offset = 256 : i64}) -> tensor<f32> attributes {kiln.arena_bytes = 1024 : i64} {
  %loss = tile.cross_entropy %logits, %targets {ignore_index = -100 : i64, kiln.offsets = array<i64: 512>} : (tensor<4x0xf32>, tensor<4xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
