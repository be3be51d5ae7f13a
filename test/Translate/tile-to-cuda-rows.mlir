// RUN: kiln-translate --tile-to-cuda --split-input-file %s | FileCheck %s
// RUN: kiln-opt --split-input-file --tile-plan-memory %s | kiln-translate --tile-to-plan --split-input-file | FileCheck %s --check-prefix=PLAN

// Fused regions of row-local ops with one row count (tile::rowWiseRows),
// as nn-fuse makes them: ONE generated kernel per region, a block per row
// (runtime/cuda/device/RowRegion.cuh). Each stage (a row function, or a
// run of elementwise ops of one width) ends in __syncthreads(); yielded
// values go to their outputs and are re-read there, the others live in
// dynamic shared memory as FP32 rows (RoundedBf16 for bf16 values).

// Residual add + RMSNorm, yielding both: the sum is written to out0 and the
// norm reads it back; no shared rows. The launch bounds ask for 768
// resident threads per SM (24 blocks of 32).
// CHECK-LABEL: {{^}}// {{-+}} kernel kiln_row_
// CHECK-NOT: {{^}}// {{-+}} kernel
// CHECK: __launch_bounds__(32, 24)
// CHECK-NEXT: kiln_row_{{[0-9a-fx]+}}(const __nv_bfloat16 *__restrict__ in0, const __nv_bfloat16 *__restrict__ in1, const __nv_bfloat16 *__restrict__ in2, __nv_bfloat16 *__restrict__ out0, __nv_bfloat16 *__restrict__ out1, long long rows, float eps0)
// CHECK: constexpr int kThreads = 32;
// CHECK-NEXT: __shared__ float scratch[kThreads / 32];
// CHECK-NEXT: for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
// CHECK-NEXT: // nn.add
// CHECK-NEXT: for (int j = threadIdx.x * 8; j < 64; j += kThreads * 8) {
// CHECK: kiln::dev::loadElements<8>(in0 + row * 64 + j, a0);
// CHECK: kiln::dev::loadElements<8>(in1 + row * 64 + j, a1);
// CHECK: t0[e] = kiln::dev::roundBf16(a0[e] + a1[e]);
// CHECK-NEXT: kiln::dev::storeElements<8>(out0 + row * 64 + j, t0);
// CHECK: __syncthreads();
// CHECK-NEXT: // nn.rms_norm
// CHECK-NEXT: kiln::dev::rmsNormOfRow<kThreads>(out0 + row * 64, in2, out1 + row * 64, 64, eps0, scratch);
// CHECK-NEXT: __syncthreads();
// CHECK-NEXT: }
// CHECK-NEXT: }

// PLAN-LABEL: "kernels": [
// PLAN: "name": "kiln_row_[[ADD_RMS:.+]]",
// PLAN: "steps": [
// PLAN: "grid": [
// PLAN-NEXT: 8,
// PLAN: "kernel": "kiln_row_[[ADD_RMS]]"
// PLAN-NOT: "shared_bytes"
// PLAN: "outputs"

func.func @train_step(%h: tensor<2x4x64xbf16> {kiln.input = "h"}, %o: tensor<2x4x64xbf16> {kiln.input = "o"}, %w: tensor<64xbf16> {kiln.input = "w"})
    -> (tensor<2x4x64xbf16> {kiln.output = "s"}, tensor<2x4x64xbf16> {kiln.output = "n"}) {
  %s, %n = tile.fused %h, %o, %w : (tensor<2x4x64xbf16>, tensor<2x4x64xbf16>, tensor<64xbf16>) -> (tensor<2x4x64xbf16>, tensor<2x4x64xbf16>) {
  ^bb0(%a: tensor<2x4x64xbf16>, %b: tensor<2x4x64xbf16>, %g: tensor<64xbf16>):
    %sum = nn.add %a, %b : (tensor<2x4x64xbf16>, tensor<2x4x64xbf16>) -> tensor<2x4x64xbf16>
    %norm = nn.rms_norm %sum, %g : (tensor<2x4x64xbf16>, tensor<64xbf16>) -> tensor<2x4x64xbf16>
    tile.yield %sum, %norm : tensor<2x4x64xbf16>, tensor<2x4x64xbf16>
  }
  return %s, %n : tensor<2x4x64xbf16>, tensor<2x4x64xbf16>
}

// -----

// The same region twice (two layers): one kernel, launched by both steps.
// LayerNorm with bias, f32, a width (36) that is not a multiple of the
// vector width: scalar element access.
// CHECK-LABEL: {{^}}// {{-+}} kernel kiln_row_
// CHECK-NOT: {{^}}// {{-+}} kernel
// CHECK: for (int j = threadIdx.x * 1; j < 36; j += kThreads * 1) {
// CHECK: t0[e] = a0[e] + a1[e];
// CHECK: kiln::dev::layerNormOfRow<kThreads>(out0 + row * 36, in2, in3, out1 + row * 36, 36, eps0, scratch);
// CHECK-NOT: {{^}}// {{-+}} kernel

// PLAN-LABEL: "kernels": [
// PLAN-NEXT: {
// PLAN-NEXT: "name": "kiln_row_[[ADD_LN:.+]]",
// PLAN-NEXT: "source": {{.*}}
// PLAN-NEXT: }
// PLAN-NEXT: ]
// PLAN: "kernel": "kiln_row_[[ADD_LN]]"
// PLAN: "kernel": "kiln_row_[[ADD_LN]]"

func.func @train_step(%h: tensor<3x36xf32> {kiln.input = "h"}, %o: tensor<3x36xf32> {kiln.input = "o"}, %w: tensor<36xf32> {kiln.input = "w"}, %b: tensor<36xf32> {kiln.input = "b"})
    -> (tensor<3x36xf32> {kiln.output = "s"}, tensor<3x36xf32> {kiln.output = "n"}) {
  %s, %n = tile.fused %h, %o, %w, %b : (tensor<3x36xf32>, tensor<3x36xf32>, tensor<36xf32>, tensor<36xf32>) -> (tensor<3x36xf32>, tensor<3x36xf32>) {
  ^bb0(%x: tensor<3x36xf32>, %y: tensor<3x36xf32>, %g: tensor<36xf32>, %c: tensor<36xf32>):
    %sum = nn.add %x, %y : (tensor<3x36xf32>, tensor<3x36xf32>) -> tensor<3x36xf32>
    %norm = nn.layer_norm %sum, %g, %c : (tensor<3x36xf32>, tensor<36xf32>, tensor<36xf32>) -> tensor<3x36xf32>
    tile.yield %sum, %norm : tensor<3x36xf32>, tensor<3x36xf32>
  }
  %s2, %n2 = tile.fused %n, %s, %w, %b : (tensor<3x36xf32>, tensor<3x36xf32>, tensor<36xf32>, tensor<36xf32>) -> (tensor<3x36xf32>, tensor<3x36xf32>) {
  ^bb0(%x: tensor<3x36xf32>, %y: tensor<3x36xf32>, %g: tensor<36xf32>, %c: tensor<36xf32>):
    %sum = nn.add %x, %y : (tensor<3x36xf32>, tensor<3x36xf32>) -> tensor<3x36xf32>
    %norm = nn.layer_norm %sum, %g, %c : (tensor<3x36xf32>, tensor<36xf32>, tensor<36xf32>) -> tensor<3x36xf32>
    tile.yield %sum, %norm : tensor<3x36xf32>, tensor<3x36xf32>
  }
  return %s2, %n2 : tensor<3x36xf32>, tensor<3x36xf32>
}

// -----

// Backward: the two gradient contributions summed, the RMSNorm input
// gradient, the residual added. The norm's gradient %d is not yielded: a
// shared row (RoundedBf16: bf16 rounded as the host rounds it) of 64 * 4
// bytes.
// CHECK-LABEL: {{^}}// {{-+}} kernel kiln_row_
// CHECK-NOT: {{^}}// {{-+}} kernel
// CHECK: kiln::dev::RoundedBf16 *s0 = kiln::dev::sharedRow<kiln::dev::RoundedBf16>(0);
// CHECK: // nn.add
// CHECK: kiln::dev::storeElements<8>(out0 + row * 64 + j, t0);
// CHECK: __syncthreads();
// CHECK-NEXT: // nn.rms_norm_grad
// CHECK-NEXT: kiln::dev::rmsNormGradOfRow<kThreads>(out0 + row * 64, in2 + row * 64, in3, s0, 64, eps0, scratch);
// CHECK-NEXT: __syncthreads();
// CHECK-NEXT: // nn.add
// CHECK: kiln::dev::loadElements<8>(in4 + row * 64 + j, a0);
// CHECK: kiln::dev::loadElements<8>(s0 + j, a1);
// CHECK: kiln::dev::storeElements<8>(out1 + row * 64 + j, t0);
// CHECK: __syncthreads();

// PLAN: "kernel": "kiln_row_
// PLAN: "shared_bytes": 256

func.func @train_step(%g1: tensor<8x64xbf16> {kiln.input = "g1"}, %g2: tensor<8x64xbf16> {kiln.input = "g2"}, %x: tensor<8x64xbf16> {kiln.input = "x"}, %w: tensor<64xbf16> {kiln.input = "w"}, %resid: tensor<8x64xbf16> {kiln.input = "resid"})
    -> (tensor<8x64xbf16> {kiln.output = "a"}, tensor<8x64xbf16> {kiln.output = "r"}) {
  %a, %r = tile.fused %g1, %g2, %x, %w, %resid : (tensor<8x64xbf16>, tensor<8x64xbf16>, tensor<8x64xbf16>, tensor<64xbf16>, tensor<8x64xbf16>) -> (tensor<8x64xbf16>, tensor<8x64xbf16>) {
  ^bb0(%p: tensor<8x64xbf16>, %q: tensor<8x64xbf16>, %in: tensor<8x64xbf16>, %wt: tensor<64xbf16>, %res: tensor<8x64xbf16>):
    %sum = nn.add %p, %q : (tensor<8x64xbf16>, tensor<8x64xbf16>) -> tensor<8x64xbf16>
    %d = nn.rms_norm_grad %sum, %in, %wt : (tensor<8x64xbf16>, tensor<8x64xbf16>, tensor<64xbf16>) -> tensor<8x64xbf16>
    %out = nn.add %res, %d : (tensor<8x64xbf16>, tensor<8x64xbf16>) -> tensor<8x64xbf16>
    tile.yield %sum, %out : tensor<8x64xbf16>, tensor<8x64xbf16>
  }
  return %a, %r : tensor<8x64xbf16>, tensor<8x64xbf16>
}

// -----

// The LayerNorm analogue, in f32: the gradient row is a float row.
// CHECK-LABEL: {{^}}// {{-+}} kernel kiln_row_
// CHECK: float *s0 = kiln::dev::sharedRow<float>(0);
// CHECK: kiln::dev::layerNormGradOfRow<kThreads>(out0 + row * 64, in2 + row * 64, in3, s0, 64, eps0, scratch);
// CHECK: kiln::dev::loadElements<8>(s0 + j, a1);

func.func @train_step(%g1: tensor<8x64xf32> {kiln.input = "g1"}, %g2: tensor<8x64xf32> {kiln.input = "g2"}, %x: tensor<8x64xf32> {kiln.input = "x"}, %w: tensor<64xf32> {kiln.input = "w"}, %resid: tensor<8x64xf32> {kiln.input = "resid"})
    -> (tensor<8x64xf32> {kiln.output = "a"}, tensor<8x64xf32> {kiln.output = "r"}) {
  %a, %r = tile.fused %g1, %g2, %x, %w, %resid : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>, tensor<64xf32>, tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  ^bb0(%p: tensor<8x64xf32>, %q: tensor<8x64xf32>, %in: tensor<8x64xf32>, %wt: tensor<64xf32>, %res: tensor<8x64xf32>):
    %sum = nn.add %p, %q : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
    %d = nn.layer_norm_grad %sum, %in, %wt : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
    %out = nn.add %res, %d : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
    tile.yield %sum, %out : tensor<8x64xf32>, tensor<8x64xf32>
  }
  return %a, %r : tensor<8x64xf32>, tensor<8x64xf32>
}

// -----

// Two RoPEs sharing positions (q: 4 heads, k: 2 heads of 16), forward and
// inverse: one kernel each, the position read once per row; threads: one
// per frequency of half a head.
// CHECK-LABEL: {{^}}// {{-+}} kernel kiln_row_
// CHECK: constexpr int kThreads = 32;
// CHECK: kiln::dev::ropeOfRow<kThreads>(in0 + row * 64, out0 + row * 64, (long long)in2[row], 4, 16, theta0, {{true|false}});
// CHECK-NEXT: __syncthreads();
// CHECK-NEXT: // nn.rope
// CHECK-NEXT: kiln::dev::ropeOfRow<kThreads>(in1 + row * 32, out1 + row * 32, (long long)in2[row], 2, 16, theta1, {{true|false}});
// CHECK-LABEL: {{^}}// {{-+}} kernel kiln_row_
// CHECK: kiln::dev::ropeOfRow<kThreads>({{.*}}, 4, 16, theta0, {{true|false}});
// CHECK-NOT: {{^}}// {{-+}} kernel

func.func @train_step(%q: tensor<2x4x64xbf16> {kiln.input = "q"}, %k: tensor<2x4x32xbf16> {kiln.input = "k"}, %pos: tensor<2x4xi32> {kiln.input = "pos"})
    -> (tensor<2x4x64xbf16> {kiln.output = "q1"}, tensor<2x4x32xbf16> {kiln.output = "k1"}) {
  %q2, %k2 = tile.fused %q, %k, %pos : (tensor<2x4x64xbf16>, tensor<2x4x32xbf16>, tensor<2x4xi32>) -> (tensor<2x4x64xbf16>, tensor<2x4x32xbf16>) {
  ^bb0(%a: tensor<2x4x64xbf16>, %b: tensor<2x4x32xbf16>, %p: tensor<2x4xi32>):
    %ra = nn.rope %a positions(%p) {num_heads = 4 : i64, theta = 500000.0 : f64} : (tensor<2x4x64xbf16>, tensor<2x4xi32>) -> tensor<2x4x64xbf16>
    %rb = nn.rope %b positions(%p) {num_heads = 2 : i64, theta = 500000.0 : f64} : (tensor<2x4x32xbf16>, tensor<2x4xi32>) -> tensor<2x4x32xbf16>
    tile.yield %ra, %rb : tensor<2x4x64xbf16>, tensor<2x4x32xbf16>
  }
  %q3, %k3 = tile.fused %q2, %k2, %pos : (tensor<2x4x64xbf16>, tensor<2x4x32xbf16>, tensor<2x4xi32>) -> (tensor<2x4x64xbf16>, tensor<2x4x32xbf16>) {
  ^bb0(%a: tensor<2x4x64xbf16>, %b: tensor<2x4x32xbf16>, %p: tensor<2x4xi32>):
    %ra = nn.rope %a positions(%p) {num_heads = 4 : i64, theta = 500000.0 : f64, inverse} : (tensor<2x4x64xbf16>, tensor<2x4xi32>) -> tensor<2x4x64xbf16>
    %rb = nn.rope %b positions(%p) {num_heads = 2 : i64, theta = 500000.0 : f64, inverse} : (tensor<2x4x32xbf16>, tensor<2x4xi32>) -> tensor<2x4x32xbf16>
    tile.yield %ra, %rb : tensor<2x4x64xbf16>, tensor<2x4x32xbf16>
  }
  return %q3, %k3 : tensor<2x4x64xbf16>, tensor<2x4x32xbf16>
}

// -----

// GPT-2's embedding: token and position gathers summed. Only the sum is
// yielded, so both gathers fill shared rows (2 x 64 x 4 bytes); a bad id
// sets the error flag.
// CHECK-LABEL: {{^}}// {{-+}} kernel kiln_row_
// CHECK: , long long rows, int *error) {
// CHECK: kiln::dev::RoundedBf16 *s0 = kiln::dev::sharedRow<kiln::dev::RoundedBf16>(0);
// CHECK-NEXT: kiln::dev::RoundedBf16 *s1 = kiln::dev::sharedRow<kiln::dev::RoundedBf16>(256);
// CHECK: kiln::dev::embeddingOfRow<kThreads>(in0, (long long)in1[row], 100, s0, 64, error, row);
// CHECK-NEXT: __syncthreads();
// CHECK: kiln::dev::embeddingOfRow<kThreads>(in2, (long long)in3[row], 16, s1, 64, error, row);
// CHECK-NEXT: __syncthreads();
// CHECK-NEXT: // nn.add
// CHECK: kiln::dev::loadElements<8>(s0 + j, a0);
// CHECK: kiln::dev::loadElements<8>(s1 + j, a1);
// CHECK: kiln::dev::storeElements<8>(out0 + row * 64 + j, t0);

// PLAN: "shared_bytes": 512

func.func @train_step(%wte: tensor<100x64xbf16> {kiln.input = "wte"}, %ids: tensor<2x4xi32> {kiln.input = "ids"}, %wpe: tensor<16x64xbf16> {kiln.input = "wpe"}, %pos: tensor<2x4xi32> {kiln.input = "pos"})
    -> (tensor<2x4x64xbf16> {kiln.output = "h"}) {
  %h = tile.fused %wte, %ids, %wpe, %pos : (tensor<100x64xbf16>, tensor<2x4xi32>, tensor<16x64xbf16>, tensor<2x4xi32>) -> tensor<2x4x64xbf16> {
  ^bb0(%t: tensor<100x64xbf16>, %i: tensor<2x4xi32>, %p: tensor<16x64xbf16>, %j: tensor<2x4xi32>):
    %te = nn.embedding %t, %i : (tensor<100x64xbf16>, tensor<2x4xi32>) -> tensor<2x4x64xbf16>
    %pe = nn.embedding %p, %j : (tensor<16x64xbf16>, tensor<2x4xi32>) -> tensor<2x4x64xbf16>
    %sum = nn.add %te, %pe : (tensor<2x4x64xbf16>, tensor<2x4x64xbf16>) -> tensor<2x4x64xbf16>
    tile.yield %sum : tensor<2x4x64xbf16>
  }
  return %h : tensor<2x4x64xbf16>
}

// -----

// Elementwise chains around a norm: the cast and the add are one stage
// (the cast stays in registers), the norm's result is a shared row that
// the closing stage (mul, then gelu, in registers) reads.
// CHECK-LABEL: {{^}}// {{-+}} kernel kiln_row_
// CHECK: // nn.cast, nn.add
// CHECK: t0[e] = kiln::dev::roundBf16(a0[e]);
// CHECK: t1[e] = kiln::dev::roundBf16(a1[e] + t0[e]);
// CHECK-NEXT: kiln::dev::storeElements<8>(out0 + row * 64 + j, t1);
// CHECK: __syncthreads();
// CHECK-NEXT: // nn.rms_norm
// CHECK-NEXT: kiln::dev::rmsNormOfRow<kThreads>(out0 + row * 64, in2, s0, 64, eps0, scratch);
// CHECK-NEXT: __syncthreads();
// CHECK-NEXT: // nn.mul, nn.gelu
// CHECK: kiln::dev::loadElements<8>(s0 + j, a0);
// CHECK: t0[e] = kiln::dev::roundBf16(a0[e] * a0[e]);
// CHECK: t1[e] = kiln::dev::roundBf16(kiln::dev::gelu(t0[e], true));
// CHECK-NEXT: kiln::dev::storeElements<8>(out1 + row * 64 + j, t1);
// CHECK: __syncthreads();

func.func @train_step(%x: tensor<2x4x64xf32> {kiln.input = "x"}, %h: tensor<2x4x64xbf16> {kiln.input = "h"}, %w: tensor<64xbf16> {kiln.input = "w"})
    -> (tensor<2x4x64xbf16> {kiln.output = "s"}, tensor<2x4x64xbf16> {kiln.output = "y"}) {
  %s, %y = tile.fused %x, %h, %w : (tensor<2x4x64xf32>, tensor<2x4x64xbf16>, tensor<64xbf16>) -> (tensor<2x4x64xbf16>, tensor<2x4x64xbf16>) {
  ^bb0(%a: tensor<2x4x64xf32>, %b: tensor<2x4x64xbf16>, %g: tensor<64xbf16>):
    %c = nn.cast %a : (tensor<2x4x64xf32>) -> tensor<2x4x64xbf16>
    %sum = nn.add %b, %c : (tensor<2x4x64xbf16>, tensor<2x4x64xbf16>) -> tensor<2x4x64xbf16>
    %n = nn.rms_norm %sum, %g : (tensor<2x4x64xbf16>, tensor<64xbf16>) -> tensor<2x4x64xbf16>
    %sq = nn.mul %n, %n : (tensor<2x4x64xbf16>, tensor<2x4x64xbf16>) -> tensor<2x4x64xbf16>
    %act = nn.gelu %sq approximate = tanh : (tensor<2x4x64xbf16>) -> tensor<2x4x64xbf16>
    tile.yield %sum, %act : tensor<2x4x64xbf16>, tensor<2x4x64xbf16>
  }
  return %s, %y : tensor<2x4x64xbf16>, tensor<2x4x64xbf16>
}

// -----

// Elementwise ops only, of two widths over the same rows (SwiGLU's 128,
// then an add at 64): not one flat loop, a row region of two stages.
// CHECK-LABEL: {{^}}// {{-+}} kernel kiln_row_
// CHECK-NOT: __shared__ float scratch
// CHECK: // nn.swiglu
// CHECK-NEXT: for (int j = threadIdx.x * 8; j < 128; j += kThreads * 8) {
// CHECK: t0[e] = kiln::dev::roundBf16(kiln::dev::silu(a0[e]) * a1[e]);
// CHECK: __syncthreads();
// CHECK-NEXT: // nn.add
// CHECK-NEXT: for (int j = threadIdx.x * 8; j < 64; j += kThreads * 8) {

func.func @train_step(%g: tensor<2x4x128xbf16> {kiln.input = "g"}, %u: tensor<2x4x128xbf16> {kiln.input = "u"}, %h: tensor<2x4x64xbf16> {kiln.input = "h"})
    -> (tensor<2x4x128xbf16> {kiln.output = "a"}, tensor<2x4x64xbf16> {kiln.output = "s"}) {
  %a, %s = tile.fused %g, %u, %h : (tensor<2x4x128xbf16>, tensor<2x4x128xbf16>, tensor<2x4x64xbf16>) -> (tensor<2x4x128xbf16>, tensor<2x4x64xbf16>) {
  ^bb0(%x: tensor<2x4x128xbf16>, %y: tensor<2x4x128xbf16>, %z: tensor<2x4x64xbf16>):
    %act = nn.swiglu %x, %y : (tensor<2x4x128xbf16>, tensor<2x4x128xbf16>) -> tensor<2x4x128xbf16>
    %sum = nn.add %z, %z : (tensor<2x4x64xbf16>, tensor<2x4x64xbf16>) -> tensor<2x4x64xbf16>
    tile.yield %act, %sum : tensor<2x4x128xbf16>, tensor<2x4x64xbf16>
  }
  return %a, %s : tensor<2x4x128xbf16>, tensor<2x4x64xbf16>
}
