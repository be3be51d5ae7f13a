//===- FusedRegionTest.cpp - Fused steps against their unfused ops --------===//
//
// Each kind of region nn-fuse makes (residual add + norm, the norm's input
// gradient with its accumulations, LayerNorm with a bias, the two RoPEs of
// Q and K, embedding gathers and their sum) run as a FusedRegion over
// enough rows to go parallel on two threads, compared bit for bit with the
// whole-tensor kernels run one after the other (each result rounded to its
// dtype): the unfused step. A region that is not row-local (a weight
// gradient) runs op by op and agrees too.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/FusedRegion.h"

#include "runtime/Error.h"
#include "runtime/Numerics.h"
#include "runtime/host/Kernels.h"

#include "KernelTestSupport.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>

using namespace kiln::rt;
using namespace kiln::rt::host;
using kiln::rt::host::testing::randomIds;
using kiln::rt::host::testing::randomVector;
using nlohmann::json;

namespace {

// 130 rows of 160: 20800 elements, past the kernels' parallel threshold.
constexpr std::int64_t kRows = 130, kDim = 160;
constexpr double kEps = 1e-5;

/// A plan of one fused step over values laid out one after another.
class RegionBuilder {
public:
  /// Adds a value; returns its id.
  int value(const std::string &dtype, std::vector<std::int64_t> shape) {
    std::int64_t elements = 1;
    for (std::int64_t d : shape)
      elements *= d;
    std::int64_t bytes = elements * (dtype == "bf16" ? 2 : 4);
    int id = static_cast<int>(values.size());
    values.push_back(
        json{{"id", id}, {"dtype", dtype}, {"shape", shape}, {"offset", next}});
    offsets.push_back(next);
    next += (bytes + 255) / 256 * 256;
    return id;
  }
  /// Adds a row-strided view of value `base` (whose rows are `pitch`
  /// elements) starting at column `column`; returns its id.
  int view(int base, const std::string &dtype, std::vector<std::int64_t> shape,
           std::int64_t column, std::int64_t pitch) {
    int id = static_cast<int>(values.size());
    std::int64_t offset = offsets[base] + column * (dtype == "bf16" ? 2 : 4);
    values.push_back(json{{"id", id},
                          {"dtype", dtype},
                          {"shape", shape},
                          {"offset", offset},
                          {"row_stride", pitch}});
    offsets.push_back(offset);
    return id;
  }
  void op(const std::string &name, std::vector<int> operands,
          std::vector<int> results, json attrs = json::object()) {
    body.push_back(json{{"op", name},
                        {"operands", operands},
                        {"results", results},
                        {"attrs", std::move(attrs)}});
  }
  void temporary(int index, const std::string &dtype,
                 std::vector<std::int64_t> shape) {
    temporaries.push_back(
        json{{"index", index}, {"dtype", dtype}, {"shape", shape}});
  }

  /// Parses the plan; `arena` gets its bytes.
  Plan build(std::vector<int> inputs, std::vector<int> outputs,
             std::vector<int> yield) {
    json plan{{"format", "kiln-plan"},
              {"version", kPlanVersion},
              {"arena_bytes", next},
              {"persistent_bytes", 0},
              {"values", values},
              {"inputs", json::array()},
              {"outputs", json::array()},
              {"parameters", json::array()},
              {"steps", json::array({json{{"kernel", "fused"},
                                          {"chunk", "F"},
                                          {"inputs", inputs},
                                          {"outputs", outputs},
                                          {"temporaries", temporaries},
                                          {"body", body},
                                          {"yield", yield}}})}};
    arena.assign(next, std::byte{0});
    return Plan::parse(plan.dump(), "fused-region-test");
  }

  template <typename T> T *at(int id) {
    return reinterpret_cast<T *>(arena.data() + offsets[id]);
  }
  void setF32(int id, const std::vector<float> &data) {
    std::memcpy(at<float>(id), data.data(), data.size() * sizeof(float));
  }
  /// Stores `data` rounded to bf16 and returns the rounded values.
  std::vector<float> setBf16(int id, std::vector<float> data) {
    auto *bits = at<std::uint16_t>(id);
    for (std::size_t i = 0; i < data.size(); ++i) {
      bits[i] = floatToBf16(data[i]);
      data[i] = bf16ToFloat(bits[i]);
    }
    return data;
  }
  std::vector<float> readBf16(int id, std::size_t n) {
    std::vector<float> out(n);
    for (std::size_t i = 0; i < n; ++i)
      out[i] = bf16ToFloat(at<std::uint16_t>(id)[i]);
    return out;
  }

  std::vector<std::byte> arena;

private:
  json values = json::array(), body = json::array(),
       temporaries = json::array();
  std::vector<std::int64_t> offsets;
  std::int64_t next = 0;
};

/// Runs the plan's one step; returns whether it ran row by row.
bool runRegion(const Plan &plan, RegionBuilder &b) {
  FusedRegion region(plan, plan.steps.at(0), b.arena.data());
  std::vector<float> scratch(region.scratchFloats());
  std::vector<std::byte> narrow(region.narrowBytes());
  region.attach(scratch.data(), narrow.data());
  region.run();
  return region.rowWise();
}

void roundAll(std::vector<float> &v) {
  for (float &x : v)
    x = roundToBf16(x);
}

/// Bitwise equality of two float vectors.
void expectSame(const float *actual, const std::vector<float> &expected,
                const char *what) {
  EXPECT_EQ(std::memcmp(actual, expected.data(), expected.size() * 4), 0)
      << what << " differs from the unfused ops";
}

class FusedRegionTest : public kiln::rt::host::testing::KernelTest {
protected:
  void SetUp() override {
    KernelTest::SetUp();
    saved = omp_get_max_threads();
    omp_set_num_threads(2);
  }
  void TearDown() override { omp_set_num_threads(saved); }
  int saved = 1;
};

TEST_F(FusedRegionTest, ResidualAddAndRmsNormIsTheSumAndTheNorm) {
  RegionBuilder b;
  int h = b.value("f32", {2, 65, kDim}), o = b.value("f32", {2, 65, kDim});
  int w = b.value("f32", {kDim});
  int sum = b.value("f32", {2, 65, kDim}), norm = b.value("f32", {2, 65, kDim});
  b.temporary(3, "f32", {2, 65, kDim});
  b.temporary(4, "f32", {2, 65, kDim});
  b.op("add", {0, 1}, {3});
  b.op("rms_norm", {3, 2}, {4}, json{{"epsilon", kEps}});
  Plan plan = b.build({h, o, w}, {sum, norm}, {3, 4});
  auto x = randomVector<float>(kRows * kDim),
       y = randomVector<float>(kRows * kDim), wv = randomVector<float>(kDim);
  b.setF32(h, x);
  b.setF32(o, y);
  b.setF32(w, wv);
  EXPECT_TRUE(runRegion(plan, b));

  std::vector<float> s(kRows * kDim), n(kRows * kDim);
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = x[i] + y[i];
  rmsNorm<float>(s.data(), wv.data(), n.data(), kRows, kDim, kEps);
  expectSame(b.at<float>(sum), s, "the sum");
  expectSame(b.at<float>(norm), n, "the normalized rows");
}

TEST_F(FusedRegionTest, Bf16ValuesAreRoundedWhereTheUnfusedOpsStoreThem) {
  RegionBuilder b;
  int h = b.value("bf16", {kRows, kDim}), o = b.value("bf16", {kRows, kDim});
  int w = b.value("bf16", {kDim}), bias = b.value("bf16", {kDim});
  int norm = b.value("bf16", {kRows, kDim});
  b.temporary(4, "bf16", {kRows, kDim}); // the sum stays on chip
  b.temporary(5, "bf16", {kRows, kDim});
  b.op("add", {0, 1}, {4});
  b.op("layer_norm", {4, 2, 3}, {5}, json{{"epsilon", kEps}});
  Plan plan = b.build({h, o, w, bias}, {norm}, {5});
  auto x = b.setBf16(h, randomVector<float>(kRows * kDim));
  auto y = b.setBf16(o, randomVector<float>(kRows * kDim));
  auto wv = b.setBf16(w, randomVector<float>(kDim));
  auto bv = b.setBf16(bias, randomVector<float>(kDim));
  EXPECT_TRUE(runRegion(plan, b));

  std::vector<float> s(kRows * kDim), n(kRows * kDim);
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = x[i] + y[i];
  roundAll(s);
  layerNorm<float>(s.data(), wv.data(), bv.data(), n.data(), kRows, kDim, kEps);
  roundAll(n);
  std::vector<float> actual = b.readBf16(norm, n.size());
  expectSame(actual.data(), n, "the normalized rows");
}

TEST_F(FusedRegionTest, NormGradientWithItsAccumulations) {
  for (const char *grad : {"rms_norm_grad", "layer_norm_grad"}) {
    RegionBuilder b;
    int g1 = b.value("f32", {kRows, kDim}), g2 = b.value("f32", {kRows, kDim});
    int x = b.value("f32", {kRows, kDim}), w = b.value("f32", {kDim});
    int res = b.value("f32", {kRows, kDim});
    int a = b.value("f32", {kRows, kDim}), r = b.value("f32", {kRows, kDim});
    b.temporary(5, "f32", {kRows, kDim});
    b.temporary(6, "f32", {kRows, kDim});
    b.temporary(7, "f32", {kRows, kDim});
    b.op("add", {0, 1}, {5});
    b.op(grad, {5, 2, 3}, {6}, json{{"epsilon", kEps}});
    b.op("add", {4, 6}, {7});
    Plan plan = b.build({g1, g2, x, w, res}, {a, r}, {5, 7});
    auto v1 = randomVector<float>(kRows * kDim),
         v2 = randomVector<float>(kRows * kDim),
         xv = randomVector<float>(kRows * kDim), wv = randomVector<float>(kDim),
         rv = randomVector<float>(kRows * kDim);
    b.setF32(g1, v1);
    b.setF32(g2, v2);
    b.setF32(x, xv);
    b.setF32(w, wv);
    b.setF32(res, rv);
    EXPECT_TRUE(runRegion(plan, b)) << grad;

    std::vector<float> sum(v1.size()), d(v1.size()), out(v1.size());
    for (std::size_t i = 0; i < sum.size(); ++i)
      sum[i] = v1[i] + v2[i];
    if (std::string(grad) == "rms_norm_grad")
      rmsNormGrad<float>(sum.data(), xv.data(), wv.data(), d.data(), kRows,
                         kDim, kEps);
    else
      layerNormGrad<float>(sum.data(), xv.data(), wv.data(), d.data(), kRows,
                           kDim, kEps);
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = rv[i] + d[i];
    expectSame(b.at<float>(a), sum, grad);
    expectSame(b.at<float>(r), out, grad);
  }
}

TEST_F(FusedRegionTest, TheRopesOfQueryAndKeyShareTheirPositions) {
  for (bool inverse : {false, true}) {
    RegionBuilder b;
    int q = b.value("f32", {2, 65, 128}), k = b.value("f32", {2, 65, 64});
    int p = b.value("i32", {2, 65});
    int qr = b.value("f32", {2, 65, 128}), kr = b.value("f32", {2, 65, 64});
    b.temporary(3, "f32", {2, 65, 128});
    b.temporary(4, "f32", {2, 65, 64});
    json attrs{{"num_heads", 4}, {"theta", 10000.0}, {"inverse", inverse}};
    b.op("rope", {0, 2}, {3}, attrs);
    attrs["num_heads"] = 2;
    b.op("rope", {1, 2}, {4}, attrs);
    Plan plan = b.build({q, k, p}, {qr, kr}, {3, 4});
    auto qv = randomVector<float>(kRows * 128),
         kv = randomVector<float>(kRows * 64);
    b.setF32(q, qv);
    b.setF32(k, kv);
    auto positions = randomIds(kRows, 1000);
    std::memcpy(b.at<std::int32_t>(p), positions.data(), kRows * 4);
    EXPECT_TRUE(runRegion(plan, b));

    std::vector<float> qe(qv.size()), ke(kv.size());
    rope<float>(qv.data(), positions.data(), qe.data(), 2, 65, 4, 32, 10000.0,
                inverse);
    rope<float>(kv.data(), positions.data(), ke.data(), 2, 65, 2, 32, 10000.0,
                inverse);
    expectSame(b.at<float>(qr), qe, "rotated queries");
    expectSame(b.at<float>(kr), ke, "rotated keys");
  }
}

TEST_F(FusedRegionTest, TokenAndPositionGathersAndTheirSum) {
  RegionBuilder b;
  int wte = b.value("bf16", {50, kDim}), wpe = b.value("bf16", {65, kDim});
  int tok = b.value("i32", {2, 65}), pos = b.value("i32", {2, 65});
  int h = b.value("bf16", {2, 65, kDim});
  for (int t : {4, 5, 6})
    b.temporary(t, "bf16", {2, 65, kDim});
  b.op("embedding", {0, 2}, {4});
  b.op("embedding", {1, 3}, {5});
  b.op("add", {4, 5}, {6});
  Plan plan = b.build({wte, wpe, tok, pos}, {h}, {6});
  auto te = b.setBf16(wte, randomVector<float>(50 * kDim));
  auto pe = b.setBf16(wpe, randomVector<float>(65 * kDim));
  auto ids = randomIds(kRows, 50), positions = randomIds(kRows, 65);
  std::memcpy(b.at<std::int32_t>(tok), ids.data(), kRows * 4);
  std::memcpy(b.at<std::int32_t>(pos), positions.data(), kRows * 4);
  EXPECT_TRUE(runRegion(plan, b));

  std::vector<float> e(kRows * kDim), pv(kRows * kDim), sum(kRows * kDim);
  embedding<float>(te.data(), ids.data(), e.data(), kRows, 50, kDim);
  embedding<float>(pe.data(), positions.data(), pv.data(), kRows, 65, kDim);
  for (std::size_t i = 0; i < sum.size(); ++i)
    sum[i] = e[i] + pv[i];
  roundAll(sum);
  std::vector<float> actual = b.readBf16(h, sum.size());
  expectSame(actual.data(), sum, "the embeddings' sum");

  // An id outside the table is refused before any row is written.
  ids[77] = 50;
  std::memcpy(b.at<std::int32_t>(tok), ids.data(), kRows * 4);
  try {
    runRegion(plan, b);
    ADD_FAILURE() << "an out-of-range id ran";
  } catch (const Error &e) {
    EXPECT_STREQ(e.what(), "token id 50 at position 77 is outside the "
                           "vocabulary (vocab_size 50)");
  }
}

// SwiGLU reading gate and up in place from the packed gate|up GEMM output
// (row-strided views) and its gradient writing dgate and dup into the
// packed gradient: the bits of the contiguous kernels, in FP32 and BF16.
TEST_F(FusedRegionTest, RowStridedViewsAreReadAndWrittenInPlace) {
  for (const char *dtype : {"f32", "bf16"}) {
    SCOPED_TRACE(dtype);
    bool bf16 = std::string(dtype) == "bf16";
    RegionBuilder b;
    int packed = b.value(dtype, {kRows, 2 * kDim});
    int gate = b.view(packed, dtype, {kRows, kDim}, 0, 2 * kDim);
    int up = b.view(packed, dtype, {kRows, kDim}, kDim, 2 * kDim);
    int dy = b.value(dtype, {kRows, kDim});
    int y = b.value(dtype, {kRows, kDim});
    int dpacked = b.value(dtype, {kRows, 2 * kDim});
    int dgate = b.view(dpacked, dtype, {kRows, kDim}, 0, 2 * kDim);
    int dup = b.view(dpacked, dtype, {kRows, kDim}, kDim, 2 * kDim);
    // Local values: gate, up, dy (inputs), then y, dgate, dup.
    b.temporary(3, dtype, {kRows, kDim});
    b.temporary(4, dtype, {kRows, kDim});
    b.temporary(5, dtype, {kRows, kDim});
    b.op("swiglu", {0, 1}, {3});
    b.op("swiglu_grad", {2, 0, 1}, {4, 5});
    Plan plan = b.build({gate, up, dy}, {y, dgate, dup}, {3, 4, 5});
    auto values = randomVector<float>(kRows * 2 * kDim),
         grads = randomVector<float>(kRows * kDim);
    if (bf16) {
      values = b.setBf16(packed, values);
      grads = b.setBf16(dy, grads);
    } else {
      b.setF32(packed, values);
      b.setF32(dy, grads);
    }
    EXPECT_TRUE(runRegion(plan, b));

    // The unfused kernels on contiguous copies of the parts.
    std::vector<float> g(kRows * kDim), u(kRows * kDim);
    for (std::int64_t r = 0; r < kRows; ++r) {
      std::copy_n(values.data() + r * 2 * kDim, kDim, g.data() + r * kDim);
      std::copy_n(values.data() + r * 2 * kDim + kDim, kDim,
                  u.data() + r * kDim);
    }
    std::vector<float> ye(g.size()), dge(g.size()), due(g.size());
    swiglu<float>(g.data(), u.data(), ye.data(), ye.size());
    swigluGrad<float>(grads.data(), g.data(), u.data(), dge.data(), due.data(),
                      g.size());
    std::vector<float> dpe(kRows * 2 * kDim);
    for (std::int64_t r = 0; r < kRows; ++r) {
      std::copy_n(dge.data() + r * kDim, kDim, dpe.data() + r * 2 * kDim);
      std::copy_n(due.data() + r * kDim, kDim,
                  dpe.data() + r * 2 * kDim + kDim);
    }
    if (bf16) {
      roundAll(ye);
      roundAll(dpe);
      EXPECT_EQ(b.readBf16(y, ye.size()), ye);
      EXPECT_EQ(b.readBf16(dpacked, dpe.size()), dpe);
    } else {
      expectSame(b.at<float>(y), ye, "swiglu of the views");
      expectSame(b.at<float>(dpacked), dpe, "the packed gradient");
    }
  }
}

// A region that runs op by op (a column sum reduces across rows) cannot
// take a row-strided operand: the host refuses it when it loads the plan.
TEST_F(FusedRegionTest, ARegionThatIsNotRowWiseRefusesRowStridedOperands) {
  RegionBuilder b;
  int packed = b.value("f32", {kRows, 2 * kDim});
  int part = b.view(packed, "f32", {kRows, kDim}, kDim, 2 * kDim);
  int sum = b.value("f32", {kDim});
  b.temporary(1, "f32", {kDim});
  b.op("column_sum", {0}, {1});
  Plan plan = b.build({part}, {sum}, {1});
  EXPECT_THROW(
      {
        try {
          FusedRegion region(plan, plan.steps.at(0), b.arena.data());
        } catch (const Error &error) {
          EXPECT_NE(std::string(error.what()).find("must run row by row"),
                    std::string::npos)
              << error.what();
          throw;
        }
      },
      Error);
}

// A split and a concat of the first dimension (a packed weight's gradient
// into the parameters' gradients, parameters into a packed weight, where
// tile-fold-views cannot place them): each part one run of the whole.
TEST_F(FusedRegionTest, SplitAndConcatOfTheFirstDimension) {
  RegionBuilder b;
  int whole = b.value("f32", {96, kDim});
  int a = b.value("f32", {64, kDim}), c = b.value("f32", {32, kDim});
  b.temporary(1, "f32", {64, kDim});
  b.temporary(2, "f32", {32, kDim});
  b.op("split", {0}, {1, 2});
  Plan split = b.build({whole}, {a, c}, {1, 2});
  auto values = randomVector<float>(96 * kDim);
  b.setF32(whole, values);
  EXPECT_FALSE(runRegion(split, b));
  std::vector<float> first(values.begin(), values.begin() + 64 * kDim),
      second(values.begin() + 64 * kDim, values.end());
  expectSame(b.at<float>(a), first, "the first part");
  expectSame(b.at<float>(c), second, "the second part");

  RegionBuilder b2;
  int p = b2.value("f32", {64, kDim}), q = b2.value("f32", {32, kDim});
  int packed = b2.value("f32", {96, kDim});
  b2.temporary(2, "f32", {96, kDim});
  b2.op("concat", {0, 1}, {2});
  Plan concat = b2.build({p, q}, {packed}, {2});
  b2.setF32(p, first);
  b2.setF32(q, second);
  EXPECT_FALSE(runRegion(concat, b2));
  expectSame(b2.at<float>(packed), values, "the packed whole");
}

TEST_F(FusedRegionTest, AWeightGradientRunsOpByOp) {
  RegionBuilder b;
  int dy = b.value("f32", {kRows, kDim}), x = b.value("f32", {kRows, kDim});
  int w = b.value("f32", {kDim});
  int dx = b.value("f32", {kRows, kDim}), dw = b.value("f32", {kDim});
  b.temporary(3, "f32", {kRows, kDim});
  b.temporary(4, "f32", {kDim});
  b.op("rms_norm_grad", {0, 1, 2}, {3}, json{{"epsilon", kEps}});
  b.op("rms_norm_weight_grad", {0, 1}, {4}, json{{"epsilon", kEps}});
  Plan plan = b.build({dy, x, w}, {dx, dw}, {3, 4});
  auto dyv = randomVector<float>(kRows * kDim),
       xv = randomVector<float>(kRows * kDim), wv = randomVector<float>(kDim);
  b.setF32(dy, dyv);
  b.setF32(x, xv);
  b.setF32(w, wv);
  EXPECT_FALSE(runRegion(plan, b));

  std::vector<float> dxe(dyv.size()), dwe(kDim);
  rmsNormGrad<float>(dyv.data(), xv.data(), wv.data(), dxe.data(), kRows, kDim,
                     kEps);
  rmsNormWeightGrad<float>(dyv.data(), xv.data(), dwe.data(), kRows, kDim,
                           kEps);
  expectSame(b.at<float>(dx), dxe, "dx");
  expectSame(b.at<float>(dw), dwe, "dw");
}

} // namespace
