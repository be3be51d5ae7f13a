// REQUIRES: nvrtc
// RUN: kiln-opt --tile-plan-memory %s | kiln-translate --tile-to-ptxas-report --cuda-arch=sm_90a --fail-on-spills | FileCheck %s
// RUN: kiln-opt --tile-plan-memory %s | kiln-translate --tile-to-ptxas-report --cuda-arch=sm_80 --fail-on-spills | FileCheck %s

// The generated kernels of fused row regions (RowRegion.cpp) compile with
// NVRTC for Hopper (sm_90a) and Ampere (sm_80) on this GPU-less machine,
// with no register spills (--fail-on-spills fails otherwise), at the
// widths of Llama-3-8B (hidden 4096, 32 query and 8 key heads of 128,
// intermediate 14336) and GPT-2 small (768, vocabulary 50257): residual
// add + RMSNorm, its backward, add + LayerNorm with bias and its backward,
// two RoPEs forward and inverse, the embedding sum, and elementwise chains
// around a norm, GPT-2's embedding sum and first LayerNorm. Several
// spilled until the launch bounds asked for 768 resident threads per SM
// (RowRegion.cpp). (tile-to-cuda-rows.mlir checks
// the kernels' text.)

// CHECK-COUNT-9: kiln_row_{{[0-9a-fx]+}} {{.*}} 0/0 spill stores/loads
// CHECK: 9 kernels compiled by NVRTC {{[0-9]+}} for sm_{{80|90a}}; at most {{[0-9]+}} registers; 0 kernels spill

func.func @train_step(%h: tensor<1x256x4096xbf16> {kiln.input = "h"}, %o: tensor<1x256x4096xbf16> {kiln.input = "o"}, %w: tensor<4096xbf16> {kiln.input = "w"},
                      %x: tensor<1x256x4096xbf16> {kiln.input = "x"},
                      %q: tensor<1x256x4096xbf16> {kiln.input = "q"}, %k: tensor<1x256x1024xbf16> {kiln.input = "k"}, %pos: tensor<1x256xi32> {kiln.input = "pos"},
                      %h2: tensor<1x256x768xbf16> {kiln.input = "h2"}, %w2: tensor<768xbf16> {kiln.input = "w2"}, %b2: tensor<768xbf16> {kiln.input = "b2"},
                      %wte: tensor<50257x768xbf16> {kiln.input = "wte"}, %ids: tensor<1x256xi32> {kiln.input = "ids"}, %wpe: tensor<1024x768xbf16> {kiln.input = "wpe"},
                      %gate: tensor<1x256x14336xbf16> {kiln.input = "gate"}, %up: tensor<1x256x14336xbf16> {kiln.input = "up"}, %x32: tensor<1x256x4096xf32> {kiln.input = "x32"})
    -> (tensor<1x256x4096xbf16> {kiln.output = "s"}, tensor<1x256x4096xbf16> {kiln.output = "n"}, tensor<1x256x4096xbf16> {kiln.output = "a"}, tensor<1x256x4096xbf16> {kiln.output = "r"},
        tensor<1x256x4096xbf16> {kiln.output = "q3"}, tensor<1x256x1024xbf16> {kiln.output = "k3"},
        tensor<1x256x768xbf16> {kiln.output = "s2"}, tensor<1x256x768xbf16> {kiln.output = "n2"}, tensor<1x256x768xbf16> {kiln.output = "a2"}, tensor<1x256x768xbf16> {kiln.output = "r2"},
        tensor<1x256x768xbf16> {kiln.output = "e"}, tensor<1x256x14336xbf16> {kiln.output = "act"}, tensor<1x256x4096xbf16> {kiln.output = "y"},
        tensor<1x256x768xbf16> {kiln.output = "e2"}, tensor<1x256x768xbf16> {kiln.output = "en"}) {
  // Llama: residual add + RMSNorm.
  %s, %n = tile.fused %h, %o, %w : (tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>, tensor<4096xbf16>) -> (tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>) {
  ^bb0(%a0: tensor<1x256x4096xbf16>, %a1: tensor<1x256x4096xbf16>, %a2: tensor<4096xbf16>):
    %sum = nn.add %a0, %a1 : (tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>) -> tensor<1x256x4096xbf16>
    %norm = nn.rms_norm %sum, %a2 : (tensor<1x256x4096xbf16>, tensor<4096xbf16>) -> tensor<1x256x4096xbf16>
    tile.yield %sum, %norm : tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>
  }
  // Llama backward: gradients summed, the RMSNorm input gradient (a shared
  // row), the residual added.
  %a, %r = tile.fused %s, %n, %x, %w, %h : (tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>, tensor<4096xbf16>, tensor<1x256x4096xbf16>) -> (tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>) {
  ^bb0(%a0: tensor<1x256x4096xbf16>, %a1: tensor<1x256x4096xbf16>, %a2: tensor<1x256x4096xbf16>, %a3: tensor<4096xbf16>, %a4: tensor<1x256x4096xbf16>):
    %sum = nn.add %a0, %a1 : (tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>) -> tensor<1x256x4096xbf16>
    %d = nn.rms_norm_grad %sum, %a2, %a3 : (tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>, tensor<4096xbf16>) -> tensor<1x256x4096xbf16>
    %out = nn.add %a4, %d : (tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>) -> tensor<1x256x4096xbf16>
    tile.yield %sum, %out : tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>
  }
  // Llama: RoPE of q and k sharing positions, forward and inverse.
  %q2, %k2 = tile.fused %q, %k, %pos : (tensor<1x256x4096xbf16>, tensor<1x256x1024xbf16>, tensor<1x256xi32>) -> (tensor<1x256x4096xbf16>, tensor<1x256x1024xbf16>) {
  ^bb0(%a0: tensor<1x256x4096xbf16>, %a1: tensor<1x256x1024xbf16>, %a2: tensor<1x256xi32>):
    %r0 = nn.rope %a0 positions(%a2) {num_heads = 32 : i64, theta = 500000.0 : f64} : (tensor<1x256x4096xbf16>, tensor<1x256xi32>) -> tensor<1x256x4096xbf16>
    %r1 = nn.rope %a1 positions(%a2) {num_heads = 8 : i64, theta = 500000.0 : f64} : (tensor<1x256x1024xbf16>, tensor<1x256xi32>) -> tensor<1x256x1024xbf16>
    tile.yield %r0, %r1 : tensor<1x256x4096xbf16>, tensor<1x256x1024xbf16>
  }
  %q3, %k3 = tile.fused %q2, %k2, %pos : (tensor<1x256x4096xbf16>, tensor<1x256x1024xbf16>, tensor<1x256xi32>) -> (tensor<1x256x4096xbf16>, tensor<1x256x1024xbf16>) {
  ^bb0(%a0: tensor<1x256x4096xbf16>, %a1: tensor<1x256x1024xbf16>, %a2: tensor<1x256xi32>):
    %r0 = nn.rope %a0 positions(%a2) {num_heads = 32 : i64, theta = 500000.0 : f64, inverse} : (tensor<1x256x4096xbf16>, tensor<1x256xi32>) -> tensor<1x256x4096xbf16>
    %r1 = nn.rope %a1 positions(%a2) {num_heads = 8 : i64, theta = 500000.0 : f64, inverse} : (tensor<1x256x1024xbf16>, tensor<1x256xi32>) -> tensor<1x256x1024xbf16>
    tile.yield %r0, %r1 : tensor<1x256x4096xbf16>, tensor<1x256x1024xbf16>
  }
  // GPT-2: residual add + LayerNorm with bias, and its backward.
  %s2, %n2 = tile.fused %h2, %h2, %w2, %b2 : (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>, tensor<768xbf16>, tensor<768xbf16>) -> (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>) {
  ^bb0(%a0: tensor<1x256x768xbf16>, %a1: tensor<1x256x768xbf16>, %a2: tensor<768xbf16>, %a3: tensor<768xbf16>):
    %sum = nn.add %a0, %a1 : (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>) -> tensor<1x256x768xbf16>
    %norm = nn.layer_norm %sum, %a2, %a3 : (tensor<1x256x768xbf16>, tensor<768xbf16>, tensor<768xbf16>) -> tensor<1x256x768xbf16>
    tile.yield %sum, %norm : tensor<1x256x768xbf16>, tensor<1x256x768xbf16>
  }
  %ga, %gr = tile.fused %s2, %n2, %h2, %w2, %h2 : (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>, tensor<1x256x768xbf16>, tensor<768xbf16>, tensor<1x256x768xbf16>) -> (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>) {
  ^bb0(%a0: tensor<1x256x768xbf16>, %a1: tensor<1x256x768xbf16>, %a2: tensor<1x256x768xbf16>, %a3: tensor<768xbf16>, %a4: tensor<1x256x768xbf16>):
    %sum = nn.add %a0, %a1 : (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>) -> tensor<1x256x768xbf16>
    %d = nn.layer_norm_grad %sum, %a2, %a3 : (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>, tensor<768xbf16>) -> tensor<1x256x768xbf16>
    %out = nn.add %a4, %d : (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>) -> tensor<1x256x768xbf16>
    tile.yield %sum, %out : tensor<1x256x768xbf16>, tensor<1x256x768xbf16>
  }
  // GPT-2: token and position embeddings summed.
  %e = tile.fused %wte, %ids, %wpe, %pos : (tensor<50257x768xbf16>, tensor<1x256xi32>, tensor<1024x768xbf16>, tensor<1x256xi32>) -> tensor<1x256x768xbf16> {
  ^bb0(%a0: tensor<50257x768xbf16>, %a1: tensor<1x256xi32>, %a2: tensor<1024x768xbf16>, %a3: tensor<1x256xi32>):
    %te = nn.embedding %a0, %a1 : (tensor<50257x768xbf16>, tensor<1x256xi32>) -> tensor<1x256x768xbf16>
    %pe = nn.embedding %a2, %a3 : (tensor<1024x768xbf16>, tensor<1x256xi32>) -> tensor<1x256x768xbf16>
    %sum = nn.add %te, %pe : (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>) -> tensor<1x256x768xbf16>
    tile.yield %sum : tensor<1x256x768xbf16>
  }
  // GPT-2's first region under nn-fuse: the embedding sum and the first
  // LayerNorm.
  %e2, %en = tile.fused %wte, %ids, %wpe, %pos, %w2, %b2 : (tensor<50257x768xbf16>, tensor<1x256xi32>, tensor<1024x768xbf16>, tensor<1x256xi32>, tensor<768xbf16>, tensor<768xbf16>) -> (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>) {
  ^bb0(%a0: tensor<50257x768xbf16>, %a1: tensor<1x256xi32>, %a2: tensor<1024x768xbf16>, %a3: tensor<1x256xi32>, %a4: tensor<768xbf16>, %a5: tensor<768xbf16>):
    %te = nn.embedding %a0, %a1 : (tensor<50257x768xbf16>, tensor<1x256xi32>) -> tensor<1x256x768xbf16>
    %pe = nn.embedding %a2, %a3 : (tensor<1024x768xbf16>, tensor<1x256xi32>) -> tensor<1x256x768xbf16>
    %sum = nn.add %te, %pe : (tensor<1x256x768xbf16>, tensor<1x256x768xbf16>) -> tensor<1x256x768xbf16>
    %norm = nn.layer_norm %sum, %a4, %a5 : (tensor<1x256x768xbf16>, tensor<768xbf16>, tensor<768xbf16>) -> tensor<1x256x768xbf16>
    tile.yield %sum, %norm : tensor<1x256x768xbf16>, tensor<1x256x768xbf16>
  }
  // Elementwise chains around a norm: an f32 residual cast and added, the
  // norm in a shared row, SwiGLU next to it at another width.
  %act, %y = tile.fused %gate, %up, %x32, %h, %w : (tensor<1x256x14336xbf16>, tensor<1x256x14336xbf16>, tensor<1x256x4096xf32>, tensor<1x256x4096xbf16>, tensor<4096xbf16>) -> (tensor<1x256x14336xbf16>, tensor<1x256x4096xbf16>) {
  ^bb0(%a0: tensor<1x256x14336xbf16>, %a1: tensor<1x256x14336xbf16>, %a2: tensor<1x256x4096xf32>, %a3: tensor<1x256x4096xbf16>, %a4: tensor<4096xbf16>):
    %sw = nn.swiglu %a0, %a1 : (tensor<1x256x14336xbf16>, tensor<1x256x14336xbf16>) -> tensor<1x256x14336xbf16>
    %c = nn.cast %a2 : (tensor<1x256x4096xf32>) -> tensor<1x256x4096xbf16>
    %sum = nn.add %a3, %c : (tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>) -> tensor<1x256x4096xbf16>
    %norm = nn.rms_norm %sum, %a4 : (tensor<1x256x4096xbf16>, tensor<4096xbf16>) -> tensor<1x256x4096xbf16>
    %g = nn.gelu %norm : (tensor<1x256x4096xbf16>) -> tensor<1x256x4096xbf16>
    tile.yield %sw, %g : tensor<1x256x14336xbf16>, tensor<1x256x4096xbf16>
  }
  return %s, %n, %a, %r, %q3, %k3, %s2, %n2, %ga, %gr, %e, %act, %y, %e2, %en : tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>, tensor<1x256x4096xbf16>, tensor<1x256x1024xbf16>, tensor<1x256x768xbf16>, tensor<1x256x768xbf16>, tensor<1x256x768xbf16>, tensor<1x256x768xbf16>, tensor<1x256x768xbf16>, tensor<1x256x14336xbf16>, tensor<1x256x4096xbf16>, tensor<1x256x768xbf16>, tensor<1x256x768xbf16>
}
