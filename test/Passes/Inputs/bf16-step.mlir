// A mixed step for dist-reduce-gradients.mlir: w (10 x 3, 30 elements) is
// read only through one BF16 cast; v is read in FP32.
module attributes {kiln.model = {batch = 1 : i64}} {
func.func @forward(%x: tensor<1x4x3xbf16> {kiln.input = "x"}, %t: tensor<1x4xi32> {kiln.input = "targets"},
                   %w: tensor<10x3xf32> {kiln.param = "w"}, %v: tensor<10x10xf32> {kiln.param = "v"}) -> tensor<f32> {
  %wc = nn.cast %w : (tensor<10x3xf32>) -> tensor<10x3xbf16>
  %h = nn.linear %x, %wc : (tensor<1x4x3xbf16>, tensor<10x3xbf16>) -> tensor<1x4x10xbf16>
  %hf = nn.cast %h : (tensor<1x4x10xbf16>) -> tensor<1x4x10xf32>
  %y = nn.linear %hf, %v : (tensor<1x4x10xf32>, tensor<10x10xf32>) -> tensor<1x4x10xf32>
  %loss = nn.cross_entropy %y, %t : (tensor<1x4x10xf32>, tensor<1x4xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
}
