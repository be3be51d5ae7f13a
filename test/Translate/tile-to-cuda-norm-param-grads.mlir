// RUN: kiln-translate --tile-to-cuda %s | FileCheck %s
// RUN: kiln-opt %s --tile-plan-memory | kiln-translate --tile-to-plan | FileCheck %s --check-prefix=PLAN

// nn-fuse's norm-param-grads region (a LayerNorm's weight gradient and the
// column sum of the same gradient): the row statistics, one pass over the
// gradient into two sets of partials, and each gradient's finishing sum.

// CHECK-LABEL: // ----- kernel kiln_layerNormParamGradPartials_bf16
// CHECK: kiln::dev::layerNormParamGradPartials<__nv_bfloat16>(dy, x, mean, rstd, wPartials, bPartials, rows, (int)dim);
// CHECK-LABEL: // ----- kernel kiln_layerRowStats_bf16_t32
// CHECK: (const __nv_bfloat16 *__restrict__ x, float *mean, float *rstd, long long rows, long long dim, float eps)

// Scratch: the statistics (2 x 16 rows x 4 bytes), then one chunk of 64
// FP32 partials for each gradient.
// PLAN: "kernel": "kiln_layerRowStats_bf16_t32"
// PLAN: "kernel": "kiln_layerNormParamGradPartials_bf16"
// PLAN: "kernel": "kiln_finish_columns_f32"
// PLAN: "kernel": "kiln_finish_columns_f32"
// PLAN: "scratch_bytes": 640

func.func @train_step(%dy: tensor<2x8x64xbf16> {kiln.input = "dy"}, %x: tensor<2x8x64xbf16> {kiln.input = "x"})
    -> (tensor<64xf32> {kiln.output = "dw"}, tensor<64xf32> {kiln.output = "db"}) {
  %0:2 = tile.fused %dy, %x : (tensor<2x8x64xbf16>, tensor<2x8x64xbf16>) -> (tensor<64xf32>, tensor<64xf32>) {
  ^bb0(%g: tensor<2x8x64xbf16>, %i: tensor<2x8x64xbf16>):
    %w = nn.layer_norm_weight_grad %g, %i : (tensor<2x8x64xbf16>, tensor<2x8x64xbf16>) -> tensor<64xf32>
    %b = nn.column_sum %g : (tensor<2x8x64xbf16>) -> tensor<64xf32>
    tile.yield %w, %b : tensor<64xf32>, tensor<64xf32>
  }
  return %0#0, %0#1 : tensor<64xf32>, tensor<64xf32>
}
