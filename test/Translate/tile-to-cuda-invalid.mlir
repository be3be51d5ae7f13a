// RUN: kiln-translate --tile-to-cuda %s --split-input-file --verify-diagnostics

// A fused region of several ops is one kernel only when its ops are all
// elementwise or all row-local with one row count (tile::rowWiseRows);
// otherwise the CUDA emitter says why, at the region.

// A norm and its weight gradient, which sums columns over every row.
func.func @train_step(%x: tensor<8x64xbf16> {kiln.input = "x"}, %w: tensor<64xbf16> {kiln.input = "w"}, %dy: tensor<8x64xbf16> {kiln.input = "dy"})
    -> (tensor<8x64xbf16> {kiln.output = "y"}, tensor<64xbf16> {kiln.output = "dw"}) {
  // expected-error @+1 {{'tile.fused' op cuda: a fused region of several ops needs them all elementwise, or all row-local with one row count, to run as one kernel; 'nn.rms_norm_weight_grad' is not row-local}}
  %y, %dw = tile.fused %x, %w, %dy : (tensor<8x64xbf16>, tensor<64xbf16>, tensor<8x64xbf16>) -> (tensor<8x64xbf16>, tensor<64xbf16>) {
  ^bb0(%a: tensor<8x64xbf16>, %b: tensor<64xbf16>, %g: tensor<8x64xbf16>):
    %n = nn.rms_norm %a, %b : (tensor<8x64xbf16>, tensor<64xbf16>) -> tensor<8x64xbf16>
    %d = nn.rms_norm_weight_grad %g, %a : (tensor<8x64xbf16>, tensor<8x64xbf16>) -> tensor<64xbf16>
    tile.yield %n, %d : tensor<8x64xbf16>, tensor<64xbf16>
  }
  return %y, %dw : tensor<8x64xbf16>, tensor<64xbf16>
}

// -----

// Row-local ops over different rows: 8 rows of 64, then 16 of 32.
func.func @train_step(%x: tensor<8x64xbf16> {kiln.input = "x"}, %w: tensor<64xbf16> {kiln.input = "w"}, %z: tensor<16x32xbf16> {kiln.input = "z"})
    -> (tensor<8x64xbf16> {kiln.output = "y"}, tensor<16x32xbf16> {kiln.output = "s"}) {
  // expected-error @+1 {{'tile.fused' op cuda: a fused region of several ops needs them all elementwise, or all row-local with one row count, to run as one kernel; operand #0 of 'nn.add' has 16 rows, the region's others 8}}
  %y, %s = tile.fused %x, %w, %z : (tensor<8x64xbf16>, tensor<64xbf16>, tensor<16x32xbf16>) -> (tensor<8x64xbf16>, tensor<16x32xbf16>) {
  ^bb0(%a: tensor<8x64xbf16>, %b: tensor<64xbf16>, %c: tensor<16x32xbf16>):
    %n = nn.rms_norm %a, %b : (tensor<8x64xbf16>, tensor<64xbf16>) -> tensor<8x64xbf16>
    %sum = nn.add %c, %c : (tensor<16x32xbf16>, tensor<16x32xbf16>) -> tensor<16x32xbf16>
    tile.yield %n, %sum : tensor<8x64xbf16>, tensor<16x32xbf16>
  }
  return %y, %s : tensor<8x64xbf16>, tensor<16x32xbf16>
}

// -----

// An embedding whose table the region computes: a table is read whole, so
// it must exist before any row is.
func.func @train_step(%a: tensor<8x64xbf16> {kiln.input = "a"}, %ids: tensor<8xi32> {kiln.input = "ids"})
    -> (tensor<8x64xbf16> {kiln.output = "e"}) {
  // expected-error @+1 {{'tile.fused' op cuda: a fused region of several ops needs them all elementwise, or all row-local with one row count, to run as one kernel; operand #0 of 'nn.embedding' is read whole but computed in the region}}
  %e = tile.fused %a, %ids : (tensor<8x64xbf16>, tensor<8xi32>) -> tensor<8x64xbf16> {
  ^bb0(%x: tensor<8x64xbf16>, %i: tensor<8xi32>):
    %t = nn.add %x, %x : (tensor<8x64xbf16>, tensor<8x64xbf16>) -> tensor<8x64xbf16>
    %g = nn.embedding %t, %i : (tensor<8x64xbf16>, tensor<8xi32>) -> tensor<8x64xbf16>
    tile.yield %g : tensor<8x64xbf16>
  }
  return %e : tensor<8x64xbf16>
}
