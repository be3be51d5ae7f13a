// Fused row regions whose generated kernels (kiln-translate --tile-to-cuda,
// one region per split) DeviceEmulationRowTest.cpp runs under the CPU
// emulation: generated_row_regions.py names the kernel of split i
// kiln_generated_row_region_<i>. Not a lit test (test/lit.cfg.py excludes
// test/Runtime); the order of the splits is the tests'.

// 0: residual add + RMSNorm, bf16, both yielded.
func.func @train_step(%h: tensor<3x5x64xbf16>, %o: tensor<3x5x64xbf16>, %w: tensor<64xbf16>) -> (tensor<3x5x64xbf16>, tensor<3x5x64xbf16>) {
  %s, %n = tile.fused %h, %o, %w : (tensor<3x5x64xbf16>, tensor<3x5x64xbf16>, tensor<64xbf16>) -> (tensor<3x5x64xbf16>, tensor<3x5x64xbf16>) {
  ^bb0(%a: tensor<3x5x64xbf16>, %b: tensor<3x5x64xbf16>, %g: tensor<64xbf16>):
    %sum = nn.add %a, %b : (tensor<3x5x64xbf16>, tensor<3x5x64xbf16>) -> tensor<3x5x64xbf16>
    %norm = nn.rms_norm %sum, %g : (tensor<3x5x64xbf16>, tensor<64xbf16>) -> tensor<3x5x64xbf16>
    tile.yield %sum, %norm : tensor<3x5x64xbf16>, tensor<3x5x64xbf16>
  }
  return %s, %n : tensor<3x5x64xbf16>, tensor<3x5x64xbf16>
}

// -----

// 1: residual add + LayerNorm with bias, f32, a width of no whole vectors.
func.func @train_step(%h: tensor<7x36xf32>, %o: tensor<7x36xf32>, %w: tensor<36xf32>, %b: tensor<36xf32>) -> (tensor<7x36xf32>, tensor<7x36xf32>) {
  %s, %n = tile.fused %h, %o, %w, %b : (tensor<7x36xf32>, tensor<7x36xf32>, tensor<36xf32>, tensor<36xf32>) -> (tensor<7x36xf32>, tensor<7x36xf32>) {
  ^bb0(%x: tensor<7x36xf32>, %y: tensor<7x36xf32>, %g: tensor<36xf32>, %c: tensor<36xf32>):
    %sum = nn.add %x, %y : (tensor<7x36xf32>, tensor<7x36xf32>) -> tensor<7x36xf32>
    %norm = nn.layer_norm %sum, %g, %c : (tensor<7x36xf32>, tensor<36xf32>, tensor<36xf32>) -> tensor<7x36xf32>
    tile.yield %sum, %norm : tensor<7x36xf32>, tensor<7x36xf32>
  }
  return %s, %n : tensor<7x36xf32>, tensor<7x36xf32>
}

// -----

// 2: gradients summed, RMSNorm input gradient (a shared row), residual
// added, bf16.
func.func @train_step(%g1: tensor<6x200xbf16>, %g2: tensor<6x200xbf16>, %x: tensor<6x200xbf16>, %w: tensor<200xbf16>, %resid: tensor<6x200xbf16>) -> (tensor<6x200xbf16>, tensor<6x200xbf16>) {
  %a, %r = tile.fused %g1, %g2, %x, %w, %resid : (tensor<6x200xbf16>, tensor<6x200xbf16>, tensor<6x200xbf16>, tensor<200xbf16>, tensor<6x200xbf16>) -> (tensor<6x200xbf16>, tensor<6x200xbf16>) {
  ^bb0(%p: tensor<6x200xbf16>, %q: tensor<6x200xbf16>, %in: tensor<6x200xbf16>, %wt: tensor<200xbf16>, %res: tensor<6x200xbf16>):
    %sum = nn.add %p, %q : (tensor<6x200xbf16>, tensor<6x200xbf16>) -> tensor<6x200xbf16>
    %d = nn.rms_norm_grad %sum, %in, %wt : (tensor<6x200xbf16>, tensor<6x200xbf16>, tensor<200xbf16>) -> tensor<6x200xbf16>
    %out = nn.add %res, %d : (tensor<6x200xbf16>, tensor<6x200xbf16>) -> tensor<6x200xbf16>
    tile.yield %sum, %out : tensor<6x200xbf16>, tensor<6x200xbf16>
  }
  return %a, %r : tensor<6x200xbf16>, tensor<6x200xbf16>
}

// -----

// 3: the LayerNorm analogue, f32, rows of several warps.
func.func @train_step(%g1: tensor<5x1000xf32>, %g2: tensor<5x1000xf32>, %x: tensor<5x1000xf32>, %w: tensor<1000xf32>, %resid: tensor<5x1000xf32>) -> (tensor<5x1000xf32>, tensor<5x1000xf32>) {
  %a, %r = tile.fused %g1, %g2, %x, %w, %resid : (tensor<5x1000xf32>, tensor<5x1000xf32>, tensor<5x1000xf32>, tensor<1000xf32>, tensor<5x1000xf32>) -> (tensor<5x1000xf32>, tensor<5x1000xf32>) {
  ^bb0(%p: tensor<5x1000xf32>, %q: tensor<5x1000xf32>, %in: tensor<5x1000xf32>, %wt: tensor<1000xf32>, %res: tensor<5x1000xf32>):
    %sum = nn.add %p, %q : (tensor<5x1000xf32>, tensor<5x1000xf32>) -> tensor<5x1000xf32>
    %d = nn.layer_norm_grad %sum, %in, %wt : (tensor<5x1000xf32>, tensor<5x1000xf32>, tensor<1000xf32>) -> tensor<5x1000xf32>
    %out = nn.add %res, %d : (tensor<5x1000xf32>, tensor<5x1000xf32>) -> tensor<5x1000xf32>
    tile.yield %sum, %out : tensor<5x1000xf32>, tensor<5x1000xf32>
  }
  return %a, %r : tensor<5x1000xf32>, tensor<5x1000xf32>
}

// -----

// 4: inverse RoPE of q (2 heads of 64) and k (1 head) sharing positions,
// bf16.
func.func @train_step(%q: tensor<2x5x128xbf16>, %k: tensor<2x5x64xbf16>, %pos: tensor<2x5xi32>) -> (tensor<2x5x128xbf16>, tensor<2x5x64xbf16>) {
  %q2, %k2 = tile.fused %q, %k, %pos : (tensor<2x5x128xbf16>, tensor<2x5x64xbf16>, tensor<2x5xi32>) -> (tensor<2x5x128xbf16>, tensor<2x5x64xbf16>) {
  ^bb0(%a: tensor<2x5x128xbf16>, %b: tensor<2x5x64xbf16>, %p: tensor<2x5xi32>):
    %ra = nn.rope %a positions(%p) {num_heads = 2 : i64, theta = 500000.0 : f64, inverse} : (tensor<2x5x128xbf16>, tensor<2x5xi32>) -> tensor<2x5x128xbf16>
    %rb = nn.rope %b positions(%p) {num_heads = 1 : i64, theta = 500000.0 : f64, inverse} : (tensor<2x5x64xbf16>, tensor<2x5xi32>) -> tensor<2x5x64xbf16>
    tile.yield %ra, %rb : tensor<2x5x128xbf16>, tensor<2x5x64xbf16>
  }
  return %q2, %k2 : tensor<2x5x128xbf16>, tensor<2x5x64xbf16>
}

// -----

// 5: token and position embeddings summed, bf16: both gathers in shared
// rows.
func.func @train_step(%wte: tensor<50x72xbf16>, %ids: tensor<13xi32>, %wpe: tensor<16x72xbf16>, %pos: tensor<13xi32>) -> tensor<13x72xbf16> {
  %h = tile.fused %wte, %ids, %wpe, %pos : (tensor<50x72xbf16>, tensor<13xi32>, tensor<16x72xbf16>, tensor<13xi32>) -> tensor<13x72xbf16> {
  ^bb0(%t: tensor<50x72xbf16>, %i: tensor<13xi32>, %p: tensor<16x72xbf16>, %j: tensor<13xi32>):
    %te = nn.embedding %t, %i : (tensor<50x72xbf16>, tensor<13xi32>) -> tensor<13x72xbf16>
    %pe = nn.embedding %p, %j : (tensor<16x72xbf16>, tensor<13xi32>) -> tensor<13x72xbf16>
    %sum = nn.add %te, %pe : (tensor<13x72xbf16>, tensor<13x72xbf16>) -> tensor<13x72xbf16>
    tile.yield %sum : tensor<13x72xbf16>
  }
  return %h : tensor<13x72xbf16>
}

// -----

// 6: an f32 residual cast to bf16 and added, RMSNorm into a shared row,
// squared and GELU (tanh) in registers.
func.func @train_step(%x: tensor<4x64xf32>, %h: tensor<4x64xbf16>, %w: tensor<64xbf16>) -> (tensor<4x64xbf16>, tensor<4x64xbf16>) {
  %s, %y = tile.fused %x, %h, %w : (tensor<4x64xf32>, tensor<4x64xbf16>, tensor<64xbf16>) -> (tensor<4x64xbf16>, tensor<4x64xbf16>) {
  ^bb0(%a: tensor<4x64xf32>, %b: tensor<4x64xbf16>, %g: tensor<64xbf16>):
    %c = nn.cast %a : (tensor<4x64xf32>) -> tensor<4x64xbf16>
    %sum = nn.add %b, %c : (tensor<4x64xbf16>, tensor<4x64xbf16>) -> tensor<4x64xbf16>
    %n = nn.rms_norm %sum, %g : (tensor<4x64xbf16>, tensor<64xbf16>) -> tensor<4x64xbf16>
    %sq = nn.mul %n, %n : (tensor<4x64xbf16>, tensor<4x64xbf16>) -> tensor<4x64xbf16>
    %act = nn.gelu %sq approximate = tanh : (tensor<4x64xbf16>) -> tensor<4x64xbf16>
    tile.yield %sum, %act : tensor<4x64xbf16>, tensor<4x64xbf16>
  }
  return %s, %y : tensor<4x64xbf16>, tensor<4x64xbf16>
}

// -----

// 7: SwiGLU reading gate and up in place from a packed [rows, gate | up]
// GEMM output (row-strided views: rows 2 x 96 elements apart), bf16.
func.func @train_step(%gu: tensor<6x192xbf16>) -> tensor<6x96xbf16> {
  %g = tile.view %gu {dim = 1 : i64, start = 0 : i64} : (tensor<6x192xbf16>) -> tensor<6x96xbf16>
  %u = tile.view %gu {dim = 1 : i64, start = 96 : i64} : (tensor<6x192xbf16>) -> tensor<6x96xbf16>
  %y = tile.fused %g, %u : (tensor<6x96xbf16>, tensor<6x96xbf16>) -> tensor<6x96xbf16> {
  ^bb0(%a: tensor<6x96xbf16>, %b: tensor<6x96xbf16>):
    %s = nn.swiglu %a, %b : (tensor<6x96xbf16>, tensor<6x96xbf16>) -> tensor<6x96xbf16>
    tile.yield %s : tensor<6x96xbf16>
  }
  return %y : tensor<6x96xbf16>
}

// -----

// 8: its gradient written into the packed [rows, dgate | dup] gradient
// (a tile.concat: each output row-strided), f32.
func.func @train_step(%dy: tensor<6x96xf32>, %g: tensor<6x96xf32>, %u: tensor<6x96xf32>) -> tensor<6x192xf32> {
  %dg, %du = tile.fused %dy, %g, %u : (tensor<6x96xf32>, tensor<6x96xf32>, tensor<6x96xf32>) -> (tensor<6x96xf32>, tensor<6x96xf32>) {
  ^bb0(%a: tensor<6x96xf32>, %b: tensor<6x96xf32>, %c: tensor<6x96xf32>):
    %r:2 = nn.swiglu_grad %a, %b, %c : (tensor<6x96xf32>, tensor<6x96xf32>, tensor<6x96xf32>) -> (tensor<6x96xf32>, tensor<6x96xf32>)
    tile.yield %r#0, %r#1 : tensor<6x96xf32>, tensor<6x96xf32>
  }
  %packed = tile.concat %dg, %du {dim = 1 : i64} : (tensor<6x96xf32>, tensor<6x96xf32>) -> tensor<6x192xf32>
  return %packed : tensor<6x192xf32>
}
