// RUN: kiln-opt %s --split-input-file --nn-lower-to-tile --verify-diagnostics

// A GEMM's m, n and k come from the operands' shapes, so they are checked
// before anything divides or multiplies by them.

// An empty input (k = 0) was a division by zero (SIGFPE).
func.func @empty_linear(%x: tensor<8x0xf32>, %w: tensor<4x0xf32>) -> tensor<8x4xf32> {
  // expected-error @+1 {{'nn.linear' op nn-lower-to-tile: operand #0 ('tensor<8x0xf32>') is empty; a GEMM needs positive m, n and k}}
  %y = nn.linear %x, %w : (tensor<8x0xf32>, tensor<4x0xf32>) -> tensor<8x4xf32>
  return %y : tensor<8x4xf32>
}

// -----

// n = 0 made the batch count elements / (m * n) divide by zero.
func.func @empty_matmul(%a: tensor<2x8x16xf32>, %b: tensor<2x16x0xf32>) -> tensor<2x8x0xf32> {
  // expected-error @+1 {{'nn.matmul' op nn-lower-to-tile: operand #1 ('tensor<2x16x0xf32>') is empty; a GEMM needs positive m, n and k}}
  %0 = nn.matmul %a, %b : (tensor<2x8x16xf32>, tensor<2x16x0xf32>) -> tensor<2x8x0xf32>
  return %0 : tensor<2x8x0xf32>
}

// -----

// 2^65 elements wrapped around to a GEMM of 0 rows.
func.func @huge_linear(%x: tensor<4294967296x4294967296x2xf32>, %w: tensor<3x2xf32>) -> tensor<4294967296x4294967296x3xf32> {
  // expected-error @+1 {{'nn.linear' op nn-lower-to-tile: operand #0 ('tensor<4294967296x4294967296x2xf32>') has more than 2^63 elements}}
  %y = nn.linear %x, %w : (tensor<4294967296x4294967296x2xf32>, tensor<3x2xf32>) -> tensor<4294967296x4294967296x3xf32>
  return %y : tensor<4294967296x4294967296x3xf32>
}
