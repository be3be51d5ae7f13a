// An attention block of a small GQA model in the nn dialect.
func.func @attention_block(%x: tensor<2x128x256xbf16>, %wq: tensor<256x256xbf16>,
                           %wk: tensor<64x256xbf16>, %wv: tensor<64x256xbf16>)
    -> tensor<2x128x256xbf16> {
  %q = nn.linear %x, %wq : (tensor<2x128x256xbf16>, tensor<256x256xbf16>) -> tensor<2x128x256xbf16>
  %k = nn.linear %x, %wk : (tensor<2x128x256xbf16>, tensor<64x256xbf16>) -> tensor<2x128x64xbf16>
  %v = nn.linear %x, %wv : (tensor<2x128x256xbf16>, tensor<64x256xbf16>) -> tensor<2x128x64xbf16>
  %qr = nn.rope %q {num_heads = 8 : i64, theta = 10000.0 : f64} : (tensor<2x128x256xbf16>) -> tensor<2x128x256xbf16>
  %kr = nn.rope %k {num_heads = 2 : i64, theta = 10000.0 : f64} : (tensor<2x128x64xbf16>) -> tensor<2x128x64xbf16>
  %o = nn.attention %qr, %kr, %v {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64}
      : (tensor<2x128x256xbf16>, tensor<2x128x64xbf16>, tensor<2x128x64xbf16>) -> tensor<2x128x256xbf16>
  return %o : tensor<2x128x256xbf16>
}
