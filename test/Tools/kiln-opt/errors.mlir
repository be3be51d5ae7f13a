// RUN: not kiln-opt %s --split-input-file 2>&1 | FileCheck %s
// RUN: not kiln-opt %t.does-not-exist.mlir 2>&1 | FileCheck %s --check-prefix=MISSING

// kiln-opt reports bad input as file:line:col diagnostics and a non-zero exit
// status (checked by `not`), never as a crash.

// A syntax error.
// CHECK: errors.mlir:[[# @LINE + 1]]:{{[0-9]+}}: error: expected attribute name
func.func @syntax(%x: tensor<2x64xbf16> {

// -----

// A verifier failure.
func.func @verifier(%x: tensor<2x64xbf16>, %w: tensor<8x32xbf16>) {
  // CHECK: errors.mlir:[[# @LINE + 1]]:8: error: 'nn.linear' op expects weight in-features
  %0 = nn.linear %x, %w : (tensor<2x64xbf16>, tensor<8x32xbf16>) -> tensor<2x8xbf16>
  return
}

// -----

// An op the nn dialect does not have.
func.func @unknown(%x: tensor<2x64xbf16>) {
  // CHECK: errors.mlir:[[# @LINE + 1]]:8: error: custom op 'nn.softmax' is unknown
  %0 = nn.softmax %x : (tensor<2x64xbf16>) -> tensor<2x64xbf16>
  return
}

// MISSING: cannot open input file '{{.*}}does-not-exist.mlir'
